"""`vigil trace biolatency|runqlat|syscount|tcpconnlat|tcplife|tcpretrans`:
BCC's tools of those names, on vigil's metric programs (kernel/bpf/metrics):
log2 histograms printed as ASCII bars per ``--interval``, or one line per
connection / retransmit."""
from __future__ import annotations

import socket
import time

import click

from vigil.metrics import layouts as L
from vigil.metrics import names

# tool -> (metrics object key, what it prints)
TOOLS = {"biolatency": "block_io", "runqlat": "runqueue", "syscount": "syscalls",
         "tcpconnlat": "tcp", "tcplife": "tcp", "tcpretrans": "tcp"}
HIST_TOOLS = {"biolatency": ("block_io", "bio_lat", L.BioKey, "Tracing block device I/O"),
              "runqlat": ("runqueue", "runq_lat", None, "Tracing run queue latency")}
STARS = 40
TCP_STATES = {1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2",
              6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN",
              11: "CLOSING"}


def log2_hist_lines(slots, unit: str = "usecs") -> list:
    """BCC's print_log2_hist: one row per slot up to the last one used."""
    used = [i for i, n in enumerate(slots) if n]
    if not used:
        return []
    top = max(slots)
    lines = [f"{unit:>10}{'':<14} : count    distribution"]
    for i in range(0, used[-1] + 1):
        low, high = (0, 1) if i == 0 else (1 << i, (1 << (i + 1)) - 1)
        bar = "*" * int(slots[i] * STARS / top) if top else ""
        lines.append(f"{low:>10} -> {high:<10} : {slots[i]:<8} |{bar:<{STARS}}|")
    return lines


def _delta(now: list, before) -> list:
    return list(now) if before is None else [a - b for a, b in zip(now, before)]


def _peer(family, raw, port=None) -> str:
    if family == socket.AF_INET:
        addr = socket.inet_ntop(socket.AF_INET, bytes(raw[:4]))
    else:
        addr = socket.inet_ntop(socket.AF_INET6, bytes(raw[:16]))
    return addr if port is None else f"{addr}:{port}"


def _ticks(interval, duration):
    """Sleep interval by interval until duration (or Ctrl-C): yields once per interval."""
    end = time.monotonic() + duration if duration else None
    while True:
        step = interval
        if end is not None:
            step = min(step, end - time.monotonic())
            if step <= 0:
                return
        try:
            time.sleep(step)
        except KeyboardInterrupt:
            yield True
            return
        yield end is not None and time.monotonic() >= end


def run_hist_tool(km, tool: str, interval, duration, per_disk: bool) -> None:
    key, mapname, ktype, what = HIST_TOOLS[tool]
    click.echo(f"{what}... Hit Ctrl-C to end.")
    before: dict = {}
    for last in _ticks(interval or 1e9, duration):
        groups: dict = {}
        for k, h in km.histograms(key, mapname, ktype):
            g = names.block_device(k.dev) if (per_disk and ktype is L.BioKey) else ""
            acc = groups.setdefault(g, [0] * (L.HIST_SLOTS + 1))
            for i, x in enumerate(h):
                acc[i] += x
        click.echo()
        if interval:
            click.echo(time.strftime("%H:%M:%S"))
        for g in sorted(groups):
            d = _delta(groups[g], before.get(g))
            before[g] = groups[g]
            if g:
                click.echo(f"\ndisk = '{g}'")
            for line in log2_hist_lines(d[:L.HIST_SLOTS]):
                click.echo(line)
        if last:
            return


def run_syscount(km, interval, duration, top: int, latency: bool) -> None:
    click.echo(f"Tracing syscalls, printing top {top}... Ctrl+C to quit.")
    before: dict = {}
    for last in _ticks(interval or 1e9, duration):
        rows = []
        for nr, h in km.histograms("syscalls", "sc_lat"):
            d = _delta(h, before.get(nr))
            before[nr] = h
            n = sum(d[:L.HIST_SLOTS])
            if n:
                rows.append((n, d[L.HIST_SLOTS], names.syscall_name(nr)))
        rows.sort(key=lambda r: (-r[0], r[2]))
        click.echo(f"[{time.strftime('%H:%M:%S')}]")
        click.echo(f"{'SYSCALL':<22} {'COUNT':>8}" + (f" {'TIME (us)':>12}" if latency else ""))
        for n, ns, name in rows[:top]:
            click.echo(f"{name:<22} {n:>8}" + (f" {ns / 1000:>12.1f}" if latency else ""))
        click.echo()
        if last:
            return


