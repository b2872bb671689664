"""`vigil run`, `vigil capture`, `vigil replay`."""
from __future__ import annotations

import json
import signal
import sys
import time

import click

from vigil.cli.common import (KERNEL_ERRORS, duration_option, exit_at_once, fail, install_signals,
                              kernel_problem, setup_logging, start_or_fail, verbose_option)
from vigil.config import ConfigError, load_config


def _overrides(rules, store, no_store, output, min_priority, policies=(), persist=False,
               metrics=None) -> dict:
    o: dict = {}
    if metrics is not None:
        o["metrics"] = {"address": metrics}
    if policies:
        o["policies"] = list(policies)
    if persist:
        o["enforce"] = {"persist": True}
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


def _load(config, overrides, settings=()):
    try:
        return load_config(config, overrides, settings)
    except ConfigError as e:
        fail(str(e), 1)


def _selection(disable_tags, only_tags, disable_names):
    from vigil.rules.selection import RuleSelection
    try:
        return RuleSelection(tuple(disable_tags), tuple(only_tags), tuple(disable_names))
    except ValueError as e:
        raise click.UsageError(str(e)) from None


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _counts(d: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(d.items(), key=lambda kv: (-kv[1], kv[0])))


def exit_summary(agent, st: dict, elapsed: float) -> list:
    """The lines `vigil run` ends with (as Falco's "Events detected" summary):
    events, kernel drops and alerts, then the alerts by priority and by rule."""
    pipe = st.get("pipeline", {})
    counts = agent.alert_counts()
    n = sum(counts.values())
    lines = [f"stopped after {elapsed:.1f}s: {_plural(pipe.get('events', 0), 'event')}, "
             f"{pipe.get('dropped', 0)} dropped in the kernel, {_plural(n, 'alert')}"]
    if n:
        prio: dict = {}
        rules: dict = {}
        for (name, p), c in counts.items():
            prio[p] = prio.get(p, 0) + c
            rules[name] = rules.get(name, 0) + c
        lines.append(f"alerts by priority: {_counts(prio)}")
        lines.append(f"alerts by rule: {_counts(rules)}")
    en = st.get("enforce") or {}
    if en.get("rule_kills") or en.get("rule_kills_missed") or en.get("rule_kills_skipped"):
        lines.append(f"rule kills: {en['rule_kills']} (delay median "
                     f"{en['rule_kill_delay_ms_median']} ms, max {en['rule_kill_delay_ms_max']} ms), "
                     f"{en['rule_kills_missed']} gone before the kill, "
                     f"{en['rule_kills_skipped']} protected")
    return lines


_common = [
    click.option("-c", "--config", type=click.Path(dir_okay=False), default=None,
                 help="Config file (default /etc/vigil/vigil.yaml if it exists)."),
    click.option("-r", "--rules", multiple=True, type=click.Path(),
                 help="Rules file or directory; repeatable; replaces the default ruleset."),
    click.option("--output", type=click.Choice(["text", "json"]), default=None,
                 help="Alert format on stdout (text = Falco's one-liner, json = Falco's schema)."),
    click.option("--min-priority", default=None, help="Drop rules below this priority."),
    click.option("-o", "settings", multiple=True, metavar="KEY=VALUE",
                 help="Set any vigil.yaml key (dotted: outputs.webhook.url=URL; the value "
                      "is YAML: rules=[a.yaml,b.yaml]). Repeatable."),
    click.option("-T", "disable_tags", multiple=True, metavar="TAG",
                 help="Turn off the rules with this tag. Repeatable."),
    click.option("-t", "only_tags", multiple=True, metavar="TAG",
                 help="Run only the rules with this tag (not with -T/-D). Repeatable."),
    click.option("-D", "disable_names", multiple=True, metavar="PATTERN",
                 help="Turn off the rules whose name contains PATTERN (or matches it, "
                      "with * ? [...]). Repeatable."),
    verbose_option(),
]


def common(fn):
    for opt in reversed(_common):
        fn = opt(fn)
    return fn


@click.command("run")
@common
@click.option("--store", type=click.Path(dir_okay=False), default=None,
              help="SQLite alert store path (default /var/lib/vigil/alerts.db; made 0600).")
