#!/usr/bin/env python3
"""Floods: what the per-process budget costs and what it buys.

    .venv/bin/python bench/bench_flood.py [--quick]

1. BPF time per open (enter + exit programs, ``kernel.bpf_stats_enabled=1``,
   run_time_ns / run_cnt of vigil's own programs from /proc/self/fdinfo) for
   an open the filter sends up: no budget, a budget that never cuts in, a
   budget that holds every event back; and for a failed open the result
   filter drops.
2. Events/s the pipeline reads (decode + process table, and with the default
   rules evaluated) from one process opening as fast as it can, no budget:
   how many processes at the default budget it takes to reach it.
3. One process flooding and another opening 1000 times a second, with and
   without the default budget: what the flooder lost, how many of the other
   process's events arrived.

Writes bench/results/flood.json and flood.md.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

from vigil.config import DEFAULTS  # noqa: E402
from vigil.events import Kind  # noqa: E402

BUDGET = (DEFAULTS["sensors"]["budget"]["rate"], DEFAULTS["sensors"]["budget"]["burst"])


def prog_stats() -> tuple:
    """(run_time_ns, run_cnt) summed over this process's BPF programs."""
    t = n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") != "anon_inode:bpf-prog":
                continue
            info = Path(f"/proc/self/fdinfo/{fd}").read_text()
        except OSError:
            continue
        vals = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
        t += int(vals.get("run_time_ns", "0"))
        n += int(vals.get("run_cnt", "0"))
    return t, n


def loadgen(seconds: float, rate: int, path: str) -> subprocess.Popen:
    return subprocess.Popen([C.loadgen(), "open", str(seconds), str(rate), path],
                            stdout=subprocess.PIPE, text=True)


def pipeline(tmp: str, **kw):
    from vigil.kernel.filters import KernelFilters
    from vigil.pipeline import Pipeline
    kw.setdefault("open_prefixes", [tmp])
    return Pipeline(KernelFilters({Kind.OPEN}, **kw), seed=False).start()


def drain_while(p, proc) -> None:
    while proc.poll() is None:
        p.ring.poll(p.on_raw_hi, p.on_raw, 0.05, limit=4096, at=True)
    p.drain(settle=0.1)


def bpf_cost(tmp: str, seconds: float) -> list:
    target = os.path.join(tmp, "hit")
    Path(target).write_text("x")
    rows = []
    cases = [("sent, no budget", target, {}),
             ("sent, budget that never cuts in", target, {"budget": (10_000_000, 10_000_000)}),
             ("held back by the budget", target, {"budget": (1, 1)}),
             ("failed open, result filter drops it", os.path.join(tmp, "missing"),
              {"ok_only": {Kind.OPEN}})]
    old = Path("/proc/sys/kernel/bpf_stats_enabled").read_text().strip()
    Path("/proc/sys/kernel/bpf_stats_enabled").write_text("1")
    try:
        for name, path, kw in cases:
            p = pipeline(tmp, **kw)
            p.add_handler(lambda ev: None)
            try:
                t0, n0 = prog_stats()
                lg = loadgen(seconds, 0, path)
                drain_while(p, lg)
                ops = C.parse_loadgen(lg.stdout.read())[0]
                t1, n1 = prog_stats()
            finally:
                p.stop()
            runs = (n1 - n0) / 2            # an open runs the enter and the exit program
            rows.append({"case": name, "opens": ops, "ns_per_open": round((t1 - t0) / max(runs, 1))})
    finally:
        Path("/proc/sys/kernel/bpf_stats_enabled").write_text(old)
    return rows


