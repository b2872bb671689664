#!/usr/bin/env python3
"""BPF time per open: what the open sensors cost each open(2)/openat(2).

    .venv/bin/python bench/bench_open_cost.py [--seconds 3] [--quick]

Starts vigil's open sensors with the default ruleset's open filter (prefixes
and the watched inodes they name), turns on kernel.bpf_stats_enabled, runs an
open/read/close loop (tests/data/e2e/vtool.c flood-read) on one path per
case, and reads run_time_ns / run_cnt of our sys_enter_openat and
sys_exit_openat programs (`bpftool prog show id N --json`) before and after.
ns per call = delta run_time_ns / delta run_cnt (other processes' opens on the
node are counted too: they are mostly opens no rule wants as well).

Cases: a plain absolute path no rule wants (the common case: identity check
and prefix lookup only), a relative one (the base directory is walked), an odd
spelling of an unwanted path (judged on the resolved path: a dentry walk), and
a watched file (/etc/shadow: identity hit, walked, sent).  Writes
bench/results/open_cost.{json,md}.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

PROGS = ("open__enter_openat", "open__exit_openat")
STATS = "/proc/sys/kernel/bpf_stats_enabled"


def prog_id(prog) -> int:
    """The kernel id of a loaded libbpf program (bpf_prog_info.id)."""
    from vigil.kernel import libbpf
    lib = libbpf.lib()
    lib.bpf_program__fd.restype = ctypes.c_int
    lib.bpf_program__fd.argtypes = [ctypes.c_void_p]
    fd = lib.bpf_program__fd(ctypes.c_void_p(prog.ptr))
    info = (ctypes.c_uint8 * 256)()
    size = ctypes.c_uint32(256)
    lib.bpf_obj_get_info_by_fd.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint32)]
    if lib.bpf_obj_get_info_by_fd(fd, info, ctypes.byref(size)) != 0:
        raise OSError("bpf_obj_get_info_by_fd failed")
    return int.from_bytes(bytes(info[4:8]), "little")


def prog_stats(pid: int) -> tuple:
    out = subprocess.run(["bpftool", "prog", "show", "id", str(pid), "--json"], capture_output=True,
                         text=True, check=True).stdout
    d = json.loads(out)
    return d.get("run_time_ns", 0), d.get("run_cnt", 0)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--quick", action="store_true", help="1 s per case")
    args = ap.parse_args()
    C.need_root()
    secs = 1.0 if args.quick else args.seconds
    os.chdir(C.ROOT)
    subprocess.run(["make", "-s", "bpf"], check=True)
    from vigil.events import Kind
    from vigil.kernel.filters import KernelFilters
    from vigil.pipeline import Pipeline
    from vigil.rules import RuleEngine

    eng = RuleEngine.from_files([str(C.ROOT / "src/vigil/rules/default/vigil_rules.yaml")])
    flt = eng.open_path_filter()
    tmp = Path(tempfile.mkdtemp(prefix="vigil-bench-open-"))
    vtool = tmp / "vtool"
    subprocess.run(["clang", "-O2", "-pthread", "-o", str(vtool),
                    str(C.ROOT / "tests/data/e2e/vtool.c")], check=True)
    unwanted = "/usr/lib/os-release"
    cases = [
        ("plain absolute path, no rule wants it", [str(vtool), "flood-read", unwanted], "/"),
        ("relative path, no rule wants it", [str(vtool), "flood-read", "lib/os-release"], "/usr"),
        ("odd spelling (//), no rule wants it", [str(vtool), "flood-read", "/usr//lib/os-release"], "/"),
        ("watched file (/etc/shadow): identity hit, sent", [str(vtool), "flood-read", "/etc/shadow"], "/"),
    ]
    old_stats = Path(STATS).read_text().strip()
    Path(STATS).write_text("1")
    p = Pipeline(KernelFilters({Kind.OPEN}, open_prefixes=flt, ringbuf_size=16 << 20), seed=False)
    rows, data = [], {"command": C.command_line(), "seconds": secs, "machine": C.machine(),
                      "watched_inodes": len(p.filters.watched.entries), "cases": []}
    try:
        p.start()
        data["watched_inodes"] = len(p.filters.watched.entries)
        ids = {}
        for obj in p.sensors.objects.values():
            for prog in obj.programs():
                if prog.name in PROGS:
                    ids[prog.name] = prog_id(prog)
        for title, argv, cwd in cases:
            before = {n: prog_stats(i) for n, i in ids.items()}
            proc = subprocess.Popen(argv + [str(secs)], cwd=cwd, stdout=subprocess.PIPE, text=True)
            while proc.poll() is None:
                p.drain(settle=0)
                time.sleep(0.01)
            opens = int(proc.stdout.read().strip() or 0)
            p.drain(settle=0)
            after = {n: prog_stats(i) for n, i in ids.items()}
            per = {}
            for n in PROGS:
                if n not in ids:       # no enter program (since the exit-only sensor)
                    per[n] = None
                    continue
                dt = after[n][0] - before[n][0]
                dc = after[n][1] - before[n][1]
                per[n] = round(dt / dc, 1) if dc else None
            total = sum(v for v in per.values() if v)
            data["cases"].append({"case": title, "opens": opens, "ns_per_call": per,
                                  "total_ns": round(total, 1)})
            rows.append([title, f"{opens / secs:,.0f}", "-" if per[PROGS[0]] is None else per[PROGS[0]],
                         per[PROGS[1]], round(total, 1)])
    finally:
        p.stop()
        Path(STATS).write_text(old_stats)
    md = ["# BPF time per open\n\n", f"Command: `{data['command']}`  \n",
          f"Date {data['machine']['date']}, git {data['machine']['git']}, kernel "
          f"{data['machine']['kernel']}; {data['watched_inodes']} watched inodes (default rules).  \n",
          "ns per call = delta run_time_ns / delta run_cnt of vigil's open programs for openat "
          "with kernel.bpf_stats_enabled=1 (an empty program measures ~55 ns here: the stats' two "
          "clock reads; other processes' opens count too).  Since the exit-only sensor there is no "
          "enter program (-).  \n",
          "The issue's figure (before identity checks): 147 ns enter + 269 ns exit = 416 ns for "
          "an open no rule wants; the target is 250 ns including the inode check.\n\n",
          C.md_table(["case", "opens/s", "enter ns", "exit ns", "total ns"], rows), "\n",
          "Where the time goes (bench/bench_open_ab.py and per-step builds, this VM): the stats' "
          "clock reads ~55 ns, reading the path from user memory ~85 ns (bpf_probe_read_user_str; "
          "a fixed 32-byte bpf_probe_read_user costs as much), bpf_task_pt_regs ~19 ns, the "
          "prefix trie lookup ~32 ns, the byte-wise spelling check ~20-40 ns; the identity check "
          "is now ~5 ns when the Bloom bits are clear (two hash lookups were ~65 ns), fd[] ~10 ns "
          "(a probe-read was ~36 ns).  The machine is shared: figures move by 30% from run to "
          "run; compare builds side by side with bench/bench_open_ab.py.\n"]
    j, m = C.write_results("open_cost", data, "".join(md))
    print("".join(md))
    print(f"wrote {j} and {m}")


if __name__ == "__main__":
    main()
