"""`vigil run`, `vigil capture`, `vigil replay`."""
from __future__ import annotations

import json
import signal
import sys

import click

from vigil.cli.common import (KERNEL_ERRORS, duration_option, exit_at_once, fail, install_signals,
                              kernel_problem, setup_logging, start_or_fail, verbose_option)
from vigil.config import ConfigError, load_config


def _overrides(rules, store, no_store, output, min_priority) -> dict:
    o: dict = {}
    if rules:
        o["rules"] = list(rules)
    if store:
        o["store"] = {"enabled": True, "path": store}
    if no_store:
        o["store"] = {"enabled": False}
    if output:
        o["outputs"] = {"stdout": {"enabled": True, "format": output}}
    if min_priority:
        o["min_priority"] = min_priority
    return o


def _load(config, overrides):
    try:
        return load_config(config, overrides)
    except ConfigError as e:
        fail(str(e), 1)


_common = [
    click.option("-c", "--config", type=click.Path(dir_okay=False), default=None,
                 help="Config file (default /etc/vigil/vigil.yaml if it exists)."),
    click.option("-r", "--rules", multiple=True, type=click.Path(),
                 help="Rules file or directory; repeatable; replaces the default ruleset."),
    click.option("--output", type=click.Choice(["text", "json"]), default=None,
                 help="Alert format on stdout (text = Falco's one-liner, json = Falco's schema)."),
    click.option("--min-priority", default=None, help="Drop rules below this priority."),
    verbose_option(),
]


def common(fn):
    for opt in reversed(_common):
        fn = opt(fn)
    return fn


@click.command("run")
@common
@click.option("--store", type=click.Path(dir_okay=False), default=None,
              help="SQLite alert store path (default /var/lib/vigil/alerts.db).")
@click.option("--no-store", is_flag=True, help="Do not keep alerts in the embedded store.")
@duration_option
@click.option("--capture", "capture_path", type=click.Path(dir_okay=False), default=None,
              help="Also record the event stream to this file (see `vigil replay`).")
def run(config, rules, output, min_priority, verbose, store, no_store, duration, capture_path):
    """Run the agent: watch the node, judge events with the rules, send alerts.

    Alerts go to the embedded store first, then to the configured outputs
    (stdout, file, syslog, webhook).  SIGHUP reloads the rules (the last good
    rules stay on error); Ctrl-C or SIGTERM stop cleanly."""
    setup_logging(verbose)
    cfg = _load(config, _overrides(rules, store, no_store, output, min_priority))
    from vigil.agent import Agent
    from vigil.rules.loader import RulesError

    writer = None
    agent = Agent(cfg)
    if capture_path:
        # the capture's header holds the process table, so the writer is made
        # once start() has seeded it from /proc (no event is handled before run())
        agent.extra_handlers.append(lambda ev: writer(ev))
    # before start(): a SIGHUP while the sensors load must not kill the agent
    # (default action), and a stop request is honoured as soon as run() starts
    install_signals(agent)
    signal.signal(signal.SIGHUP, lambda *_: agent.request_reload())
    try:
        agent.start()
        if capture_path:
            from vigil.events.capture import CaptureWriter
            writer = CaptureWriter(capture_path, agent.proctable)
    except OSError as e:
        agent.stop()
        fail(f"cannot write capture {capture_path}: {e.strerror or e}", 1)
    except RulesError as e:
        fail(f"rules: {e}", 1)
    except ConfigError as e:
        fail(str(e), 1)
    except KERNEL_ERRORS as e:
        fail(kernel_problem(e))
    kinds = sorted(k.label for k in agent.pipeline.kernel_kinds())
    click.echo(f"vigil: running with {len(agent.engine.rules)} rules; event kinds: "
               f"{','.join(kinds)}", err=True)
    try:
        agent.run(duration)
    finally:
        st = agent.stats()
        agent.stop()
        if writer is not None:
            writer.close()
    if verbose:
        click.echo(f"vigil: {json.dumps(st, default=str)}", err=True)
    exit_at_once(0)     # everything is closed: no teardown to wait for


@click.command("capture")
@click.option("-o", "--output-file", "out", required=True, type=click.Path(dir_okay=False),
              help="Capture file (.gz to compress).")
@click.option("--kinds", default="all",
              help="Comma-separated event kinds to record (exec,open,connect,...), or all.")
@duration_option
@click.option("--no-containers", is_flag=True, help="Do not resolve containers.")
@verbose_option()
def capture(out, kinds, duration, no_containers, verbose):
    """Record the raw event stream to a file for `vigil replay`."""
    setup_logging(verbose)
    from vigil.events.capture import CaptureWriter
    from vigil.events import KIND_BY_NAME
    from vigil.events.kinds import TRACE_GROUPS
    from vigil.pipeline import Pipeline

    if kinds == "all":
        ks = set(TRACE_GROUPS["all"])   # every kind but the cgroup bookkeeping
    else:
        try:
            ks = {KIND_BY_NAME[k.strip()] for k in kinds.split(",") if k.strip()}
        except KeyError as e:
            fail(f"unknown event kind {e.args[0]!r} (known: {', '.join(sorted(KIND_BY_NAME))})", 1)
    resolver = None
    if not no_containers:
        from vigil.state.containers.resolver import ContainerResolver
        resolver = ContainerResolver()
        resolver.seed()
    pipe = Pipeline(ks, containers=resolver, ignore_children=True)
    start_or_fail(pipe, [resolver.stop] if resolver is not None else [])
    writer = CaptureWriter(out, pipe.proctable)
    pipe.add_handler(writer)
    click.echo(f"vigil: capturing {','.join(sorted(k.label for k in ks))} to {out}", err=True)
    try:
        pipe.run(duration)
    finally:
        st = pipe.stats()
        pipe.stop()
        writer.close()
        if resolver is not None:
            resolver.stop()
    click.echo(f"vigil: captured {writer.count} events ({st.get('dropped', 0)} dropped in the kernel)",
               err=True)


@click.command("replay")
@click.argument("capture_file", type=click.Path(exists=True, dir_okay=False))
@common
@click.option("--store", type=click.Path(dir_okay=False), default=None,
              help="Also keep the alerts in this SQLite store.")
def replay(capture_file, config, rules, output, min_priority, verbose, store):
    """Run rules over a capture offline; prints the alerts the live agent would have
    (with the same rate limiting and folding, on the recorded events' clock)."""
    setup_logging(verbose)
    from vigil.alerts.outputs.registry import live_only_names
    overrides = _overrides(rules, store, not store, output, min_priority)
    # replayed alerts are old: they go to stdout (and --store), never to the
    # node's live outputs from vigil.yaml (file, syslog, webhook ...)
    overrides["outputs"] = {"stdout": {"enabled": True, "format": output or "text"},
                            **{name: {"enabled": False} for name in live_only_names()}}
    cfg = _load(config, overrides)
    from vigil.agent import replay as run_replay
    from vigil.events.capture import CaptureError
    from vigil.rules.loader import RulesError

    try:
        n = run_replay(cfg, capture_file)
    except RulesError as e:
        fail(f"rules: {e}", 1)
    except (ConfigError, CaptureError) as e:   # e.g. --store where it cannot be
        fail(str(e), 1)
    if verbose:
        click.echo(f"vigil: replayed {n} events", err=True)
    sys.stdout.flush()