def throughput(tmp: str, seconds: float) -> list:
    from vigil.config import expand_rules_paths
    from vigil.rules import default_rules_files
    from vigil.rules.engine import RuleEngine
    target = os.path.join(tmp, "hit")
    Path(target).write_text("x")
    rows = []
    for name, rules in (("decode + process table", False), ("+ default rules", True)):
        p = pipeline(tmp, ringbuf_size=64 << 20)
        if rules:
            eng = RuleEngine(proctable=p.proctable)
            eng.load(expand_rules_paths(default_rules_files()))
            p.add_handler(eng.evaluate)
        try:
            lg = loadgen(seconds, 0, target)
            t0 = time.monotonic()
            e0 = p.events
            drain_while(p, lg)
            took = time.monotonic() - t0
            ops = C.parse_loadgen(lg.stdout.read())[0]
            st = p.stats()
        finally:
            p.stop()
        rows.append({"case": name, "opens": ops, "events_read": p.events - e0,
                     "events_per_s": round((p.events - e0) / took), "dropped": st["dropped"]})
    return rows


def fairness(tmp: str, seconds: float) -> list:
    flood, quiet = os.path.join(tmp, "flood"), os.path.join(tmp, "quiet")
    for f in (flood, quiet):
        Path(f).write_text("x")
    rows = []
    for name, budget in (("no budget", (0, 0)), (f"budget {BUDGET[0]}/s, burst {BUDGET[1]}", BUDGET)):
        p = pipeline(tmp, budget=budget, ringbuf_size=1 << 20)
        seen = {flood: 0, quiet: 0}

        def count(ev, seen=seen):
            if ev.path in seen:
                seen[ev.path] += 1
        p.add_handler(count)
        try:
            a = loadgen(seconds, 0, flood)
            b = loadgen(seconds, 1000, quiet)
            while a.poll() is None or b.poll() is None:
                p.ring.poll(p.on_raw_hi, p.on_raw, 0.05, limit=4096, at=True)
            p.drain(settle=0.1)
            fops = C.parse_loadgen(a.stdout.read())[0]
            qops = C.parse_loadgen(b.stdout.read())[0]
            k = p.kernel_stats().get("open", {})
        finally:
            p.stop()
        rows.append({"case": name, "flood_opens": fops, "flood_delivered": seen[flood],
                     "flood_over_budget": k.get("over_budget", 0), "ring_full_drops": k.get("dropped", 0),
                     "other_opens": qops, "other_delivered": seen[quiet],
                     "other_delivered_pct": round(100 * seen[quiet] / max(qops, 1), 1)})
    return rows


def report(data: dict) -> str:
    out = ["# Floods: budget, high-priority ring, result filter\n\n",
           f"Command: `{data['command']}`  \nMachine: {data['machine']['cores']} cores, kernel "
           f"{data['machine']['kernel']}, load average at start "
           f"{' '.join(data['machine']['loadavg_at_start'])} (shared machine).\n\n",
           "## BPF time per open (enter + exit)\n\n",
           C.md_table(["case", "opens", "ns per open"],
                      [(r["case"], r["opens"], r["ns_per_open"]) for r in data["bpf"]]),
           "\n## Events/s the pipeline reads from one flooding process (no budget)\n\n",
           C.md_table(["pipeline", "opens", "events read", "events/s", "dropped"],
                      [(r["case"], r["opens"], r["events_read"], r["events_per_s"], r["dropped"])
                       for r in data["throughput"]]),
           f"\nDefault budget: {BUDGET[0]} events/s per process, burst {BUDGET[1]}.\n",
           "\n## One process floods, another opens 1000/s (1 MiB bulk ring)\n\n",
           C.md_table(["", "flooder opens", "delivered", "over budget", "ring-full drops",
                       "other opens", "other delivered", "%"],
                      [(r["case"], r["flood_opens"], r["flood_delivered"], r["flood_over_budget"],
                        r["ring_full_drops"], r["other_opens"], r["other_delivered"],
                        r["other_delivered_pct"]) for r in data["fairness"]])]
    return "".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    C.need_root()
    seconds = 1.5 if args.quick else 4.0
    with tempfile.TemporaryDirectory(prefix="vigil-bench-flood-") as tmp:
        data = {"command": C.command_line(), "machine": C.machine(), "seconds": seconds,
                "budget": BUDGET, "bpf": bpf_cost(tmp, seconds),
                "throughput": throughput(tmp, seconds), "fairness": fairness(tmp, seconds)}
    md = report(data)
    C.write_results("flood", data, md)
    print(md)


if __name__ == "__main__":
    main()
