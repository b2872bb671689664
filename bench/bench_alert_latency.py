#!/usr/bin/env python3
"""Alert latency: from the syscall to the JSON alert line on vigil's stdout.

Starts `vigil run --output json` with one rule matching an exec of a marker
command, then runs the marker N times (spaced, so each alert is measured
alone) while a second, background load of opens keeps the agent busy.
Latency = time the alert line is read here - the event's kernel timestamp
(the alert's `time`, wall clock).  Reports p50/p90/p99/max in ms.

    .venv/bin/python bench/bench_alert_latency.py [--count 300] [--load] [--with RULES.yaml]

``--with`` loads a ruleset (e.g. Falco's falco_rules.yaml) before the marker
rule, so the latency is the one an alert has with that ruleset running.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import selectors
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VIGIL = os.path.join(ROOT, ".venv", "bin", "vigil")

RULES = """
- rule: Latency marker
  desc: exec of the latency marker
  condition: evt.type = execve and proc.name = true and proc.args contains vigil-latency
  output: "marker (cmd=%proc.cmdline pid=%proc.pid)"
  priority: NOTICE
- rule: Busy open
  desc: keeps the open path busy (never matches)
  condition: evt.type in (open, openat) and fd.name startswith /tmp/vigil-latency-load/ and proc.name = nobody-here
  output: "x %fd.name"
  priority: DEBUG
"""


def parse_time(s: str) -> int:
    base, frac = s.rstrip("Z").split(".")
    secs = dt.datetime.strptime(base, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=dt.timezone.utc).timestamp()
    return int(secs) * 1_000_000_000 + int(frac.ljust(9, "0")[:9])


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p / 100))]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=300)
    ap.add_argument("--gap", type=float, default=0.01, help="seconds between markers")
    ap.add_argument("--load", action="store_true", help="background open/close load on /tmp")
    ap.add_argument("--load-rate", type=int, default=50000,
                    help="opens per second the load makes (0 = as fast as it can)")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results"))
    ap.add_argument("--with", dest="with_rules", action="append", default=[],
                    help="rules file loaded before the marker rule (repeatable)")
    a = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="vigil-lat-")
    rules = os.path.join(tmp, "rules.yaml")
    with open(rules, "w") as f:
        f.write(RULES)
    extra = [x for r in a.with_rules for x in ("-r", r)]
    agent = subprocess.Popen([VIGIL, "run", *extra, "-r", rules, "--output", "json", "--no-store"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
    # wait for "running with"
    # (warnings, e.g. about tracepoints this kernel lacks, may come first)
    seen = []
    while True:
        line = agent.stderr.readline()
        seen.append(line)
        if "running with" in line:
            break
        if not line or len(seen) > 200:
            agent.kill()
            print("agent did not start:", "".join(seen), file=sys.stderr)
            return 1
    load = None
    if a.load:
        os.makedirs("/tmp/vigil-latency-load", exist_ok=True)
        load = subprocess.Popen([sys.executable, "-c", (
            "import os,time\n"
            "p='/tmp/vigil-latency-load/f'\nopen(p,'w').close()\n"
            f"rate={a.load_rate}\n"
            "end=time.time()+600\n"
            "t=time.time()\n"
            "while time.time()<end:\n"
            "    for _ in range(rate//100 if rate else 1000):\n"
            "        os.close(os.open(p, os.O_RDONLY))\n"
            "    if rate:\n"
            "        t+=0.01\n"
            "        d=t-time.time()\n"
            "        if d>0: time.sleep(d)\n")])
    sel = selectors.DefaultSelector()
    sel.register(agent.stdout, selectors.EVENT_READ)
    lat = []
    missing = 0
    try:
        for i in range(a.count):
            child = subprocess.Popen(["/bin/true", f"vigil-latency-{i}"])
            deadline = time.monotonic() + 2.0
            got = False
            while time.monotonic() < deadline and not got:
                if not sel.select(timeout=deadline - time.monotonic()):
                    break
                line = agent.stdout.readline()
                now = time.time_ns()
                try:
                    al = json.loads(line)
                except ValueError:
                    continue
                if al.get("rule") == "Latency marker" and f"vigil-latency-{i}" in al["output"]:
                    lat.append((now - parse_time(al["time"])) / 1e6)
                    got = True
            child.wait()
            if not got:
                missing += 1
            time.sleep(a.gap)
    finally:
        if load:
            load.kill()
        agent.terminate()
        agent.wait(10)
    res = {
        "command": "python bench/bench_alert_latency.py"
                   + (f" --load --load-rate {a.load_rate}" if a.load else "") + f" --count {a.count}"
                   + "".join(f" --with {r}" for r in a.with_rules),
        "rules": a.with_rules,
        "load_rate": a.load_rate if a.load else 0,
        "count": a.count, "measured": len(lat), "missing": missing, "load": a.load,
        "p50_ms": round(pct(lat, 50), 3), "p90_ms": round(pct(lat, 90), 3),
        "p99_ms": round(pct(lat, 99), 3), "max_ms": round(max(lat), 3),
    }
    print(json.dumps(res, indent=2))
    os.makedirs(a.out, exist_ok=True)
    name = f"alert_latency_load{a.load_rate}.json" if a.load else "alert_latency.json"
    if a.with_rules:
        name = name.replace(".json", "_with_" + "_".join(
            os.path.basename(r).rsplit(".", 1)[0] for r in a.with_rules) + ".json")
    with open(os.path.join(a.out, name), "w") as f:
        json.dump(res, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
