"""`vigil top`: processes (or containers) by CPU, syscalls, connections, bytes and
their L7 traffic, refreshed every ``--interval`` (rich Live; keys sort, group and
quit).  The numbers' sources: vigil.cli.top_data."""
from __future__ import annotations

import json
import math
import os
import select
import sys
import termios
import time
import tty

import click

from vigil.cli.agent_client import base_url, metrics_url_option
from vigil.cli.common import Duration
from vigil.cli.services import fmt_seconds
from vigil.cli.top_data import SORT_KEYS, Sampler, sort_rows

# key -> sort column (the column headers show them)
KEYS = {"c": "cpu", "s": "syscalls", "n": "conns", "b": "bytes", "r": "rate", "e": "errors",
        "5": "p50", "9": "p99", "p": "pid", "m": "name"}
HELP = ("sort: c cpu  s syscalls  n conns  b bytes  r req/s  e err%  5 p50  9 p99  p pid  "
        "m name   g processes/containers   q quit")


def _bytes(v: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if v < 1024 or unit == "GiB":
            return f"{v:.0f}{unit}" if unit == "B" else f"{v:.1f}{unit}"
        v /= 1024
    return f"{v:.1f}GiB"


def _lat(v: float) -> str:
    return "-" if math.isnan(v) else fmt_seconds(v)


def render(rows: list, sort: str, by: str, sampler: Sampler, namespace, limit: int):
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text
    agent = ("agent " + (sampler.base or "-") +
             ("" if sampler.agent_ok else " " + sampler.agent_note))
    scope = f"namespace {namespace}" if namespace is not None else "all namespaces"
    kind = "processes" if by == "process" else "containers"
    head = Text(f"vigil top: {len(rows)} {kind}, {scope}, sorted by {sort}", style="bold")
    t = Table(expand=False, pad_edge=False, box=None, header_style="bold reverse")
    cols = ([("PID", "right")] if by == "process" else [("PROCS", "right")]) + [
        ("NAME", "left"), ("NAMESPACE", "left"), ("CONTAINER", "left"), ("CPU%", "right"),
        ("SYSC/s", "right"), ("CONNS", "right"), ("BYTES/s", "right"), ("HTTP/s", "right"),
        ("ERR%", "right"), ("P50", "right"), ("P99", "right")]
    for name, just in cols:
        t.add_column(name, justify=just, no_wrap=True, overflow="ellipsis",
                     max_width=28 if name in ("NAME", "CONTAINER") else None)
    for r in sort_rows(rows, sort)[:limit]:
        first = str(r.pid) if by == "process" else str(r.procs)
        t.add_row(first, r.name, r.namespace or "-", r.container or "-", f"{r.cpu:.1f}",
                  f"{r.syscalls:.0f}", str(r.conns), _bytes(r.bytes),
                  f"{r.rate:.1f}" if r.rate or r._reqs else "-",
                  f"{r.errors * 100:.1f}" if r._reqs else "-", _lat(r.p50), _lat(r.p99))
    return Group(head, Text(agent), t, Text(HELP, style="dim"))


def as_json(rows: list, sort: str) -> str:
    out = []
    for r in sort_rows(rows, sort):
        out.append({"pid": r.pid, "name": r.name, "namespace": r.namespace, "pod": r.pod,
                    "container": r.container, "processes": r.procs,
                    "cpu_percent": round(r.cpu, 2), "syscalls_per_second": round(r.syscalls, 1),
                    "connections": r.conns, "bytes_per_second": round(r.bytes, 1),
                    "http_requests_per_second": round(r.rate, 3),
                    "http_requests": int(r._reqs), "http_errors": int(r._errs),
                    "http_error_ratio": r.errors,
                    "http_p50_seconds": None if math.isnan(r.p50) else r.p50,
                    "http_p99_seconds": None if math.isnan(r.p99) else r.p99})
    return json.dumps(out, indent=1)


class _Keys:
    """Single keys from a terminal stdin (cbreak mode), restored on exit."""

    def __init__(self):
        self.fd = sys.stdin.fileno() if sys.stdin.isatty() else None
        self.old = None

    def __enter__(self):
        if self.fd is not None:
            self.old = termios.tcgetattr(self.fd)
            tty.setcbreak(self.fd)
        return self

    def __exit__(self, *exc):
        if self.old is not None:
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self.old)

    def wait(self, timeout: float) -> list:
        """Keys pressed within timeout (returns at the first one)."""
        if self.fd is None:
            time.sleep(max(timeout, 0))
            return []
        ready, _, _ = select.select([self.fd], [], [], max(timeout, 0))
        return list(os.read(self.fd, 32).decode(errors="ignore")) if ready else []


