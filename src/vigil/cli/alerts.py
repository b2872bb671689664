"""``vigil alerts``: read alerts from the embedded alert store."""
from __future__ import annotations

import datetime as _dt
import json
import time
from typing import Optional

import click

from vigil.alerts.alert import PRIORITIES, normalize_priority
from vigil.alerts.store import DEFAULT_STORE_PATH, AlertStore, StoreError, row_to_alert
from vigil.config.units import parse_duration


def parse_since(value: str, now_ns: Optional[int] = None) -> int:
    """ns since the epoch from a duration back from now (``10m``, ``1h``, ``2d``)
    or an ISO 8601 time (``2024-05-01``, ``2024-05-01T12:00:00Z``; naive = UTC)."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    try:
        return now_ns - int(parse_duration(value) * 1_000_000_000)
    except ValueError:
        pass
    s = value.strip()
    if s.endswith(("Z", "z")):
        s = s[:-1] + "+00:00"
    try:
        t = _dt.datetime.fromisoformat(s)
    except ValueError:
        raise ValueError(f"--since: {value!r} is neither a duration (10m, 1h, 2d) "
                         "nor an ISO time (2024-05-01T12:00:00Z)") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=_dt.timezone.utc)
    delta = t - _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)
    ns = (delta.days * 86400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000
    # SQLite integers are 64-bit: times past 2262 match nothing anyway
    return max(-(1 << 63), min(ns, (1 << 63) - 1))


def _short_time(ns: int) -> str:
    secs = ns // 1_000_000_000
    return _dt.datetime.fromtimestamp(secs, tz=_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _container(row: dict) -> str:
    cid = row.get("container_id") or ""
    name = row.get("container_name") or ""
    if cid in ("", "host"):
        return cid or "-"
    if name:
        return name
    return cid[:12]


def _table(rows: list) -> str:
    head = ("TIME (UTC)", "PRIORITY", "RULE", "CONTAINER", "OUTPUT")
    body = []
    for r in rows:
        out = r["output"].replace("\n", " ")
        if r["count"] > 1:
            out += f" (x{r['count']})"
        body.append((_short_time(r["time"]), r["priority"].capitalize(), r["rule"],
                     _container(r), out))
    widths = [len(h) for h in head[:-1]]
    for b in body:
        for i in range(len(widths)):
            widths[i] = max(widths[i], len(b[i]))
    widths = [min(w, 50) for w in widths]

    def fmt(cells):
        parts = []
        for i, w in enumerate(widths):
            c = cells[i]
            if len(c) > w:
                c = c[: w - 1] + "…"
            parts.append(c.ljust(w))
        return "  ".join(parts + [cells[-1]]).rstrip()

    return "\n".join([fmt(head)] + [fmt(b) for b in body])


@click.command("alerts")
@click.option("--store", "store_path", default=DEFAULT_STORE_PATH, show_default=True,
              metavar="PATH", help="Alert store (SQLite) to read.")
@click.option("--since", metavar="WHEN",
              help="Only alerts since a duration ago (30s, 10m, 1h, 2d) or an ISO time "
                   "(naive times are UTC).")
@click.option("--rule", metavar="NAME", help="Only alerts of this rule (exact name).")
@click.option("--priority", "min_priority", metavar="MIN",
              help=f"Only this priority or more severe ({', '.join(PRIORITIES)}).")
@click.option("--container", metavar="ID_OR_NAME",
              help="Only alerts from containers whose id starts with, or name is, this.")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(min=0),
              help="At most this many alerts (0: no limit).")
@click.option("--json", "as_json", is_flag=True,
              help="One Falco JSON alert per line instead of a table.")
def alerts(store_path, since, rule, min_priority, container, limit, as_json):
    """Show stored alerts, newest first."""
    since_ns = None
    if since:
        try:
            since_ns = parse_since(since)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
    if min_priority is not None and normalize_priority(min_priority) is None:
        raise click.UsageError(f"--priority: unknown priority {min_priority!r} "
                               f"(one of {', '.join(PRIORITIES)})")
    try:
        store = AlertStore(store_path, readonly=True)
    except StoreError as exc:
        raise click.ClickException(
            f"{exc}" + (" (is the agent running with the store enabled?)"
                        if "does not exist" in str(exc) else ""))
    try:
        rows = store.query(since_ns=since_ns, rule=rule, min_priority=min_priority,
                           container=container, limit=limit or None)
    except Exception as exc:
        raise click.ClickException(f"cannot read alert store {store_path}: {exc}")
    finally:
        store.close()
    if as_json:
        for r in rows:
            click.echo(json.dumps(row_to_alert(r).to_falco_json(), ensure_ascii=False,
                                  separators=(",", ":")))
        return
    if not rows:
        click.echo("no alerts", err=True)
        return
    click.echo(_table(rows))


