"""The `vigil` command line."""
from __future__ import annotations

import click

from vigil import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vigil")
def main() -> None:
    """vigil: eBPF runtime security and observability agent for Kubernetes nodes.

    \b
    The data path: kernel sensors (vigil/kernel) -> events (vigil/events)
    -> process and container state (vigil/state) -> rules (vigil/rules)
    -> alerts: store first, then outputs (vigil/alerts).
    docs/ARCHITECTURE.md says where each part lives."""


# --- subcommands (each lives in the module that owns the feature) ---
from vigil.cli.alerts import alerts as _alerts; main.add_command(_alerts)  # noqa: E402,E702
from vigil.cli.rules import rules as _rules; main.add_command(_rules)  # noqa: E402,E702
from vigil.cli.fields import fields as _fields; main.add_command(_fields)  # noqa: E402,E702
from vigil.cli.trace import trace as _trace; main.add_command(_trace)  # noqa: E402,E702
from vigil.cli.policy import policy as _policy; main.add_command(_policy)  # noqa: E402,E702
from vigil.cli.doctor import doctor as _doctor; main.add_command(_doctor)  # noqa: E402,E702
from vigil.cli.profiles import profiles as _profiles; main.add_command(_profiles)  # noqa: E402,E702
from vigil.cli.agent import run as _run, capture as _capture, replay as _replay  # noqa: E402
main.add_command(_run)
main.add_command(_capture)
main.add_command(_replay)
from vigil.cli.services import services as _services; main.add_command(_services)  # noqa: E402,E702
from vigil.cli.top import top as _top; main.add_command(_top)  # noqa: E402,E702
