#!/usr/bin/env python3
"""Two (or more) builds of the open sensor side by side, on the same opens.

    .venv/bin/python bench/bench_open_ab.py LABEL=FILE.bpf.o LABEL=FILE.bpf.o ... \\
        [--seconds 1] [--rounds 3] [--path /usr/lib/os-release]

On a shared machine two runs minutes apart differ by more than the change
being measured; here every build's sys_enter_openat / sys_exit_openat
programs are attached at once (each build twice, in opposite orders, so no
build always runs first), on vigil's shared maps filled by a Pipeline with
the default ruleset's open filter, and an open/read/close loop
(tests/data/e2e/vtool.c flood-read) runs under all of them.  ns per open =
median over rounds and copies of delta run_time_ns / delta run_cnt
(kernel.bpf_stats_enabled=1).  The figures are lower than bench_open_cost's
(the later programs find the caches warm), but they compare like with like.
A build of a commit: `git show REV:src/vigil/kernel/bpf/file.bpf.c > /tmp/x/file.bpf.c`, the
headers beside it, and the Makefile's clang line.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402
from bench_open_cost import STATS, prog_id, prog_stats  # noqa: E402

PROGS = ("open__enter_openat", "open__exit_openat")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("builds", nargs="+", help="LABEL=path/to/file.bpf.o")
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--path", default="/usr/lib/os-release")
    a = ap.parse_args()
    C.need_root()
    os.chdir(C.ROOT)
    from vigil.events import Kind
    from vigil.kernel import libbpf
    from vigil.kernel.filters import KernelFilters
    from vigil.kernel.sensors import SHARED_MAPS
    from vigil.pipeline import Pipeline
    from vigil.rules import RuleEngine

    flt = RuleEngine.from_files([str(C.ROOT / "src/vigil/rules/default/vigil_rules.yaml")]) \
        .open_path_filter()
    vtool = Path(tempfile.mkdtemp(prefix="vigil-bench-ab-")) / "vtool"
    subprocess.run(["clang", "-O2", "-pthread", "-o", str(vtool),
                    str(C.ROOT / "tests/data/e2e/vtool.c")], check=True)
    old_stats = Path(STATS).read_text().strip()
    Path(STATS).write_text("1")
    p = Pipeline(KernelFilters({Kind.OPEN}, open_prefixes=flt), seed=False)
    links, objs, progs = [], [], []      # progs: (label, program name, kernel id)
    try:
        p.start()
        for spec in a.builds + a.builds[::-1]:
            label, path = spec.split("=", 1)
            o = libbpf.BpfObject(path)
            objs.append(o)
            for n in SHARED_MAPS:
                try:
                    o.reuse_map(n, p.sensors.maps[n].fd)
                except KeyError:
                    pass        # a build from before that map
            for pr in o.programs():
                pr.autoload = pr.name in PROGS
            o.load()
            for pr in o.programs():
                if pr.name in PROGS:
                    links.append(p.sensors._attach_one(pr))
                    progs.append((label, pr.name, prog_id(pr)))
        per: dict = {}
        for _ in range(a.rounds):
            before = {i: prog_stats(i) for _, _, i in progs}
            proc = subprocess.Popen([str(vtool), "flood-read", a.path, str(a.seconds)],
                                    stdout=subprocess.DEVNULL)
            while proc.poll() is None:
                p.drain(settle=0)
                time.sleep(0.01)
            p.drain(settle=0)
            after = {i: prog_stats(i) for _, _, i in progs}
            for label, name, i in progs:
                dt, dc = after[i][0] - before[i][0], after[i][1] - before[i][1]
                if dc:
                    per.setdefault(label, {}).setdefault(name, []).append(dt / dc)
    finally:
        for lk in links:
            lk.destroy()
        for o in objs:
            o.close()
        p.stop()
        Path(STATS).write_text(old_stats)
    print(f"`{C.command_line()}` (load average {os.getloadavg()[0]:.1f})\n")
    print("| build | enter ns | exit ns | total ns |\n|---|---|---|---|")
    for label in dict.fromkeys(s.split("=", 1)[0] for s in a.builds):
        d = per.get(label, {})
        e = statistics.median(d[PROGS[0]]) if PROGS[0] in d else None
        x = statistics.median(d[PROGS[1]])
        print(f"| {label} | {'-' if e is None else f'{e:.1f}'} | {x:.1f} | {(e or 0) + x:.1f} |")


if __name__ == "__main__":
    main()
