#!/usr/bin/env python3
"""Overhead of tracing agents on two C loops, side by side in one run.

Workloads (bench/loadgen.c, pinned to CPU 1, each runs for a fixed time and
reports ops and elapsed ns):
  open   openat(file)+close loop
  exec   fork + execve(/bin/true) + waitpid loop

Configurations, alternated round by round (the order rotates each round):
  none         no agent
  vigil-all    vigil trace all --json -v > /dev/null
  vigil-exec   vigil trace exec -v > /dev/null  (exec + the fork/exit it needs)
  bpftrace     sys_enter/exit_openat + sched_process_exec printing similar fields > /dev/null
  strace       strace -f -qq -o /dev/null -e trace=openat,execve around the workload

Agents run on CPU 0.  An agent counts as attached when vigil has logged
"N programs attached" (stderr, -v) or when `bpftool perf list` shows all of
bpftrace's tracepoints for its pid; they are stopped with SIGINT and waited for.

    .venv/bin/python bench/bench_overhead.py [--quick] [--rounds N] [--seconds S]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402
from _common_cpu import busy_seconds  # noqa: E402

AGENT_CPU = "0"
WORK_CPU = "1"
VIGIL = str(C.ROOT / ".venv" / "bin" / "vigil")
CONFIGS = ("none", "vigil-all", "vigil-exec", "bpftrace", "strace")
TARGET_PCT = 5.0

BPFTRACE_SCRIPT = r"""
tracepoint:syscalls:sys_enter_openat { @path[tid] = args->filename; @flags[tid] = args->flags; }
tracepoint:syscalls:sys_exit_openat /@path[tid]/ {
  printf("open %llu %d %d %d %s %s %d %d\n", nsecs, pid, tid, uid, comm, str(@path[tid]),
         @flags[tid], args->ret);
  delete(@path[tid]); delete(@flags[tid]);
}
tracepoint:sched:sched_process_exec {
  printf("exec %llu %d %d %d %s %s\n", nsecs, pid, tid, uid, comm, str(args->filename));
}
"""
BPFTRACE_TPS = {"sys_enter_openat", "sys_exit_openat", "sched_process_exec"}


class Agent:
    """A running agent process (or none / strace, which wraps the workload)."""

    def __init__(self, name: str, tmpdir: str):
        self.name = name
        self.proc = None
        self.err_path = os.path.join(tmpdir, f"{name}.stderr")
        self.tmpdir = tmpdir
        self.attach_s = None
        self.summary = ""

    def wrap(self, cmd):
        if self.name == "strace":
            return ["taskset", "-c", AGENT_CPU, "strace", "-f", "-qq", "-o", "/dev/null",
                    "-e", "trace=openat,execve"] + cmd
        return cmd

    def start(self, timeout: float = 60.0):
        if self.name in ("none", "strace"):
            return
        if self.name.startswith("vigil"):
            view = "all" if self.name == "vigil-all" else "exec"
            cmd = [VIGIL, "trace", view, "-v"] + (["--json"] if view == "all" else [])
        else:
            script = os.path.join(self.tmpdir, "trace.bt")
            with open(script, "w") as f:
                f.write(BPFTRACE_SCRIPT)
            cmd = ["bpftrace", script]
        t0 = time.perf_counter()
        err = open(self.err_path, "w")
        self.proc = subprocess.Popen(["taskset", "-c", AGENT_CPU] + cmd, stdout=subprocess.DEVNULL,
                                     stderr=err, stdin=subprocess.DEVNULL)
        err.close()
        deadline = time.monotonic() + timeout
        while not self._attached():
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited early: {self._stderr()[-500:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} did not attach within {timeout} s")
            time.sleep(0.05)
        self.attach_s = round(time.perf_counter() - t0, 2)
        time.sleep(0.3)     # into the event loop

    def _stderr(self) -> str:
        try:
            with open(self.err_path) as f:
                return f.read()
        except OSError:
            return ""

    def _attached(self) -> bool:
        if self.name.startswith("vigil"):
            return "programs attached" in self._stderr()
        r = subprocess.run(["bpftool", "-j", "perf", "list"], capture_output=True, text=True)
        try:
            rows = json.loads(r.stdout or "[]")
        except ValueError:
            return False
        tps = {x.get("tracepoint") for x in rows if x.get("pid") == self.proc.pid}
        return BPFTRACE_TPS <= tps

    def stop(self):
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
        m = re.search(r"vigil: (\d+) events, (\d+) dropped", self._stderr())
        self.summary = {"events": int(m.group(1)), "dropped": int(m.group(2))} if m else {}


def run_workload(agent: Agent, gen: str, kind: str, seconds: float, target: str) -> dict:
    cmd = ["taskset", "-c", WORK_CPU, gen, kind, str(seconds)]
    if kind == "open":
        cmd += ["0", target]
    b0 = busy_seconds()
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = subprocess.run(agent.wrap(cmd), capture_output=True, text=True)
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    b1 = busy_seconds()
    cpu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    if r.returncode != 0:
        raise RuntimeError(f"{kind} workload under {agent.name} failed: {r.stderr[-300:]}")
    ops, elapsed = C.parse_loadgen(r.stdout.strip().splitlines()[-1])
    return {"ops": ops, "elapsed_s": elapsed, "ns_per_op": elapsed / ops * 1e9,
            "cpu_ns_per_op": cpu / ops * 1e9,
            "machine_busy_cpu_s": round(b1 - b0, 3)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2 short rounds (about 30 s)")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--seconds", type=float, default=None, help="length of one workload run")
    ap.add_argument("--configs", default=",".join(CONFIGS))
    args = ap.parse_args()
    C.need_root()
    rounds = args.rounds or (2 if args.quick else 5)
    secs = args.seconds or (0.4 if args.quick else 1.0)
    configs = [c for c in args.configs.split(",") if c]
    missing = [c for c in configs if c in ("bpftrace", "strace") and not C.which(c)]
    if missing:
        print(f"skipping (not installed): {', '.join(missing)}; apt-get install -y {' '.join(missing)}")
        configs = [c for c in configs if c not in missing]
    if "bpftrace" in configs and not C.which("bpftool"):
        print("skipping bpftrace: bpftool (needed to see when it has attached) is missing")
        configs.remove("bpftrace")
    gen = C.loadgen()
    tmpdir = tempfile.mkdtemp(prefix="vigil-overhead-")
    target = os.path.join(tmpdir, "target")
    open(target, "w").close()
    meta = C.machine()
    print(f"vigil overhead bench  kernel {meta['kernel']}  {meta['cores']} cores  {rounds} rounds x "
          f"{secs} s per workload  workload CPU {WORK_CPU}, agents CPU {AGENT_CPU}", flush=True)
    samples = {c: {"open": [], "exec": []} for c in configs}
    agents_info = {c: [] for c in configs}
    for rnd in range(rounds):
        order = configs[rnd % len(configs):] + configs[:rnd % len(configs)]
        for cfg in order:
            a = Agent(cfg, tmpdir)
            a.start()
            try:
                for kind in ("open", "exec"):
                    samples[cfg][kind].append(run_workload(a, gen, kind, secs, target))
            finally:
                a.stop()
            agents_info[cfg].append({"attach_s": a.attach_s, **(a.summary or {})})
            o, e = samples[cfg]["open"][-1], samples[cfg]["exec"][-1]
            extra = f" agent: {a.summary}" if a.summary else ""
            print(f"  round {rnd + 1} {cfg:11s} open {o['ns_per_op']:8.0f} ns/op  exec "
                  f"{e['ns_per_op'] / 1000:8.1f} us/op{extra}", flush=True)
    for f in os.listdir(tmpdir):
        os.unlink(os.path.join(tmpdir, f))
    os.rmdir(tmpdir)

    summary = {}
    for cfg in configs:
        s = {}
        for kind in ("open", "exec"):
            v = [x["ns_per_op"] for x in samples[cfg][kind]]
            c = [x["cpu_ns_per_op"] for x in samples[cfg][kind]]
            s[kind] = {"median_ns": statistics.median(v), "min_ns": min(v), "max_ns": max(v),
                       "cpu_median_ns": statistics.median(c)}
        summary[cfg] = s
    base = summary.get("none")
    for cfg in configs:
        for kind in ("open", "exec"):
            if base:
                x, b = summary[cfg][kind], base[kind]
                x["overhead_pct"] = round(100 * (x["median_ns"] / b["median_ns"] - 1), 1)
                x["overhead_min_pct"] = round(100 * (x["min_ns"] / b["min_ns"] - 1), 1)
                x["cpu_overhead_pct"] = round(100 * (x["cpu_median_ns"] / b["cpu_median_ns"] - 1), 1)
    res = {"command": C.command_line(), "machine": meta, "rounds": rounds, "seconds_per_run": secs,
           "configs": configs, "summary": summary, "samples": samples, "agents": agents_info,
           "bpftrace_script": BPFTRACE_SCRIPT}
    md = report(res)
    print()
    print(text_report(res))
    j, m = C.write_results("overhead", res, md)
    print(f"\nwrote {os.path.relpath(j)} and {os.path.relpath(m)}")


LABELS = {
    "none": "no agent",
    "vigil-all": "`vigil trace all --json > /dev/null`",
    "vigil-exec": "`vigil trace exec > /dev/null`",
    "bpftrace": "bpftrace (openat enter/exit + sched_process_exec, printf > /dev/null)",
    "strace": "`strace -f -e trace=openat,execve -o /dev/null`",
}


def rows(res, md=False):
    out = []
    for cfg in res["configs"]:
        s = res["summary"][cfg]
        ag = res["agents"][cfg]
        drops = [x.get("dropped") for x in ag if x.get("dropped") is not None]
        evs = [x.get("events") for x in ag if x.get("events") is not None]
        o, e = s["open"], s["exec"]
        out.append([LABELS[cfg] if md else cfg,
                    f"{o['median_ns']:.0f}", _pct(o.get("overhead_pct")), _pct(o.get("overhead_min_pct")),
                    _pct(o.get("cpu_overhead_pct")),
                    f"{e['median_ns'] / 1000:.1f}", _pct(e.get("overhead_pct")), _pct(e.get("overhead_min_pct")),
                    _pct(e.get("cpu_overhead_pct")),
                    f"{o['min_ns']:.0f}-{o['max_ns']:.0f}",
                    f"{e['min_ns'] / 1000:.0f}-{e['max_ns'] / 1000:.0f}",
                    f"{sum(evs)}/{sum(drops)}" if drops else "-"])
    return ["config", "open ns/op", "open ovh (median)", "open ovh (min)", "open ovh (CPU)",
            "exec us/op", "exec ovh (median)", "exec ovh (min)", "exec ovh (CPU)",
            "open range ns", "exec range us", "agent events/dropped"], out


def _pct(x):
    return "-" if x is None else f"{x:+.1f}%"


def verdict(res):
    s = res["summary"]
    if "vigil-exec" not in s or "none" not in s:
        return []
    x = s["vigil-exec"]
    o, e = x["open"]["overhead_pct"], x["exec"]["overhead_pct"]
    noise = max(100 * (s["none"][k]["max_ns"] / s["none"][k]["min_ns"] - 1) for k in ("open", "exec"))
    ok = ("INCONCLUSIVE: the machine was too noisy" if noise > 2 * TARGET_PCT
          else "MET" if o <= TARGET_PCT and e <= TARGET_PCT else "NOT MET")
    return [f"Target ≤ {TARGET_PCT:.0f}% overhead with only exec events (vigil trace exec): wall time "
            f"(median) open loop {o:+.1f}%, fork/exec loop {e:+.1f}% -> {ok}; "
            f"best-of-rounds {x['open']['overhead_min_pct']:+.1f}% / {x['exec']['overhead_min_pct']:+.1f}%; "
            f"workload CPU time {x['open']['cpu_overhead_pct']:+.1f}% / {x['exec']['cpu_overhead_pct']:+.1f}% "
            f"(run-to-run spread of the no-agent baseline: up to {noise:.1f}%)."]


def report(res) -> str:
    m = res["machine"]
    h, r = rows(res, md=True)
    out = ["# vigil overhead benchmark\n\n",
           f"Command: `{res['command']}`  \n",
           f"Date {m['date']}, git {m['git']}, kernel {m['kernel']}, {m['cores']} cores ({m['cpu']}), "
           f"load average at start {' '.join(m['loadavg_at_start'])}.  \n",
           f"{res['rounds']} rounds, configurations alternated (order rotated each round), "
           f"{res['seconds_per_run']} s per workload run; workload on CPU {WORK_CPU}, agent on CPU "
           f"{AGENT_CPU}. Figures are medians over rounds; overhead = median / median(no agent) - 1. "
           "open = openat+close of one file; exec = fork + execve(/bin/true) + waitpid. "
           "ovh (min) compares the best round of each; ovh (CPU) compares the workload's CPU time "
           "(user+sys of the workload and its children, from getrusage; for strace it includes strace "
           "itself), which other jobs on the machine disturb less than wall time. "
           "Agent events/dropped are vigil's own end-of-run counts (kernel drops), summed over rounds.\n\n",
           C.md_table(h, r),
           "\n" + "\n".join(f"- {x}" for x in verdict(res)) + "\n",
           "\nbpftrace script:\n\n```\n" + res["bpftrace_script"].strip() + "\n```\n"]
    return "".join(out)


def text_report(res) -> str:
    h, r = rows(res)
    return C.text_table(h, r) + "\n\n" + "\n".join(verdict(res))


if __name__ == "__main__":
    main()