@click.command("top")
@metrics_url_option
@click.option("--sort", type=click.Choice(sorted(SORT_KEYS)), default="cpu", show_default=True,
              help="Column to sort by (largest first; name and pid ascending).")
@click.option("--namespace", default=None, metavar="NS",
              help="Only pods of this Kubernetes namespace (its processes and containers).")
@click.option("--containers", "by_container", is_flag=True,
              help="One row per container (host processes together) instead of per process.")
@click.option("--interval", type=Duration(maximum=3600), default="1s", show_default=True,
              help="Refresh every (1s, 500ms, 2s).")
@click.option("--once", is_flag=True, help="Print one table (two samples --interval apart), exit.")
@click.option("--json", "json_out", is_flag=True, help="With --once: the rows as JSON.")
@click.option("-n", "--limit", type=click.IntRange(1), default=None,
              help="At most this many rows (default: what the terminal shows).")
def top(metrics_url, config, sort, namespace, by_container, interval, once, json_out, limit):
    """A live view of this node's processes (or containers) by CPU, syscalls, TCP
    connections, bytes, HTTP request rate, error ratio and latency p50/p99.

    \b
    CPU, syscalls (read/write family), bytes (read+written) and connections come
    from /proc; the HTTP columns, and the namespace, pod and container names, from
    the running agent (its /l7/processes on --metrics-url): without an agent those
    are empty and containers show their short ids.  Keys: c s n b r e 5 9 p m sort
    by a column, g switches processes/containers, q quits."""
    if interval <= 0:
        raise click.BadParameter("must be more than 0", param_hint="--interval")
    if json_out and not once:
        raise click.BadParameter("--json goes with --once", param_hint="--json")
    sampler = Sampler(base_url(metrics_url, config))
    by = "container" if by_container else "process"
    sampler.sample()
    if once:
        time.sleep(interval)
        sampler.sample()
        rows = sampler.rows(by, namespace)
        if json_out:
            click.echo(as_json(rows, sort))
        else:
            from rich.console import Console
            Console(width=max(Console().width, 140)).print(
                render(rows, sort, by, sampler, namespace, limit or len(rows) or 1))
        return
    try:
        _live(sampler, sort, by, namespace, interval, limit)
    except KeyboardInterrupt:
        pass


def _live(sampler, sort, by, namespace, interval, limit) -> None:
    from rich.console import Console
    from rich.live import Live
    console = Console()
    with _Keys() as keys, Live(console=console, screen=True, auto_refresh=False) as live:
        next_at = time.monotonic() + interval
        rows: list = []
        live.update(render(rows, sort, by, sampler, namespace, 1), refresh=True)
        while True:
            for k in keys.wait(next_at - time.monotonic()):
                if k in ("q", "Q", "\x03"):
                    return
                if k in KEYS:
                    sort = KEYS[k]
                elif k == "g":
                    by = "process" if by == "container" else "container"
                rows = sampler.rows(by, namespace)
                live.update(render(rows, sort, by, sampler, namespace,
                                   limit or max(console.height - 5, 1)), refresh=True)
            if time.monotonic() >= next_at:
                sampler.sample()
                rows = sampler.rows(by, namespace)
                next_at = time.monotonic() + interval
                live.update(render(rows, sort, by, sampler, namespace,
                                   limit or max(console.height - 5, 1)), refresh=True)


__all__ = ["top"]
