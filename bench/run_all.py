#!/usr/bin/env python3
"""Run vigil's benchmarks and write bench/results/RESULTS.md.

    .venv/bin/python bench/run_all.py            # full run, about 4-5 minutes
    .venv/bin/python bench/run_all.py --quick    # short run, under a minute

Runs `make -s bpf` first (BPF objects up to date), then bench_transport.py,
bench_overhead.py, bench_rules.py (default ruleset, the 30-rule bench file and
Falco's stable falco_rules.yaml when ../shared/falco-rules has it),
bench_alert_latency.py (idle and under a 50k events/s load), bench_enforce.py
(connect latency with 1, 100, 10,000 policy entries vs none),
bench_open_cost.py (BPF ns per open, from the kernel's run_time_ns),
bench_flood.py (budget, result filter, one flooder vs another process),
bench_metrics.py (BPF ns per connect and packet, agent CPU, scrape time, wrk
with metrics on/off) and bench_profiles.py (per-event profile check with 10,
1k, 50k learned entries) and bench_l7.py (BPF ns per read/write on fds L7 does
not follow, wrk/nginx and redis-benchmark with no agent vs L7 off vs on) and
bench_tls.py (BPF ns per SSL_read/SSL_write, wrk over HTTPS with no agent vs L7
without and with TLS), bench_services.py (the service map's ns per L7 record, its scrape, one `vigil top`
sample); each also leaves its own output in bench/results/.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-build", action="store_true", help="skip `make -s bpf`")
    ap.add_argument("--report-only", action="store_true",
                    help="rebuild the markdown from the JSON results already in bench/results")
    args = ap.parse_args()
    C.need_root()
    os.chdir(C.ROOT)
    if args.report_only:
        return rebuild()
    if not args.no_build:
        subprocess.run(["make", "-s", "bpf"], check=True)
    py = sys.executable
    q = ["--quick"] if args.quick else []
    t0 = time.monotonic()
    timings = {}
    for name in ("bench_transport", "bench_overhead"):
        t = time.monotonic()
        print(f"=== {name} {' '.join(q)}", flush=True)
        subprocess.run([py, str(C.BENCH / f"{name}.py")] + q, check=True)
        timings[name] = round(time.monotonic() - t, 1)
    extra = run_rules_and_latency(py, args.quick)
    t = time.monotonic()
    print(f"=== bench_enforce {' '.join(q)}", flush=True)
    subprocess.run([py, str(C.BENCH / "bench_enforce.py")] + q, check=True)
    timings["bench_enforce"] = round(time.monotonic() - t, 1)
    extra += "\n" + _demote((C.RESULTS / "enforce.md").read_text()) + "\n"
    print("=== bench_flood", flush=True)
    subprocess.run([py, str(C.BENCH / "bench_flood.py")] + q, check=True, stdout=subprocess.DEVNULL)
    extra += _demote((C.RESULTS / "flood.md").read_text())
    t = time.monotonic()
    print(f"=== bench_metrics {' '.join(q)}", flush=True)
    subprocess.run([py, str(C.BENCH / "bench_metrics.py")] + q, check=True)
    timings["bench_metrics"] = round(time.monotonic() - t, 1)
    extra += "\n" + _demote((C.RESULTS / "metrics.md").read_text()) + "\n"
    t = time.monotonic()
    print(f"=== bench_profiles {' '.join(q)}", flush=True)
    subprocess.run([py, str(C.BENCH / "bench_profiles.py")] + q, check=True)
    timings["bench_profiles"] = round(time.monotonic() - t, 1)
    extra += "\n" + _demote((C.RESULTS / "profiles.md").read_text()) + "\n"
    t = time.monotonic()
    print(f"=== bench_l7 {' '.join(q)}", flush=True)
    subprocess.run([py, str(C.BENCH / "bench_l7.py")] + q, check=True)
    timings["bench_l7"] = round(time.monotonic() - t, 1)
    extra += "\n" + _demote((C.RESULTS / "l7.md").read_text()) + "\n"
    t = time.monotonic()
    print(f"=== bench_tls {' '.join(q)}", flush=True)
    subprocess.run([py, str(C.BENCH / "bench_tls.py")] + q, check=True, stdout=subprocess.DEVNULL)
    timings["bench_tls"] = round(time.monotonic() - t, 1)
    extra += "\n" + _demote((C.RESULTS / "tls.md").read_text()) + "\n"
    print(f"=== bench_services {' '.join(q)}", flush=True)
    subprocess.run([py, str(C.BENCH / "bench_services.py")] + q, check=True,
                   stdout=subprocess.DEVNULL)
    extra += "\n" + _demote((C.RESULTS / "services.md").read_text()) + "\n"
    total = round(time.monotonic() - t0, 1)

    meta = C.machine()
    tr = (C.RESULTS / "transport.md").read_text()
    ov = (C.RESULTS / "overhead.md").read_text()
    tj = json.loads((C.RESULTS / "transport.json").read_text())
    oj = json.loads((C.RESULTS / "overhead.json").read_text())
    mode = "quick" if args.quick else "full"
    head = [
        "# vigil benchmark results\n\n",
        f"Command: `{C.command_line()}` ({mode} run, {total} s: transport {timings['bench_transport']} s, "
        f"overhead {timings['bench_overhead']} s)  \n",
        f"Date {meta['date']}, git {meta['git']}.  \n",
        f"Machine: {meta['os']}, kernel {meta['kernel']}, {meta['cores']} cores ({meta['cpu']}), "
        f"{meta['mem_mb'] // 1024} GiB RAM, Python {meta['python']}; load average at start "
        f"{' '.join(meta['loadavg_at_start'])}. The machine is shared: other jobs ran during the "
        "measurements (see 'other CPU s' and the baseline spread), so treat differences of a few "
        "percent as noise.\n\n",
        "Reproduce one part: `", tj["command"], "` and `", oj["command"], "`.\n\n",
        "## Summary\n\n",
    ]
    import bench_overhead
    import bench_transport
    summary = bench_transport.verdict(tj) + bench_overhead.verdict(oj)
    head.append("\n".join(f"- {x}" for x in summary) + "\n\n")
    body = "".join(head) + extra + _demote(tr) + "\n" + _demote(ov)
    (C.RESULTS / "RESULTS.md").write_text(body)
    print(f"\nwrote bench/results/RESULTS.md ({mode}, {total} s)")


def run_rules_and_latency(py: str, quick: bool) -> str:
    """Rules-engine throughput and alert latency, as a markdown section."""
    n = "50000" if quick else "200000"
    count = "60" if quick else "300"
    runs = [
        ("Rules engine, default ruleset",
         [py, str(C.BENCH / "bench_rules.py"), "src/vigil/rules/default/vigil_rules.yaml", "-n", n]),
        ("Rules engine, 30 Falco-style rules (bench/bench_rules.yaml)",
         [py, str(C.BENCH / "bench_rules.py"), "-n", n]),
    ]
    falco = _falco_stable()
    if falco is not None:
        runs.append(("Rules engine, Falco's stable falco_rules.yaml (unchanged)",
                     [py, str(C.BENCH / "bench_rules.py"), str(falco), "-n", n]))
    runs += [
        ("Alert latency, syscall to JSON line, idle agent",
         [py, str(C.BENCH / "bench_alert_latency.py"), "--count", count]),
        ("Alert latency under a 50k events/s open load crossing to user space",
         [py, str(C.BENCH / "bench_alert_latency.py"), "--count", count, "--load",
          "--load-rate", "50000"]),
        ("BPF time per open (kernel.bpf_stats_enabled run_time_ns / run_cnt)",
         [py, str(C.BENCH / "bench_open_cost.py")] + (["--quick"] if quick else [])),
    ]
    out = ["## Rules engine and alert latency\n\n"]
    for title, cmd in runs:
        print(f"=== {title}", flush=True)
        r = subprocess.run(cmd, capture_output=True, text=True)
        shown = " ".join(os.path.relpath(c, C.ROOT) if c.startswith(str(C.ROOT)) else c
                         for c in cmd[1:])
        out.append(f"### {title}\n\n`.venv/bin/python {shown}`\n\n```\n"
                   f"{(r.stdout or r.stderr).strip()}\n```\n\n")
    return "".join(out)


def _falco_stable():
    """Falco's falco_rules.yaml where the tests find it ($VIGIL_FALCO_RULES_DIR,
    ../shared/falco-rules, /work/shared/falco-rules), or None."""
    env = os.environ.get("VIGIL_FALCO_RULES_DIR")
    for d in ([env] if env else []) + [str(C.ROOT.parent / "shared" / "falco-rules"),
                                       "/work/shared/falco-rules"]:
        p = os.path.join(d, "falco_rules.yaml")
        if os.path.isfile(p):
            return p
    return None


def rebuild():
    """Markdown of both benches and RESULTS.md from their JSON (after a report change)."""
    import bench_overhead
    import bench_transport
    tj = json.loads((C.RESULTS / "transport.json").read_text())
    oj = json.loads((C.RESULTS / "overhead.json").read_text())
    (C.RESULTS / "transport.md").write_text(bench_transport.report(tj))
    (C.RESULTS / "overhead.md").write_text(bench_overhead.report(oj))
    old = (C.RESULTS / "RESULTS.md").read_text() if (C.RESULTS / "RESULTS.md").exists() else ""
    head = old.split("## Summary", 1)[0] if old else "# vigil benchmark results\n\n"
    summary = bench_transport.verdict(tj) + bench_overhead.verdict(oj)
    body = (head + "## Summary\n\n" + "\n".join(f"- {x}" for x in summary) + "\n\n"
            + _demote((C.RESULTS / "transport.md").read_text()) + "\n"
            + _demote((C.RESULTS / "overhead.md").read_text()))
    (C.RESULTS / "RESULTS.md").write_text(body)
    print("rebuilt bench/results/*.md from the JSON")


def _demote(md: str) -> str:
    return "\n".join("#" + line if line.startswith("#") else line for line in md.splitlines()) + "\n"


if __name__ == "__main__":
    main()
