#!/usr/bin/env python3
"""Rules-engine throughput: events/s on a synthetic mixed event stream.

    .venv/bin/python bench/bench_rules.py [RULES.yaml ...] [-n EVENTS] [--alert-rate]

Uses bench/bench_rules.yaml (~30 Falco-style rules) when no file is given.
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

from vigil.state.containers.model import ContainerInfo  # noqa: E402
from vigil.events import Event, Kind  # noqa: E402
from vigil.state.proctable import ProcessTable, ProcInfo  # noqa: E402
from vigil.rules import RuleEngine  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def make_world(rng):
    pt = ProcessTable()
    pt.put(ProcInfo(1, 0, "systemd", "/usr/lib/systemd/systemd", ["/sbin/init"]))
    pt.put(ProcInfo(10, 1, "containerd-shim", "/usr/bin/containerd-shim", ["containerd-shim"]))
    comms = ["nginx", "python3", "java", "node", "bash", "cat", "ls", "sh", "curl", "postgres",
             "redis-server", "kubelet", "coredns", "sshd", "grep"]
    pids = []
    for i in range(200):
        pid = 1000 + i
        c = rng.choice(comms)
        pt.put(ProcInfo(pid, rng.choice([1, 10, 1000 + max(0, i - 1)]), c, f"/usr/bin/{c}",
                        [c, "--flag", str(i)], cwd="/", tty="" if rng.random() < 0.9 else "pts1"))
        pids.append(pid)
    containers = [None] + [ContainerInfo(id=f"{i:064x}", name=f"c{i}", image_repository=f"repo/app{i}",
                                         namespace="default", pod_name=f"p{i}") for i in range(1, 20)]
    return pt, pids, containers


FILES = ["/usr/lib/x86_64-linux-gnu/libc.so.6", "/etc/ld.so.cache", "/proc/self/stat", "/etc/hosts",
         "/var/lib/app/data.db", "/tmp/x.log", "/etc/shadow", "/home/u/.ssh/id_rsa", "/usr/bin/ls",
         "/var/run/secrets/kubernetes.io/serviceaccount/token", "/dev/null", "/etc/passwd",
         "/sys/fs/cgroup/memory.max", "/root/.bashrc", "/etc/nginx/nginx.conf"]


def make_stream(n, rng, pt, pids, containers):
    evs = []
    t = 1_700_000_000_000_000_000
    kinds = ([Kind.OPEN] * 45 + [Kind.EXEC] * 8 + [Kind.CONNECT] * 10 + [Kind.CLOSE] * 10 +
             [Kind.FORK] * 5 + [Kind.EXIT] * 5 + [Kind.DNS] * 4 + [Kind.ACCEPT] * 4 + [Kind.UNLINK] * 3 +
             [Kind.RENAME] * 2 + [Kind.DUP] * 2 + [Kind.MKDIR] + [Kind.CHMOD])
    for i in range(n):
        k = rng.choice(kinds)
        pid = rng.choice(pids)
        p = pt.get(pid)
        base = dict(time=t + i, pid=pid, tid=pid, ppid=p.ppid, uid=rng.choice([0, 0, 1000]), gid=0,
                    comm=p.comm, cgroup_id=1)
        if k is Kind.OPEN:
            ev = Event(k, syscall="openat", path=rng.choice(FILES), flags=rng.choice([0, 0, 0, 0o2000000, 1, 0o1101]),
                       ret=rng.choice([3, 4, 5, -2]), mode=0, **base)
        elif k is Kind.EXEC:
            c = rng.choice(["ls", "bash", "sh", "cat", "apt", "nc", "python3", "sudo"])
            ev = Event(k, exe=f"/usr/bin/{c}", args=[c, "-x", "y"], cwd="/", tty=rng.choice(["", "", "pts0"]),
                       loginuid=-1, **dict(base, comm=c))
        elif k in (Kind.CONNECT, Kind.ACCEPT, Kind.CLOSE, Kind.DNS):
            ev = Event(k, family="AF_INET", proto="tcp", saddr="10.0.0.5", sport=rng.randint(30000, 60000),
                       daddr=rng.choice(["10.0.0.9", "93.184.216.34", "127.0.0.1"]),
                       dport=rng.choice([80, 443, 5432, 4444, 53]), ret=0, fd=5, query="example.com",
                       syscall={Kind.ACCEPT: "accept4", Kind.DNS: "sendto"}.get(k), **base)
        elif k is Kind.FORK:
            ev = Event(k, child_pid=pid + 5000, **base)
        elif k is Kind.EXIT:
            ev = Event(k, exit_code=0, **base)
        elif k is Kind.DUP:
            ev = Event(k, syscall="dup2", fd=3, newfd=rng.choice([1, 10]), fd_type="file", **base)
        else:
            ev = Event(k, path=rng.choice(FILES), path2="/tmp/y", ret=0, mode=0o644, **base)
        ev.proc = p
        ev.container = rng.choice(containers)
        evs.append(ev)
    return evs


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("rules", nargs="*", default=[os.path.join(HERE, "bench_rules.yaml")])
    ap.add_argument("-n", type=int, default=200_000, help="events in the stream")
    ap.add_argument("--repeat", type=int, default=3, help="timed passes (best is reported)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    pt, pids, containers = make_world(rng)
    eng = RuleEngine.from_files(args.rules, proctable=pt)
    evs = make_stream(args.n, rng, pt, pids, containers)
    evaluate = eng.evaluate
    best = None
    alerts = 0
    for _ in range(args.repeat):
        alerts = 0
        t0 = time.perf_counter()
        for ev in evs:
            if evaluate(ev):
                alerts += 1
        dt = time.perf_counter() - t0
        best = dt if best is None else min(best, dt)
    rate = args.n / best
    print(f"rules: {len(eng.enabled_rules())} enabled from {', '.join(args.rules)}")
    print(f"events: {args.n}  alerts: {alerts} ({alerts / args.n:.2%})  errors: {sum(eng.rule_errors.values())}")
    print(f"throughput: {rate:,.0f} events/s  ({best / args.n * 1e6:.2f} us/event, best of {args.repeat})")


if __name__ == "__main__":
    main()