@click.option("--no-store", is_flag=True,
              help="Do not keep alerts in the embedded store: outputs then get alerts from "
                   "memory only (an alert a receiver misses while down is lost).")
@duration_option
@click.option("--capture", "capture_path", type=click.Path(dir_okay=False), default=None,
              help="Also record the event stream to this file (see `vigil replay`; made 0600).")
@click.option("--dry-run", is_flag=True,
              help="Load the configuration and the rules, check the sensors are built, "
                   "then exit (0: all good, 1: errors) without watching anything.")
@click.option("-p", "--policy", "policies", multiple=True, type=click.Path(),
              help="NetworkPolicy / VigilPolicy file or directory to enforce; repeatable "
                   "(replaces `policies:` of vigil.yaml).")
@click.option("--persist", is_flag=True,
              help="Keep enforcing after vigil exits (pinned in /sys/fs/bpf/vigil; "
                   "`vigil policy remove --all` clears it).")
@click.option("--metrics", "metrics", default=None, metavar="ADDR",
              help="Serve Prometheus /metrics, /healthz and /readyz on HOST:PORT "
                   "(default metrics.address, 127.0.0.1:9476; \"\" turns them off).")
def run(config, rules, output, min_priority, settings, disable_tags, only_tags, disable_names,
        verbose, store, no_store, duration, capture_path, dry_run, policies, persist, metrics):
    """Run the agent: watch the node, judge events with the rules, send alerts.

    Alerts go to the embedded store first; file, syslog and webhook deliver
    from it (each with its own cursor: nothing is lost while a receiver is
    down or the agent restarts), stdout at once.  SIGHUP reloads the rules
    (the last good rules stay on error); Ctrl-C or SIGTERM stop cleanly and
    print a summary
    (events, kernel drops, alerts by priority and rule)."""
    setup_logging(verbose)
    selection = _selection(disable_tags, only_tags, disable_names)
    overrides = _overrides(rules, store, no_store, output, min_priority, policies, persist,
                          metrics)
    cfg = _load(config, overrides, settings)
    from vigil.agent import Agent
    from vigil.rules.loader import RulesError

    if dry_run:
        _dry_run(cfg, selection)
        return
    from vigil.events.capture import CaptureError, CaptureWriter
    writer = None
    if capture_path:
        # made before the sensors load (a path that cannot be is said at once);
        # its header holds the process table, written once start() has seeded
        # it from /proc (no event is handled before run())
        try:
            writer = CaptureWriter(capture_path)
        except CaptureError as e:
            fail(str(e), 1)
    agent = Agent(cfg, selection=selection, notify=lambda m: click.echo(f"vigil: {m}", err=True),
                  config_loader=lambda: load_config(cfg.path or None, overrides, settings))
    if writer is not None:
        agent.extra_handlers.append(writer)
    # before start(): a SIGHUP while the sensors load must not kill the agent
    # (default action), and a stop request is honoured as soon as run() starts
    install_signals(agent)
    signal.signal(signal.SIGHUP, lambda *_: agent.request_reload())
    try:
        agent.start()
        if writer is not None:
            writer.begin(agent.proctable)
    except RulesError as e:
        _close(writer)
        fail(f"rules: {e}", 1)
    except ConfigError as e:
        _close(writer)
        fail(str(e), 1)
    except KERNEL_ERRORS as e:
        _close(writer)
        fail(kernel_problem(e, cfg))
    except OSError as e:
        agent.stop()
        _close(writer)
        fail(f"{getattr(e, 'filename', None) or 'start'}: {e.strerror or e}", 1)
    from vigil import __version__
    click.echo(f"vigil {__version__}: config {cfg.path or '(defaults)'}; rules from "
               f"{', '.join(agent.rules_files)}", err=True)
    kinds = sorted(k.label for k in agent.pipeline.kernel_kinds())
    off = len(agent.engine.rules) - len(agent.engine.enabled_rules())
    click.echo(f"vigil: running with {len(agent.engine.rules)} rules; event kinds: "
               f"{','.join(kinds)}" + (f" ({off} rules turned off)" if off else ""), err=True)
    if agent.enforcer is not None:
        click.echo(f"vigil: enforcing {len(agent.enforcer.policies)} policies", err=True)
    if agent.metrics is not None and agent.metrics.address:
        click.echo(f"vigil: metrics on http://{agent.metrics.address}/metrics", err=True)
    started = time.monotonic()
    try:
        agent.run(duration)
    finally:
        st = agent.stats()
        agent.stop()
        _close(writer)
    for line in exit_summary(agent, st, time.monotonic() - started):
        click.echo(f"vigil: {line}", err=True)
    if verbose:
        click.echo(f"vigil: {json.dumps(st, default=str)}", err=True)
    exit_at_once(0)     # everything is closed: no teardown to wait for


