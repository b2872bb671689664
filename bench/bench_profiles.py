#!/usr/bin/env python3
"""Per-event cost of the behavioural profile check (vigil.profiles.manager).

A locked profile with 10, 1,000 and 50,000 learned entries (files spread over
directories so that nothing folds, egress peers, execs, listening ports); a
stream of real decoded-event objects of one container (opens, connects,
execs, listens of learned values, 1 % unlearned ones that alert once and are
then folded by the cooldown) goes through ProfileManager.on_event, the
handler the agent runs for every event.  Target: flat, < 5 us per event at 50k.

    .venv/bin/python bench/bench_profiles.py [--quick]

Writes bench/results/profiles.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

from vigil.config import DEFAULTS  # noqa: E402
from vigil.events import Event, Kind  # noqa: E402
from vigil.profiles.book import ProfileBook  # noqa: E402
from vigil.profiles.manager import ProfileManager  # noqa: E402
from vigil.profiles.observe import container_identity  # noqa: E402
from vigil.profiles.profile import Profile  # noqa: E402
from vigil.state.containers.model import ContainerInfo  # noqa: E402

SIZES = (10, 1000, 50000)


def container() -> ContainerInfo:
    return ContainerInfo(id="c" * 64, name="web-1", image="registry/web:1", namespace="web",
                         pod_name="web-1", k8s_container_name="app", owner_kind="Deployment",
                         owner_name="web", labels={"app": "web"}, start_time=time.time_ns())


def learned(n: int):
    """n entries: half files, a quarter egress peers, the rest execs and ports."""
    files = [f"/usr/lib/pkg{i // 10}/f{i % 10}.so" for i in range(n // 2)]
    egress = [(f"10.{i // 65000 % 250}.{i // 250 % 250}.{i % 250}", 443 + i % 7, "TCP")
              for i in range(n // 4)]
    rest = n - len(files) - len(egress)
    execs = [f"/usr/bin/tool{i}" for i in range(max(1, rest // 2))]
    listen = [(1000 + i, "TCP") for i in range(max(1, rest - len(execs)))]
    return files, egress, execs, listen


def events(c, files, egress, execs, listen, count: int, rng) -> list:
    out = []
    for i in range(count):
        r = rng.random()
        miss = rng.random() < 0.01
        if r < 0.5:
            path = f"/etc/unlearned{i % 50}" if miss else rng.choice(files)
            ev = Event(Kind.OPEN, path=path, ret=3, flags=0, syscall="openat")
        elif r < 0.8:
            a, p, _ = ("192.0.2.1", 9999, "TCP") if miss else rng.choice(egress)
            ev = Event(Kind.CONNECT, family="AF_INET", proto="tcp", daddr=a, dport=p, ret=0,
                       syscall="connect")
        elif r < 0.95:
            exe = "/tmp/dropper" if miss else rng.choice(execs)
            ev = Event(Kind.EXEC, exe=exe, args=[exe, "-v", "/data/x"])
        else:
            port = 31337 if miss else rng.choice(listen)[0]
            ev = Event(Kind.LISTEN, family="AF_INET", proto="tcp", sport=port, ret=0,
                       syscall="listen")
        ev.time, ev.pid, ev.comm = time.time_ns(), 100 + i % 50, "web"
        ev.container = c
        out.append(ev)
    return out


def measure(n: int, count: int, rounds: int, rng) -> dict:
    tmp = tempfile.mkdtemp(prefix="vigil-bench-prof-")
    settings = dict(DEFAULTS["profiles"], max_entries=10 ** 6, flush_interval=3600.0)
    book = ProfileBook(os.path.join(tmp, "p.db"))
    alerts = []
    mgr = ProfileManager(settings, book, alerts.append)
    c = container()
    ident = container_identity(c)
    p = Profile(ident.key, ident.kind, namespace="web", container="app", now_ns=time.time_ns())
    p.set_roots(settings["file_prefixes"])
    files, egress, execs, listen = learned(n)
    p.files.update(files)
    p.egress.update(egress)
    p.execs.update({e: {"-v <path>"} for e in execs})
    p.listen.update(listen)
    p.rebuild_index()
    p.lock(time.time_ns(), "bench")
    mgr.profiles[ident.key] = p
    evs = events(c, files, egress, execs, listen, count, rng)
    for ev in evs:           # warm-up: caches, first alerts
        mgr.on_event(ev)
    per = []
    for _ in range(rounds):
        t = time.perf_counter_ns()
        for ev in evs:
            mgr.on_event(ev)
        per.append((time.perf_counter_ns() - t) / len(evs))
    book.close()
    return {"entries": p.entries(), "events": count, "rounds": rounds,
            "ns_per_event_median": round(statistics.median(per)),
            "ns_per_event_min": round(min(per)), "ns_per_event_max": round(max(per)),
            "alerts": len(alerts)}


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    count, rounds = (20000, 3) if args.quick else (100000, 7)
    rng = random.Random(15)
    res = [measure(n, count, rounds, rng) for n in SIZES]
    meta = C.machine()
    data = {"meta": meta, "command": C.command_line(), "results": res}
    C.RESULTS.mkdir(exist_ok=True)
    (C.RESULTS / "profiles.json").write_text(json.dumps(data, indent=1))
    md = ["# Behavioural profile check, per event\n\n",
          f"Command: `{C.command_line()}`; {count:,} events per round (50 % opens, 30 % "
          "connects, 15 % execs, 5 % listens; 1 % unlearned: alert once, then folded), "
          f"{rounds} rounds, one core of {meta['cores']} ({meta['cpu']}), Python "
          f"{meta['python']}, {meta['date']}.\n\n",
          "| learned entries | ns per event (median) | min | max | alerts |\n",
          "| ---: | ---: | ---: | ---: | ---: |\n"]
    for r in res:
        md.append(f"| {r['entries']:,} | {r['ns_per_event_median']:,} | "
                  f"{r['ns_per_event_min']:,} | {r['ns_per_event_max']:,} | {r['alerts']} |\n")
    md.append("\nThe cost is one identity lookup per container, one dict lookup for the profile "
              "and one set lookup per value (a file: one per path component), so it does not "
              "grow with the profile.\n")
    (C.RESULTS / "profiles.md").write_text("".join(md))
    print("".join(md))


if __name__ == "__main__":
    main()
