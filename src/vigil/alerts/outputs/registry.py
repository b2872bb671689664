"""The output types vigil knows, by the name of their section in ``outputs:``.

Each output module registers one :class:`OutputType`: its name, the keys of
its section with their defaults, a builder, and ``live_only``.  The builder
gets a :class:`vigil.config.Section` (so every mistake names its key) and
the stream stdout-like outputs write to.

``live_only`` is true for outputs that tell something outside the command
about alerts as they happen: the node's alert file, syslog, webhooks.  A
replay (``vigil replay``) produces old alerts and must not send them there
again, so it turns every live_only output off; it keeps stdout.

    stdout   live_only=False  what replay prints
    file     live_only=True   the node's alert log (collected by log shippers)
    syslog   live_only=True   the node's log
    webhook  live_only=True   falcosidekick & co. would page again
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, TextIO

REGISTRY: dict = {}


@dataclass(frozen=True)
class OutputType:
    name: str
    defaults: dict             # every key of the section (``enabled`` included)
    build: Callable            # build(section, stream) -> Output
    live_only: bool
    enabled_by_default: bool = False


def register(name: str, *, defaults: dict, live_only: bool, enabled_by_default: bool = False):
    """Decorator for an output's builder ``build(section, stream: TextIO | None)``."""
    def deco(build: Callable) -> Callable:
        REGISTRY[name] = OutputType(name, {"enabled": True, **defaults}, build, live_only,
                                    enabled_by_default)
        return build
    return deco


def output_types() -> dict:
    """name -> OutputType for every output, built-ins first in their order."""
    from vigil.alerts.outputs import stdout, file, syslog, webhook  # noqa: F401  (they register)
    return REGISTRY


def live_only_names() -> list:
    return [n for n, t in output_types().items() if t.live_only]


__all__ = ["OutputType", "REGISTRY", "register", "output_types", "live_only_names"]
