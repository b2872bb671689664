#!/usr/bin/env python3
"""Rules-engine throughput: events/s on a synthetic mixed event stream.

    .venv/bin/python bench/bench_rules.py [RULES.yaml ...] [-n EVENTS] [--repeat N] [--per-kind]
    .venv/bin/python bench/bench_rules.py RULES.yaml --against REF [--out FILE.json]

Uses bench/bench_rules.yaml (~30 Falco-style rules) when no file is given.
``--against REF`` measures the engine of git revision REF and this tree's side
by side: the two run in alternating subprocesses (pin the command with
``taskset -c 1`` so both get the same core), best pass of each reported.
Times are the process's CPU time (time.process_time), so other programs on a
shared machine slow a pass down less than they would a wall-clock timing.
"""
from __future__ import annotations

import argparse
import collections
import gc
import json
import os
import random
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def _import(src):
    """Import vigil from `src` (this tree's src/ by default)."""
    global ContainerInfo, Event, Kind, ProcessTable, ProcInfo, RuleEngine
    sys.path.insert(0, src)
    from vigil.state.containers.model import ContainerInfo
    from vigil.events import Event, Kind
    from vigil.state.proctable import ProcessTable, ProcInfo
    from vigil.rules import RuleEngine


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


def measure(args) -> dict:
    _import(args.src or os.path.join(ROOT, "src"))
    rng = random.Random(args.seed)
    pt, pids, containers = make_world(rng)
    eng = RuleEngine.from_files(args.rules, proctable=pt)
    evs = make_stream(args.n, rng, pt, pids, containers)
    # the stream (hundreds of thousands of live objects an agent never holds:
    # it sees each event once) is kept out of the cycle collector's passes
    gc.collect()
    gc.freeze()
    evaluate = eng.evaluate
    best = None
    alerts = 0
    for _ in range(args.repeat):
        alerts = 0
        t0 = time.process_time()
        for ev in evs:
            if evaluate(ev):
                alerts += 1
        dt = time.process_time() - t0
        best = dt if best is None else min(best, dt)
    out = {"rules": len(eng.enabled_rules()), "events": args.n, "alerts": alerts,
           "errors": sum(eng.rule_errors.values()), "events_per_s": args.n / best,
           "us_per_event": best / args.n * 1e6}
    if args.per_kind:
        by = collections.defaultdict(list)
        for ev in evs:
            by[ev.kind.label].append(ev)
        out["per_kind_us"] = {}
        for k, l in sorted(by.items(), key=lambda kv: -len(kv[1])):
            b = None
            for _ in range(args.repeat):
                t0 = time.process_time()
                for ev in l:
                    evaluate(ev)
                dt = time.process_time() - t0
                b = dt if b is None else min(b, dt)
            out["per_kind_us"][k] = round(b / len(l) * 1e6, 2)
    return out


def against(args) -> int:
    """This tree and git revision REF, in alternating subprocesses."""
    rev = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", args.against],
                         capture_output=True, text=True, check=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="vigil-bench-") as tmp:
        subprocess.run(f"git -C {ROOT} archive {rev} src | tar -x -C {tmp}", shell=True, check=True)
        base = [sys.executable, os.path.abspath(__file__), *args.rules, "-n", str(args.n),
                "--seed", str(args.seed), "--repeat", "1", "--json"] + (["--per-kind"] if args.per_kind else [])
        runs = {rev: [], "this tree": []}
        for _ in range(args.repeat):
            for name, extra in ((rev, ["--src", os.path.join(tmp, "src")]), ("this tree", [])):
                r = subprocess.run(base + extra, capture_output=True, text=True, check=True)
                runs[name].append(json.loads(r.stdout))
    res = {"command": " ".join(["bench/bench_rules.py"] + sys.argv[1:]), "rules_files": args.rules,
           "events": args.n, "passes": args.repeat, "results": {}}
    for name, rs in runs.items():
        b = max(rs, key=lambda r: r["events_per_s"])
        if args.per_kind:
            b["per_kind_us"] = {k: min(r["per_kind_us"][k] for r in rs) for k in b["per_kind_us"]}
        b["all_passes_events_per_s"] = [round(r["events_per_s"]) for r in rs]
        res["results"][name] = b
        print(f"{name:>10}: {b['events_per_s']:>10,.0f} events/s  ({b['us_per_event']:.2f} us/event)  "
              f"alerts {b['alerts']}  errors {b['errors']}  passes {b['all_passes_events_per_s']}")
        if args.per_kind:
            print("            " + "  ".join(f"{k} {v}" for k, v in b["per_kind_us"].items()))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(res, f, indent=2)
            f.write("\n")
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("rules", nargs="*", default=[os.path.join(HERE, "bench_rules.yaml")])
    ap.add_argument("-n", type=int, default=200_000, help="events in the stream")
    ap.add_argument("--repeat", type=int, default=3, help="timed passes (best is reported)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--per-kind", action="store_true", help="also time each event kind alone (us/event)")
    ap.add_argument("--against", metavar="REF", help="measure git revision REF side by side")
    ap.add_argument("--out", help="with --against: write the results as JSON here")
    ap.add_argument("--src", help=argparse.SUPPRESS)
    ap.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.rules = [os.path.abspath(r) for r in args.rules]
    if args.against:
        return against(args)
    out = measure(args)
    if args.json:
        print(json.dumps(out))
        return 0
    print(f"rules: {out['rules']} enabled from {', '.join(args.rules)}")
    print(f"events: {args.n}  alerts: {out['alerts']} ({out['alerts'] / args.n:.2%})  errors: {out['errors']}")
    print(f"throughput: {out['events_per_s']:,.0f} events/s  ({out['us_per_event']:.2f} us/event, "
          f"best of {args.repeat})")
    if args.per_kind:
        print("us/event by kind: " + "  ".join(f"{k} {v}" for k, v in out["per_kind_us"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