def run_tcp_events(km, tool: str, duration) -> None:
    from vigil.kernel.ringbuf import RingBuffer
    m = km.map("tcp", "tcp_trace_ring")
    ring = RingBuffer(m.fd, m.max_entries)
    want = {"tcpconnlat": 1, "tcplife": 2, "tcpretrans": 3}[tool]
    if tool == "tcpconnlat":
        click.echo(f"{'PID':<7} {'COMM':<16} {'IP':<2} {'SADDR':<16} {'DADDR':<16} "
                   f"{'DPORT':<5} {'LAT(ms)':>8}")
    elif tool == "tcplife":
        click.echo(f"{'PID':<7} {'COMM':<12} {'LADDR':<15} {'LPORT':>5} {'RADDR':<15} "
                   f"{'RPORT':>5} {'TX_KB':>5} {'RX_KB':>5} {'MS':>8}")
    else:
        click.echo(f"{'TIME':<8} {'PID':<7} {'IP':<2} {'LADDR:LPORT':<22} T> "
                   f"{'RADDR:RPORT':<22} {'STATE':<12}")

    def on(rec):
        t = L.TcpTrace.from_buffer_copy(bytes(rec[:L.ctypes.sizeof(L.TcpTrace)]))
        if t.what != want:
            return
        ip = 4 if t.family == socket.AF_INET else 6
        comm = t.comm.decode(errors="replace")
        if tool == "tcpconnlat":
            if t.result != 0:
                return               # as BCC: only connections that were made
            click.echo(f"{t.pid:<7} {comm:<16} {ip:<2} {_peer(t.family, t.saddr):<16} "
                       f"{_peer(t.family, t.daddr):<16} {t.dport:<5} "
                       f"{t.duration_ns / 1e6:>8.2f}")
        elif tool == "tcplife":
            click.echo(f"{t.pid:<7} {comm[:12]:<12} {_peer(t.family, t.saddr):<15} "
                       f"{t.sport:>5} {_peer(t.family, t.daddr):<15} {t.dport:>5} "
                       f"{t.tx_bytes // 1024:>5} {t.rx_bytes // 1024:>5} "
                       f"{t.duration_ns / 1e6:>8.2f}")
        else:
            click.echo(f"{time.strftime('%H:%M:%S'):<8} {t.pid:<7} {ip:<2} "
                       f"{_peer(t.family, t.saddr, t.sport):<22} R> "
                       f"{_peer(t.family, t.daddr, t.dport):<22} "
                       f"{TCP_STATES.get(t.state, str(t.state)):<12}")

    end = time.monotonic() + duration if duration else None
    try:
        while end is None or time.monotonic() < end:
            ring.poll(on, 0.2)
    except KeyboardInterrupt:
        pass
    finally:
        ring.consume(on)
        ring.close()


def run_tool(tool: str, interval, duration, per_disk=False, top=10, latency=False) -> None:
    from vigil.cli.common import fail
    from vigil.metrics.kernel import KernelMetrics
    key = TOOLS[tool]
    km = KernelMetrics({}, only=[key], trace=key == "tcp").start()
    if key not in km.objects:
        fail(f"{tool}: the kernel programs could not be loaded ({'; '.join(km.errors)})")
    try:
        if tool in HIST_TOOLS:
            run_hist_tool(km, tool, interval, duration, per_disk)
        elif tool == "syscount":
            run_syscount(km, interval, duration, top, latency)
        else:
            run_tcp_events(km, tool, duration)
    except BrokenPipeError:
        pass
    finally:
        km.stop()
