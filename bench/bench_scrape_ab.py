#!/usr/bin/env python3
"""The 10k-series scrape of bench_metrics.py, two collector versions in
alternated rounds (the machine is shared: minutes apart, the same code's
figure moves by more than a change).

    .venv/bin/python bench/bench_scrape_ab.py [OLD_kernel_collector.py] [--rounds 10]

OLD: a kernel_collector.py of another commit (`git show REV:src/vigil/metrics/
kernel_collector.py > /tmp/old_kc.py`); without it only this tree's is timed.
Both read the same maps (10,000 peers in tcp_connects, max_destinations
10000); prints the medians of generate_latest() and of the collectors alone.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import socket
import statistics
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("old", nargs="?")
    ap.add_argument("--rounds", type=int, default=10)
    a = ap.parse_args()
    C.need_root()
    from prometheus_client import CollectorRegistry, generate_latest
    from vigil.metrics.kernel import KernelMetrics
    from vigil.metrics.kernel_collector import KernelCollector
    from vigil.metrics.layouts import TcpConnKey
    km = KernelMetrics({"max_destinations": 10000}, only=["tcp"]).start()
    versions = {"this tree": KernelCollector}
    if a.old:
        spec = importlib.util.spec_from_file_location("old_kernel_collector", a.old)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        versions = {"old": mod.KernelCollector, **versions}
    try:
        m = km.map("tcp", "tcp_connects")
        for i in range(10000):
            k = TcpConnKey(cgroup_id=1, dport=443, family=socket.AF_INET, result=0)
            k.daddr[:4] = list(struct.pack(">I", (10 << 24) + i))
            m.update(bytes(k), struct.pack("<Q", i + 1))
        regs, cols = {}, {}
        for name, cls in versions.items():
            cols[name] = cls(km, None, 10000)
            regs[name] = CollectorRegistry()
            regs[name].register(cols[name])
            generate_latest(regs[name])          # names the peers once
        scrape = {n: [] for n in versions}
        collect = {n: [] for n in versions}
        for r in range(a.rounds):
            for name in (list(versions) if r % 2 == 0 else list(versions)[::-1]):
                t = time.perf_counter()
                text = generate_latest(regs[name])
                scrape[name].append(time.perf_counter() - t)
                t = time.perf_counter()
                list(cols[name].collect())
                collect[name].append(time.perf_counter() - t)
        series = sum(1 for line in text.splitlines() if line and not line.startswith(b"#"))
    finally:
        km.stop()
    print(f"`{C.command_line()}` ({series} series, load average {os.getloadavg()[0]:.1f})\n")
    print("| collector | scrape ms (median) | collect ms (median) |\n|---|---|---|")
    for n in versions:
        print(f"| {n} | {statistics.median(scrape[n]) * 1000:.1f} | "
              f"{statistics.median(collect[n]) * 1000:.1f} |")


if __name__ == "__main__":
    main()
