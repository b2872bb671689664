"""`vigil top` in a real terminal (tmux): a process we start -- named, holding three
TCP connections, reading /dev/zero in a loop -- shows with its pid, three
connections, CPU, syscalls and bytes; keys sort, group and quit.  Its HTTP columns
with real traffic under an agent: tests/test_service_map.py."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import threading

import pytest

from conftest import VIGIL, closed_port
from tui_env import TMUX, Tmux

PROBE = textwrap.dedent("""
    import ctypes, os, socket, sys
    ctypes.CDLL(None).prctl(15, b"topprobe", 0, 0, 0)
    conns = [socket.create_connection(("127.0.0.1", int(sys.argv[1]))) for _ in range(3)]
    print("ready", flush=True)
    fd = os.open("/dev/zero", os.O_RDONLY)
    while True:
        os.read(fd, 4096)
""")


@pytest.fixture(scope="module")
def probe():
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(8)
    held = []
    t = threading.Thread(target=lambda: [held.append(lst.accept()[0]) for _ in range(3)],
                         daemon=True)
    t.start()
    p = subprocess.Popen([sys.executable, "-c", PROBE, str(lst.getsockname()[1])],
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    t.join(10)
    yield p
    p.kill()
    p.wait()
    for s in held:
        s.close()
    lst.close()


def row_of(screen: str, pid: int):
    for line in screen.splitlines():
        f = line.split()
        if f and f[0] == str(pid):
            return f
    return None


@pytest.mark.skipif(not TMUX, reason="tmux not installed")
def test_live_view_in_a_terminal(probe):
    url = f"127.0.0.1:{closed_port()}"          # no agent: /proc columns only
    term = Tmux([VIGIL, "top", "--metrics-url", url, "--sort", "cpu"])
    try:
        s = term.wait_for(lambda s: row_of(s, probe.pid) is not None)
        f = row_of(s, probe.pid)
        assert f is not None, s
        # PID NAME NAMESPACE CONTAINER CPU% SYSC/s CONNS BYTES/s HTTP/s ERR% P50 P99
        assert f[1:4] == ["topprobe", "-", "host"], f
        assert float(f[4]) > 5 and float(f[5]) > 100 and f[6] == "3", f
        assert f[7].endswith(("KiB", "MiB", "GiB")) and f[8:] == ["-"] * 4, f
        assert "sorted by cpu" in s and "not answering" in s
        term.keys("n")
        s = term.wait_for(lambda s: "sorted by conns" in s)
        assert "sorted by conns" in s, s
        term.keys("g")
        s = term.wait_for(lambda s: "containers," in s and "PROCS" in s)
        host = [line.split() for line in s.splitlines() if " host " in f" {line} "]
        assert host and int(host[0][0]) >= 2, s      # the probe and pytest at least
        term.keys("q")
        term.wait_for(lambda s: term.dead(), timeout=10)
        assert term.dead()
    finally:
        term.close()


@pytest.mark.skipif(not TMUX, reason="tmux not installed")
def test_ctrl_c_leaves_quietly():
    term = Tmux([VIGIL, "top", "--metrics-url", f"127.0.0.1:{closed_port()}"])
    try:
        assert "vigil top:" in term.wait_for(lambda s: "vigil top:" in s)
        term.keys("C-c")
        term.wait_for(lambda s: term.dead(), timeout=10)
        assert term.dead() and "Traceback" not in term.screen()
    finally:
        term.close()


def test_once_json_and_namespace_filter(probe):
    url = f"127.0.0.1:{closed_port()}"
    r = subprocess.run([VIGIL, "top", "--once", "--json", "--interval", "500ms",
                        "--metrics-url", url, "--sort", "conns"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    rows = {x["pid"]: x for x in json.loads(r.stdout)}
    me = rows[probe.pid]
    assert (me["name"], me["container"], me["connections"]) == ("topprobe", "host", 3)
    assert me["syscalls_per_second"] > 100 and me["http_requests"] == 0
    r = subprocess.run([VIGIL, "top", "--once", "--json", "--interval", "200ms",
                        "--metrics-url", url, "--namespace", "no-such-namespace"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and json.loads(r.stdout) == [], r.stdout + r.stderr


def test_bad_options_are_one_line_errors():
    r = subprocess.run([VIGIL, "top", "--json"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "--json goes with --once" in r.stderr
    r = subprocess.run([VIGIL, "top", "--interval", "soon"], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 2 and "not a duration" in r.stderr


def test_an_agent_without_l7_is_told_apart(probe):
    from prometheus_client import CollectorRegistry

    from vigil.metrics.server import MetricsServer
    srv = MetricsServer(CollectorRegistry(), lambda: True, f"127.0.0.1:{closed_port()}").start()
    try:
        r = subprocess.run([VIGIL, "top", "--once", "--interval", "200ms", "-n", "3",
                            "--metrics-url", srv.address], capture_output=True, text=True,
                           timeout=60)
    finally:
        srv.stop()
    assert r.returncode == 0, r.stderr
    assert "answers without L7" in r.stdout and "not answering" not in r.stdout, r.stdout
