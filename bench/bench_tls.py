#!/usr/bin/env python3
"""Cost of the TLS uprobes (docs/L7.md#tls).

wrk over HTTPS (keep-alive, -t1 -c20) against a local nginx with TLS (both
link the host's libssl.so.3, so both sides are probed), in alternated rounds:
no agent, ``vigil run`` with L7 and ``l7.tls: false`` (plaintext L7 only: the
encrypted bytes are given up on), and ``vigil run`` with L7 and TLS; medians.
During the TLS rounds kernel.bpf_stats_enabled=1 gives the BPF time per
SSL_read/SSL_write call (entry + return programs, run_time_ns / run_cnt).
The uprobe traps themselves (an int3 and, for the return, a trampoline per
call) are outside bpf_stats: they show in the throughput.

Writes bench/results/tls.{json,md}.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402
from bench_enforce import free_port  # noqa: E402
from bench_metrics import prog_stats  # noqa: E402

VIGIL = os.path.join(os.path.dirname(sys.executable), "vigil")

NGINX_CONF = """
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  server {{
    listen 127.0.0.1:{port} ssl;
    ssl_certificate {dir}/cert.pem;
    ssl_certificate_key {dir}/key.pem;
    location / {{ return 200 "ok\\n"; }}
  }}
}}
"""

MODES = ("none", "l7_no_tls", "l7_tls")


def start_agent(d: str, tls: bool) -> subprocess.Popen:
    cfg = os.path.join(d, f"vigil-{'tls' if tls else 'notls'}.yaml")
    with open(cfg, "w") as f:
        f.write(f"l7:\n  protocols: [http]\n  tls: {'true' if tls else 'false'}\n")
    env = dict(os.environ)
    env["VIGIL_METRICS_ADDRESS"] = ""
    p = subprocess.Popen([VIGIL, "run", "--no-store", "--config", cfg],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and p.poll() is None:
        if "running with" in p.stderr.readline():
            break
    time.sleep(1)
    return p


def stop_agent(p: subprocess.Popen) -> None:
    p.send_signal(2)
    p.communicate(timeout=60)


def wrk(url: str, secs: int) -> float:
    w = subprocess.run(["wrk", "-t1", "-c20", f"-d{secs}s", url], capture_output=True, text=True)
    for line in w.stdout.splitlines():
        if line.startswith("Requests/sec:"):
            return float(line.split()[1])
    raise RuntimeError(f"wrk: {w.stdout} {w.stderr}")


def rounds(n: int, secs: int) -> dict:
    nginx, wrk_bin = shutil.which("nginx") or "/usr/sbin/nginx", shutil.which("wrk")
    if not (os.path.exists(nginx) and wrk_bin):
        return {"skipped": "nginx or wrk not installed (apt-get install nginx-light wrk)"}
    d = tempfile.mkdtemp(prefix="vigil-tls-")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-keyout", f"{d}/key.pem", "-out", f"{d}/cert.pem"],
                   check=True, capture_output=True)
    port = free_port()
    open(f"{d}/nginx.conf", "w").write(NGINX_CONF.format(dir=d, port=port))
    subprocess.run([nginx, "-c", f"{d}/nginx.conf", "-p", d], check=True)
    url = f"https://127.0.0.1:{port}/"
    out = {m: [] for m in MODES}
    bpf = {}
    old = open("/proc/sys/kernel/bpf_stats_enabled").read().strip()
    try:
        for r in range(n):
            order = MODES if r % 2 == 0 else tuple(reversed(MODES))
            for mode in order:
                agent = start_agent(d, mode == "l7_tls") if mode != "none" else None
                try:
                    if mode == "l7_tls":
                        open("/proc/sys/kernel/bpf_stats_enabled", "w").write("1")
                        before = prog_stats(("l7__tls",))
                    out[mode].append(wrk(url, secs))
                    if mode == "l7_tls":
                        after = prog_stats(("l7__tls",))
                        open("/proc/sys/kernel/bpf_stats_enabled", "w").write(old)
                        for k, (t, c) in after.items():
                            t0, c0 = before.get(k, (0, 0))
                            bt, bc = bpf.get(k, (0, 0))
                            bpf[k] = (bt + t - t0, bc + c - c0)
                finally:
                    if agent is not None:
                        stop_agent(agent)
    finally:
        open("/proc/sys/kernel/bpf_stats_enabled", "w").write(old)
        subprocess.run([nginx, "-c", f"{d}/nginx.conf", "-p", d, "-s", "stop"])
        shutil.rmtree(d, ignore_errors=True)
    med = {m: statistics.median(v) for m, v in out.items()}
    # entry programs count the calls; their time and the return programs' is the cost
    calls = sum(c for k, (_, c) in bpf.items() if "_ret" not in k and "other" not in k)
    ns = sum(t for k, (t, _) in bpf.items() if "other" not in k)
    return {"rounds": n, "seconds": secs, "req_s": out,
            "median": {m: round(v) for m, v in med.items()},
            "loss_pct_tls_vs_none": round((med["none"] - med["l7_tls"]) / med["none"] * 100, 2),
            "loss_pct_tls_vs_no_tls": round((med["l7_no_tls"] - med["l7_tls"])
                                            / med["l7_no_tls"] * 100, 2),
            "loss_pct_no_tls_vs_none": round((med["none"] - med["l7_no_tls"]) / med["none"] * 100,
                                             2),
            "ssl_calls": calls, "bpf_ns_per_ssl_call": round(ns / calls, 1) if calls else None,
            "programs": {k: {"run_time_ns": t, "run_cnt": c} for k, (t, c) in bpf.items()}}


def render(res: dict) -> str:
    w = res["wrk"]
    head = (f"## TLS uprobes (bench_tls.py)\n\n`{res['command']}` on {os.cpu_count()} CPUs "
            "(shared; other work was running).\n\n")
    if "skipped" in w:
        return head + f"Skipped: {w['skipped']}\n"
    m = w["median"]
    return head + f"""| what | measured |
| --- | --- |
| BPF time per SSL_read/SSL_write call (entry + return programs; {w['ssl_calls']:,} calls, wrk and nginx) | {w['bpf_ns_per_ssl_call']} ns |
| wrk -t1 -c20 over HTTPS against nginx, no agent | {m['none']:,} req/s |
| the same, vigil run with L7 (http), `l7.tls: false` | {m['l7_no_tls']:,} req/s ({-w['loss_pct_no_tls_vs_none']:+.2f}%) |
| the same, vigil run with L7 (http) and TLS | {m['l7_tls']:,} req/s ({-w['loss_pct_tls_vs_none']:+.2f}% vs no agent, {-w['loss_pct_tls_vs_no_tls']:+.2f}% vs L7 without TLS) |

{w['rounds']} alternated rounds of {w['seconds']} s each, medians.  Each request is one
SSL_write and one SSL_read on each side (wrk and nginx are both probed): four probed
calls, each an entry uprobe and a uretprobe.  BPF time is `run_time_ns / run_cnt`
with `kernel.bpf_stats_enabled=1`; the uprobe traps (the breakpoint and the return
trampoline, a few microseconds a call on this VM) are not in it but are in the
throughput.
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    C.need_root()
    res = {"machine": C.machine(), "command": C.command_line(), "quick": a.quick,
           "wrk": rounds(2 if a.quick else 5, 3 if a.quick else 5)}
    md = render(res)
    C.write_results("tls", res, md)
    print(md)


if __name__ == "__main__":
    main()
