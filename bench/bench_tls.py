#!/usr/bin/env python3
"""Cost of the TLS uprobes (docs/L7.md#tls).

CPU per SSL call: a Python child writes 64 bytes through one SSL object and
reads them with another over memory BIOs (no sockets: only the probes' own
cost, nothing is sent up), its CPU time per write+read pair without probes,
with the probes on the exported SSL_write_ex/SSL_read_ex, and with them on
ssl_write_internal/ssl_read_internal (what vigil uses); alternated rounds,
medians.

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
import textwrap
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402
import _servers  # noqa: E402
from bench_enforce import free_port  # noqa: E402
from bench_metrics import prog_stats  # noqa: E402

MODES = ("none", "l7_no_tls", "l7_tls")
SCHEMES = ("https", "http")


def start_agent(d: str, tls: bool) -> subprocess.Popen:
    cfg = os.path.join(d, f"vigil-{'tls' if tls else 'notls'}.yaml")
    with open(cfg, "w") as f:
        f.write(f"l7:\n  protocols: [http]\n  tls: {'true' if tls else 'false'}\n")
    return _servers.start_vigil(["--config", cfg], env={"VIGIL_METRICS_ADDRESS": ""}, wait=90)


def stop_agent(p: subprocess.Popen) -> None:
    _servers.stop_vigil(p, timeout=60)


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(url: str, secs: int) -> float:
    rate, w = _servers.wrk(url, secs)
    if rate is None:
        raise RuntimeError(f"wrk: {w.stdout} {w.stderr}")
    return rate


def _add_stats(acc: dict, before: dict, after: dict) -> None:
    for k, (t, c) in after.items():
        t0, c0 = before.get(k, (0, 0))
        bt, bc = acc.get(k, (0, 0))
        acc[k] = (bt + t - t0, bc + c - c0)


def rounds(n: int, secs: int) -> dict:
    if not _servers.nginx_and_wrk():
        return {"skipped": _servers.NO_NGINX_WRK}
    ports = {"https": free_port(), "http": free_port()}
    nginx = _servers.Nginx(http=[ports["http"]], https=[ports["https"]], prefix="vigil-tls-")
    d = nginx.dir
    out = {m: {s: [] for s in SCHEMES} for m in MODES}
    cpu = {m: {s: [] for s in SCHEMES} for m in MODES if m != "none"}
    bpf = {}
    old = open("/proc/sys/kernel/bpf_stats_enabled").read().strip()
    try:
        for r in range(n):
            for mode in (MODES if r % 2 == 0 else tuple(reversed(MODES))):
                agent = start_agent(d, mode == "l7_tls") if mode != "none" else None
                try:
                    for scheme in (SCHEMES if r % 2 == 0 else tuple(reversed(SCHEMES))):
                        url = f"{scheme}://127.0.0.1:{ports[scheme]}/"
                        stats = mode == "l7_tls" and scheme == "https"
                        if stats:
                            open("/proc/sys/kernel/bpf_stats_enabled", "w").write("1")
                            before = prog_stats(("l7__tls",))
                        c0 = cpu_seconds(agent.pid) if agent else 0.0
                        t0 = time.monotonic()
                        out[mode][scheme].append(wrk(url, secs))
                        if agent:
                            cpu[mode][scheme].append((cpu_seconds(agent.pid) - c0)
                                                     / (time.monotonic() - t0) * 100)
                        if stats:
                            _add_stats(bpf, before, prog_stats(("l7__tls",)))
                            open("/proc/sys/kernel/bpf_stats_enabled", "w").write(old)
                finally:
                    if agent is not None:
                        stop_agent(agent)
    finally:
        open("/proc/sys/kernel/bpf_stats_enabled", "w").write(old)
        nginx.stop()
    med = {m: {s: round(statistics.median(v)) for s, v in x.items()} for m, x in out.items()}
    cpu_med = {m: {s: round(statistics.median(v), 1) for s, v in x.items()} for m, x in cpu.items()}

    def loss(a, b):
        return round((a - b) / a * 100, 2)
    # entry programs count the calls; their time and the return programs' is the cost
    calls = sum(c for k, (_, c) in bpf.items() if "_ret" not in k and "other" not in k)
    ns = sum(t for k, (t, _) in bpf.items() if "other" not in k)
    return {"rounds": n, "seconds": secs, "req_s": out, "median": med, "agent_cpu_pct": cpu_med,
            "loss_pct": {m: {s: loss(med["none"][s], med[m][s]) for s in SCHEMES}
                         for m in MODES if m != "none"},
            "ssl_calls": calls, "bpf_ns_per_ssl_call": round(ns / calls, 1) if calls else None,
            "programs": {k: {"run_time_ns": t, "run_cnt": c} for k, (t, c) in bpf.items()}}


MEMBIO = textwrap.dedent('''
    import ssl, sys, time
    cert, key, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(cert, key)
    cctx = ssl._create_unverified_context()
    b = [ssl.MemoryBIO() for _ in range(4)]
    s = sctx.wrap_bio(b[0], b[1], server_side=True)
    c = cctx.wrap_bio(b[2], b[3], server_hostname="x")
    for _ in range(20):
        for o in (c, s):
            try:
                o.do_handshake()
            except ssl.SSLWantReadError:
                pass
        b[0].write(b[3].read())
        b[2].write(b[1].read())
    msg = b"x" * 64
    t = time.process_time()
    for _ in range(n):
        c.write(msg)
        b[0].write(b[3].read())
        s.read(64)
    print((time.process_time() - t) / n * 1e9)
''')


def call_cost(rounds: int, n: int) -> dict:
    """CPU ns per write+read pair: no probes, probes on the exported entries,
    probes where vigil puts them."""
    from vigil.events import Kind
    from vigil.kernel.sensors import SensorManager
    from vigil.l7 import tls_libs
    d = tempfile.mkdtemp(prefix="vigil-tls-")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-keyout", f"{d}/key.pem", "-out", f"{d}/cert.pem"],
                   check=True, capture_output=True)

    def child() -> float:
        r = subprocess.run([sys.executable, "-c", MEMBIO, f"{d}/cert.pem", f"{d}/key.pem",
                            str(n)], capture_output=True, text=True, check=True)
        return float(r.stdout)
    real = tls_libs.internal_calls
    out = {"none": [], "exported": [], "internal": []}
    try:
        for r in range(rounds):
            for mode in (out if r % 2 == 0 else tuple(reversed(out))):
                if mode == "none":
                    out[mode].append(child())
                    continue
                tls_libs.internal_calls = real if mode == "internal" else (lambda *a: {})
                m = SensorManager({Kind.L7}, l7_connections=4096).start()
                try:
                    out[mode].append(child())
                finally:
                    m.stop()
    finally:
        tls_libs.internal_calls = real
        shutil.rmtree(d, ignore_errors=True)
    med = {k: round(statistics.median(v)) for k, v in out.items()}
    return {"rounds": rounds, "pairs": n, "cpu_ns_per_pair": out, "median": med,
            "us_per_call": {k: round((med[k] - med["none"]) / 2 / 1000, 2)
                            for k in ("exported", "internal")}}


def render(res: dict) -> str:
    w = res["wrk"]
    head = (f"## TLS uprobes (bench_tls.py)\n\n`{res['command']}` on {os.cpu_count()} CPUs "
            "(shared; other work was running).\n\n")
    if "skipped" in w:
        return head + f"Skipped: {w['skipped']}\n"
    m, loss, cpu = w["median"], w["loss_pct"], w["agent_cpu_pct"]
    cc = res["calls"]

    def cell(mode, scheme):
        t = f"{m[mode][scheme]:,}"
        if mode != "none":
            t += f" ({-loss[mode][scheme]:+.1f}%; agent {cpu[mode][scheme]}% CPU)"
        return t
    rows = [("no agent", "none"), ("vigil run, L7 (http), `l7.tls: false`", "l7_no_tls"),
            ("vigil run, L7 (http) and TLS", "l7_tls")]
    table = "\n".join(f"| {label} | {cell(mode, 'https')} | {cell(mode, 'http')} |"
                      for label, mode in rows)
    return head + f"""CPU per SSL call, a Python child's process time per SSL write + read pair
