#!/usr/bin/env python3
"""The service map's and `vigil top`'s own cost.

* ns per L7 record through the service-map sink (both ends of every exchange on this
  node: an inbound and an outbound record each, the outbound one dropped as the
  duplicate) and through the per-process counts, keep-alive connections of 10
  requests, 500 connections at a time;
* one scrape of the service map with 500 edges;
* one `vigil top` sample (/proc of every process: stat, io, cgroup, fds) on this machine.

    .venv/bin/python bench/bench_services.py [--quick]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

from vigil.cli.top_data import Sampler  # noqa: E402
from vigil.l7.identity import Identities  # noqa: E402
from vigil.l7.processes import ProcessStats  # noqa: E402
from vigil.l7.record import HTTP, INBOUND, OUTBOUND, L7Request  # noqa: E402
from vigil.l7.servicemap import ServiceMap  # noqa: E402
from vigil.state.proctable import ProcessTable  # noqa: E402


def records(n_conns: int, per_conn: int, client: int, server: int) -> list:
    out = []
    for c in range(n_conns):
        cport = 20000 + c
        for i in range(per_conn):
            status = 500 if i == 3 else 200
            out.append(L7Request(HTTP, INBOUND, server, server, 7, 0, "127.0.0.1", 8080,
                                 "127.0.0.1", cport, 0, 0.001 * (1 + i % 5), "GET", "/",
                                 status, status >= 500))
            out.append(L7Request(HTTP, OUTBOUND, client, client, 9, 0, "127.0.0.1", cport,
                                 "127.0.0.1", 8080, 0, 0.0012 * (1 + i % 5), "GET", "/",
                                 status, status >= 500))
    return out


def per_record(sink_factory, recs, rounds) -> list:
    out = []
    for _ in range(rounds):
        sink = sink_factory()
        t = time.perf_counter_ns()
        for r in recs:
            sink(r)
        out.append((time.perf_counter_ns() - t) / len(recs))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    rounds = 3 if args.quick else 7
    server = subprocess.Popen(["sleep", "600"])
    try:
        recs = records(500, 10, os.getpid(), server.pid)
        pt = ProcessTable()
        sm_ns = per_record(lambda: ServiceMap(Identities(proctable=pt)), recs, rounds)
        ps_ns = per_record(lambda: ProcessStats(), recs, rounds)
    finally:
        server.kill()
    # a scrape with 500 edges (external peers, client-only: settled after the window)
    clock = [0.0]
    sm = ServiceMap(Identities(proctable=ProcessTable()), clock=lambda: clock[0])
    for i in range(500):
        sm(L7Request(HTTP, OUTBOUND, os.getpid(), os.getpid(), 5, 0, "10.0.0.1", 30000 + i,
                     f"198.{i // 250}.{i % 250}.1", 80, 0, 0.01, "GET", "/", 200))
    clock[0] += 5
    scrape_ms = []
    for _ in range(rounds):
        t = time.perf_counter()
        fams = list(sm.collect())
        scrape_ms.append((time.perf_counter() - t) * 1e3)
    edges = len(fams[0].samples)
    s = Sampler(None)
    top_ms = []
    for _ in range(rounds):
        t = time.perf_counter()
        s.sample()
        top_ms.append((time.perf_counter() - t) * 1e3)
    nproc = len(s.cur[1])
    m = C.machine()
    med = statistics.median
    data = {"machine": m, "command": C.command_line(), "records": len(recs),
            "servicemap_ns_per_record": sm_ns, "processes_ns_per_record": ps_ns,
            "scrape_ms_500_edges": scrape_ms, "edges": edges,
            "top_sample_ms": top_ms, "processes": nproc}
    md = (f"# Service map and vigil top: their own cost\n\nCommand: `{C.command_line()}`; "
          f"{rounds} rounds, {m['cpu']} ({m['cores']} cores), Python {m['python']}, "
          f"{m['date']}, load average at start {' '.join(m['loadavg_at_start'])} (a shared "
          "machine: compare figures of one run only).\n\n"
          + C.md_table(["what", "median", "min", "max"], [
              ["service map sink, ns per L7 record (both ends observed; 500 connections "
               "x 10 requests)", f"{med(sm_ns):,.0f}", f"{min(sm_ns):,.0f}",
               f"{max(sm_ns):,.0f}"],
              ["per-process counts (vigil top), ns per L7 record", f"{med(ps_ns):,.0f}",
               f"{min(ps_ns):,.0f}", f"{max(ps_ns):,.0f}"],
              [f"scrape of the service map, {edges} edge series, ms", f"{med(scrape_ms):.2f}",
               f"{min(scrape_ms):.2f}", f"{max(scrape_ms):.2f}"],
              [f"one `vigil top` sample of /proc ({nproc} processes), ms",
               f"{med(top_ms):.1f}", f"{min(top_ms):.1f}", f"{max(top_ms):.1f}"]])
          + "\nBoth sinks run on the agent's event loop for every completed L7 request; "
            "the service map's cost is one observer lookup, one connection lookup and, "
            "for the counted record, two dict updates and a bucket search.\n")
    C.write_results("services", data, md)
    print(md)


if __name__ == "__main__":
    main()
