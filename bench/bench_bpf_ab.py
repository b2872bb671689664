#!/usr/bin/env python3
"""Builds of a metric program object side by side, on the same events.

    .venv/bin/python bench/bench_bpf_ab.py LABEL=OBJ.bpf.o ... [--prog NAME] \\
        [--connects N | --cmd "perf bench sched pipe -l 200000"] [--rounds 5]

Every build is loaded twice (in opposite orders, so none always runs first),
each with its own maps, and all programs (or those named by --prog) are
attached at once; then --connects N loopback connects (connectgen.c, as
bench_metrics.py) or --cmd run.  Prints, per build and program, the median
over rounds and copies of ns per run (delta run_time_ns / run_cnt,
kernel.bpf_stats_enabled=1) and, with --connects, ns per connect.  Side by
side, a shared machine's load hits every build alike.
A build of another commit: `git show REV:src/vigil/kernel/bpf/metrics/tcp.bpf.c >
/tmp/x/tcp.bpf.c` and the Makefile's clang line (-Isrc/vigil/kernel/bpf/metrics).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402
from bench_enforce import connectgen, free_port  # noqa: E402
from bench_open_cost import STATS, prog_id, prog_stats  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("builds", nargs="+", help="LABEL=path/to/object.bpf.o")
    ap.add_argument("--prog", action="append", help="only these programs (repeatable)")
    ap.add_argument("--connects", type=int, default=0)
    ap.add_argument("--cmd", default="perf bench sched pipe -l 200000")
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    C.need_root()
    from vigil.kernel import libbpf
    cmd = ([connectgen(), str(free_port()), str(a.connects)] if a.connects else a.cmd.split())
    old = Path(STATS).read_text().strip()
    Path(STATS).write_text("1")
    objs, links, progs = [], [], []
    try:
        for spec in a.builds + a.builds[::-1]:
            label, path = spec.split("=", 1)
            o = libbpf.BpfObject(path)
            objs.append(o)
            o.load()
            for p in o.programs():
                if a.prog is None or p.name in a.prog:
                    links.append(p.attach())
                    progs.append((label, p.name, prog_id(p)))
        per: dict = {}
        for _ in range(a.rounds):
            before = {i: prog_stats(i) for _, _, i in progs}
            subprocess.run(cmd, check=True, capture_output=True)
            after = {i: prog_stats(i) for _, _, i in progs}
            for label, name, i in progs:
                dt, dc = after[i][0] - before[i][0], after[i][1] - before[i][1]
                per.setdefault((label, name), []).append((dt / dc if dc else 0.0, dt))
    finally:
        for lk in links:
            lk.destroy()
        for o in objs:
            o.close()
        Path(STATS).write_text(old)
    print(f"`{C.command_line()}` (load average {os.getloadavg()[0]:.1f})\n")
    extra = " | ns per connect" if a.connects else ""
    print(f"| build | program | ns per run{extra} |\n|---|---|---|" + ("---|" if a.connects else ""))
    for (label, name), v in per.items():
        line = f"| {label} | {name} | {statistics.median(x for x, _ in v):.1f}"
        if a.connects:
            line += f" | {statistics.median(t for _, t in v) / a.connects:.0f}"
        print(line + " |")


if __name__ == "__main__":
    main()