over memory BIOs (no sockets, nothing sent up: the probes' own cost), {cc['pairs']:,}
pairs, {cc['rounds']} alternated rounds, medians:

| probes | CPU per pair | added per SSL call |
| --- | --- | --- |
| none | {cc['median']['none']:,} ns | |
| on the exported SSL_write_ex / SSL_read_ex (first instruction single-stepped) | {cc['median']['exported']:,} ns | {cc['us_per_call']['exported']} µs |
| on ssl_write_internal / ssl_read_internal (vigil's; first instruction emulated) | {cc['median']['internal']:,} ns | {cc['us_per_call']['internal']} µs |

BPF time per SSL_read/SSL_write call (entry + return programs, wrk's and nginx's
calls; `run_time_ns / run_cnt` with `kernel.bpf_stats_enabled=1`):
**{w['bpf_ns_per_ssl_call']} ns** over {w['ssl_calls']:,} calls.

wrk -t1 -c20 (keep-alive) against one nginx `return 200` over HTTPS and over plain
HTTP, req/s, {w['rounds']} alternated rounds of {w['seconds']} s each, medians (change vs
no agent; the agent's CPU while wrk ran):

| agent | HTTPS | plain HTTP |
| --- | --- | --- |
{table}

Reading: the probes' own cost is the first table (an uprobe hit at an emulated
instruction about 1 µs here, at a single-stepped one about 10 µs: why vigil probes
ssl_*_internal).  With `l7.tls: false` the agent spends next to nothing on HTTPS
(its encrypted bytes are given up on after a few chunks).  With TLS on, each request
is paired in user space as plaintext HTTP is (the plain HTTP column), and each SSL
read or write traps twice (entry and return).  Each HTTPS request made about
{w['ssl_calls'] / max(1, sum(w['req_s']['l7_tls']['https']) * w['seconds']):.1f}
probed calls (an SSL write and an SSL read on each side, plus wrk's reads that find
nothing).  The throughput rows move with this shared 2-core machine's load (wrk,
nginx and the agent share the 2 CPUs with other jobs; load average 8-11 during these
runs): differences of tens of percent between rounds of one row were common.
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    C.need_root()
    res = {"machine": C.machine(), "command": C.command_line(), "quick": a.quick,
           "calls": call_cost(2 if a.quick else 5, 20000 if a.quick else 100000),
           "wrk": rounds(2 if a.quick else 5, 3 if a.quick else 5)}
    md = render(res)
    C.write_results("tls", res, md)
    print(md)


if __name__ == "__main__":
    main()