def _dry_run(cfg, selection) -> None:
    """`vigil run --dry-run`: what would run, or every error, then exit."""
    from vigil.agent import dry_run
    from vigil.rules.loader import RulesError
    try:
        r = dry_run(cfg, selection)
    except RulesError as e:
        for err in e.errors:
            click.echo(f"vigil: error: rules: {err}", err=True)
        sys.exit(1)
    except ConfigError as e:
        fail(str(e), 1)
    click.echo(f"vigil: dry run: config {cfg.path or '(defaults)'} ok; "
               f"{_plural(r['rules'], 'rule')} ({r['enabled']} enabled) from "
               f"{', '.join(r['files'])}; event kinds: {','.join(r['kinds']) or '-'}", err=True)
    if r["missing_sensors"]:
        fail(f"BPF objects missing in {r['bpf_dir']}: "
             f"{', '.join(s + '.bpf.o' for s in r['missing_sensors'])} (build them with "
             "`make bpf`)", 1)


def _close(writer) -> None:
    if writer is not None:
        writer.close()


@click.command("capture")
@click.option("-o", "--output-file", "out", required=True, type=click.Path(dir_okay=False),
              help="Capture file (.gz to compress; made 0600, never through a symlink).")
@click.option("--kinds", default="all",
              help="Comma-separated event kinds to record (exec,open,connect,...), or all.")
@duration_option
@click.option("--no-containers", is_flag=True, help="Do not resolve containers.")
@verbose_option()
def capture(out, kinds, duration, no_containers, verbose):
    """Record the raw event stream to a file for `vigil replay`."""
    setup_logging(verbose)
    from vigil.events.capture import CaptureError, CaptureWriter
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
    try:
        writer = CaptureWriter(out)        # before the sensors: a bad path is said at once
    except CaptureError as e:
        if resolver is not None:
            resolver.stop()
        fail(str(e), 1)
    pipe = Pipeline(ks, containers=resolver, ignore_children=True)
    start_or_fail(pipe, [writer.close] + ([resolver.stop] if resolver is not None else []))
    writer.begin(pipe.proctable)
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
def replay(capture_file, config, rules, output, min_priority, settings, disable_tags, only_tags,
           disable_names, verbose, store):
    """Run rules over a capture offline; prints the alerts the live agent would have
    (with the same rate limiting and folding, on the recorded events' clock)."""
    setup_logging(verbose)
    selection = _selection(disable_tags, only_tags, disable_names)
    from vigil.alerts.outputs.registry import live_only_names
    overrides = _overrides(rules, store, not store, output, min_priority)
    # replayed alerts are old: they go to stdout (and --store), never to the
    # node's live outputs from vigil.yaml (file, syslog, webhook ...)
    overrides["outputs"] = {"stdout": {"enabled": True, "format": output or "text"},
                            **{name: {"enabled": False} for name in live_only_names()}}
    cfg = _load(config, overrides, settings)
    from vigil.agent import replay as run_replay
    from vigil.events.capture import CaptureError
    from vigil.rules.loader import RulesError

    try:
        n = run_replay(cfg, capture_file, selection=selection)
    except RulesError as e:
        fail(f"rules: {e}", 1)
    except (ConfigError, CaptureError) as e:   # e.g. --store where it cannot be
        fail(str(e), 1)
    if verbose:
        click.echo(f"vigil: replayed {n} events", err=True)
    sys.stdout.flush()
