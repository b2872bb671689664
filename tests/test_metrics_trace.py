"""`vigil trace biolatency|runqlat|syscount|tcpconnlat|tcplife|tcpretrans`:
what BCC's namesakes print, from real I/O, scheduling, syscalls and sockets."""
import os
import re
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

from conftest import VIGIL


def start(tool, *args):
    return subprocess.Popen([VIGIL, "trace", tool, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_header(p, marker: str, timeout=30):
    """Lines until the header (the programs are attached once it is printed)."""
    lines = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = p.stdout.readline()
        if not line:
            break
        lines.append(line)
        if marker in line:
            return lines
    raise AssertionError(f"no header {marker!r}: {lines} {p.stderr.read()}")


def finish(p, timeout=30):
    out, err = p.communicate(timeout=timeout)
    assert p.returncode == 0, err
    assert "Traceback" not in err
    return out


HIST_ROW = re.compile(r"^\s+(\d+) -> (\d+)\s+: (\d+)\s+\|(\**)\s*\|$")


def hist_rows(text):
    return [tuple(int(x) for x in m.groups()[:3]) for m in map(HIST_ROW.match, text.splitlines())
            if m]


def test_biolatency_histogram_after_fsynced_writes(bpf_objects):
    p = start("biolatency", "--duration", "3")
    wait_header(p, "Tracing block device I/O")
    path = Path("/var/tmp") / f"vigil-bio-{uuid.uuid4().hex}"
    try:
        for _ in range(5):
            with open(path, "wb") as f:
                f.write(os.urandom(1 << 18))
                f.flush()
                os.fsync(f.fileno())
    finally:
        path.unlink()
    out = finish(p)
    assert "usecs" in out and "distribution" in out
    rows = hist_rows(out)
    assert sum(n for _, _, n in rows) >= 5, out
    # log2 ranges: 0 -> 1, 2 -> 3, 4 -> 7 ...
    assert rows[0][:2] == (0, 1) and all(hi == 2 * lo - 1 for lo, hi, _ in rows[1:])


def test_runqlat_prints_every_interval(bpf_objects):
    p = start("runqlat", "--interval", "1", "--duration", "2.5")
    wait_header(p, "Tracing run queue latency")
    out = finish(p)
    assert len(re.findall(r"^\d\d:\d\d:\d\d$", out, re.M)) >= 2, out
    assert sum(n for _, _, n in hist_rows(out)) > 0


def test_syscount_counts_a_known_syscall(bpf_objects):
    p = start("syscount", "--duration", "3", "--latency")
    wait_header(p, "Tracing syscalls")
    for _ in range(20000):
        os.getppid()
    out = finish(p)
    m = re.search(r"^getppid\s+(\d+)\s+([\d.]+)$", out, re.M)
    assert m and int(m.group(1)) >= 20000, out
    assert "SYSCALL" in out and "COUNT" in out and "TIME (us)" in out


def _connects(n, payload=0):
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]

    def serve():
        for _ in range(n):
            c, _ = srv.accept()
            with c:
                while c.recv(65536):
                    pass
    t = threading.Thread(target=serve)
    t.start()
    for _ in range(n):
        c = socket.create_connection(("127.0.0.1", port))
        if payload:
            c.sendall(b"y" * payload)
        c.close()
    t.join(10)
    srv.close()
    return port


def test_tcpconnlat_one_line_per_connect(bpf_objects):
    p = start("tcpconnlat", "--duration", "3")
    wait_header(p, "LAT(ms)")
    port = _connects(4)
    out = finish(p)
    rows = [line.split() for line in out.splitlines() if line.split()[-2:-1] == [str(port)]]
    assert len(rows) == 4, out
    assert all(r[3] == "127.0.0.1" and float(r[-1]) < 1000 for r in rows)


def test_tcplife_bytes_and_ports(bpf_objects):
    p = start("tcplife", "--duration", "3")
    wait_header(p, "RX_KB")
    port = _connects(2, payload=64 * 1024)
    out = finish(p)
    client = [r.split() for r in out.splitlines() if r.split()[5:6] == [str(port)]]
    server = [r.split() for r in out.splitlines() if r.split()[3:4] == [str(port)]]
    assert len(client) == 2 and len(server) == 2, out
    assert all(int(r[6]) >= 63 for r in client)        # TX_KB of the sender
    assert all(int(r[7]) >= 63 for r in server)        # RX_KB of the receiver


def test_tcpretrans_header(bpf_objects):
    out = subprocess.run([VIGIL, "trace", "tcpretrans", "--duration", "1"], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[:7] == ["TIME", "PID", "IP", "LADDR:LPORT", "T>", "RADDR:RPORT",
                                       "STATE"]
