"""`vigil services`: the service map of the last interval, from a running agent.

It scrapes the agent's ``/metrics`` twice, ``--interval`` apart, and prints each
edge (client workload -> server workload, per protocol) with the requests of that
interval, their rate, the error ratio (HTTP 5xx, Redis/PostgreSQL errors,
connections closed before a response) and p50/p99 from the differences of the
``vigil_service_request_duration_seconds`` buckets (linear within a bucket, as
PromQL's ``histogram_quantile``).  As a table, Graphviz dot (``--dot``) or JSON.
"""
from __future__ import annotations

import json
import math
import time

import click

from vigil.cli.agent_client import base_url, get, metrics_url_option, samples
from vigil.cli.common import Duration
from vigil.l7.stats import quantile

REQUESTS = "vigil_service_requests"
DURATION = "vigil_service_request_duration_seconds"
EDGE = ("client_namespace", "client_workload", "server_namespace", "server_workload",
        "protocol")
ERROR_CLASSES = ("5xx", "error")


def snapshot(text: str) -> dict:
    """{"requests": {(edge, status_class): n}, "buckets": {edge: {le: n}}} of one scrape."""
    reqs, buckets = {}, {}
    for name, labels, v in samples(text, (REQUESTS, DURATION)):
        edge = tuple(labels.get(k, "") for k in EDGE)
        if name == REQUESTS + "_total":
            reqs[(edge, labels.get("status_class", ""))] = v
        elif name == DURATION + "_bucket":
            le = labels["le"]
            buckets.setdefault(edge, {})[math.inf if le == "+Inf" else float(le)] = v
    return {"requests": reqs, "buckets": buckets, "served": REQUESTS in text}


def _delta(now: float, before) -> float:
    if before is None or now < before:      # a new series, or the agent restarted
        return now
    return now - before


def edges(before: dict, after: dict, interval: float) -> list:
    """The edges with requests between the two snapshots, busiest first."""
    per: dict = {}
    for (edge, sc), v in after["requests"].items():
        d = _delta(v, before["requests"].get((edge, sc)))
        if d <= 0:
            continue
        e = per.setdefault(edge, {"requests": 0.0, "errors": 0.0, "by_status": {}})
        e["requests"] += d
        e["by_status"][sc] = d
        if sc in ERROR_CLASSES:
            e["errors"] += d
    out = []
    for edge, e in per.items():
        old = before["buckets"].get(edge, {})
        cum = [(le, _delta(v, old.get(le))) for le, v in after["buckets"].get(edge, {}).items()]
        p50, p99 = quantile(0.5, cum), quantile(0.99, cum)
        out.append({
            "client": _name(edge[0], edge[1]), "server": _name(edge[2], edge[3]),
            "client_namespace": edge[0], "client_workload": edge[1],
            "server_namespace": edge[2], "server_workload": edge[3], "protocol": edge[4],
            "requests": int(round(e["requests"])), "rate": e["requests"] / interval,
            "error_ratio": e["errors"] / e["requests"],
            "status": {k: int(round(v)) for k, v in sorted(e["by_status"].items())},
            "p50_seconds": None if math.isnan(p50) else p50,
            "p99_seconds": None if math.isnan(p99) else p99})
    out.sort(key=lambda r: (-r["requests"], r["client"], r["server"], r["protocol"]))
    return out


def _name(ns: str, wl: str) -> str:
    return f"{ns}/{wl}" if ns else wl


def fmt_seconds(s) -> str:
    if s is None:
        return "-"
    if s < 0.001:
        return f"{s * 1e6:.0f}µs"
    if s < 1:
        return f"{s * 1e3:.1f}ms"
    return f"{s:.2f}s"


def dot(rows: list, interval: float) -> str:
    """Graphviz: one node per workload, one edge per (client, server, protocol)."""
    def q(s):
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
    lines = ["digraph vigil_services {", "  rankdir=LR;", "  node [shape=box];",
             f"  label={q(f'vigil service map, last {interval:g}s')};"]
    for n in sorted({r["client"] for r in rows} | {r["server"] for r in rows}):
        lines.append(f"  {q(n)};")
    for r in rows:
        label = (f"{r['protocol']} {r['rate']:.1f}/s err {r['error_ratio'] * 100:.1f}% "
                 f"p50 {fmt_seconds(r['p50_seconds'])} p99 {fmt_seconds(r['p99_seconds'])}")
        color = ' color="red"' if r["error_ratio"] > 0 else ""
        lines.append(f"  {q(r['client'])} -> {q(r['server'])} [label={q(label)}{color}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def table(rows: list, interval: float):
    from rich.table import Table
    t = Table(title=f"service map, last {interval:g}s", title_justify="left")
    for col, just in (("CLIENT", "left"), ("SERVER", "left"), ("PROTO", "left"),
                      ("REQS", "right"), ("RATE/s", "right"), ("ERR%", "right"),
                      ("P50", "right"), ("P99", "right")):
        t.add_column(col, justify=just, no_wrap=True)
    for r in rows:
        t.add_row(r["client"], r["server"], r["protocol"], str(r["requests"]),
                  f"{r['rate']:.1f}", f"{r['error_ratio'] * 100:.1f}",
                  fmt_seconds(r["p50_seconds"]), fmt_seconds(r["p99_seconds"]))
    return t


@click.command("services")
@metrics_url_option
@click.option("--interval", type=Duration(maximum=3600), default="10s", show_default=True,
              help="Scrape twice this far apart (30, 10s, 1m).")
@click.option("--dot", "as_dot", is_flag=True, help="Graphviz dot (| dot -Tsvg > map.svg).")
@click.option("--json", "as_json", is_flag=True, help="One JSON document: the edges.")
def services(metrics_url, config, interval, as_dot, as_json):
    """The service map of the last interval: which workload calls which, how often,
    how many errors, how fast (p50/p99), from a running agent's /metrics.

    \b
    Each exchange counts once: the server's view when vigil sees the server on this
    node, else the client's (docs/SERVICES.md).  Workloads are namespace/owner for
    pods, the container name, host/<executable> for host processes, a /24 for
    addresses off this node."""
    if interval <= 0:
        raise click.BadParameter("must be more than 0", param_hint="--interval")
    base = base_url(metrics_url, config)
    first = snapshot(get(base, "/metrics").text)
    t0 = time.monotonic()
    click.echo(f"sampling {base}/metrics for {interval:g}s ...", err=True)
    time.sleep(interval)
    second = snapshot(get(base, "/metrics").text)
    took = time.monotonic() - t0
    rows = edges(first, second, took)
    if not second["served"]:
        click.echo(f"note: the agent at {base} serves no service map (L7 is off: "
                   "l7.protocols is [], or this agent predates it)", err=True)
    if as_json:
        click.echo(json.dumps({"interval_seconds": took, "edges": rows}, indent=2))
    elif as_dot:
        click.echo(dot(rows, interval), nl=False)
    else:
        from rich.console import Console
        c = Console(width=max(Console().width, 120))
        c.print(table(rows, interval))
        if not rows:
            c.print("no requests between workloads in the interval")


__all__ = ["services", "snapshot", "edges", "dot"]
