"""Network sensor against the real kernel: connect, accept, listen, bind, close."""
import errno
import subprocess
import sys

import pytest

from conftest import closed_port, tcp_listener
from vigil.events import Kind

NET_KINDS = {Kind.CONNECT, Kind.ACCEPT, Kind.LISTEN, Kind.BIND, Kind.CLOSE}


@pytest.fixture(scope="module")
def net(start_pipeline):
    c = start_pipeline(NET_KINDS)
    yield c
    c.stop()


def child(code: str):
    """Run python code in a child; returns (pid, last stdout line split)."""
    p = subprocess.run([sys.executable, "-c", "import os, socket, sys\n" + code],
                       capture_output=True, text=True, timeout=20)
    assert p.returncode == 0, p.stderr
    out = p.stdout.strip().splitlines()[-1].split()
    return int(out[0]), out[1:]


def by(c, kind, pid, count=1):
    return c.wait_for(lambda e: e.kind == kind and e.pid == pid, count=count)


SERVER = """
fam = socket.AF_INET6 if {v6} else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM)
s.bind(({host!r}, 0))
s.listen(4)
port = s.getsockname()[1]
c = socket.socket(fam, socket.SOCK_STREAM)
c.connect(({host!r}, port))
a, peer = s.accept()
cport = c.getsockname()[1]
c.close(); a.close(); s.close()
print(os.getpid(), port, cport, s.fileno() if False else 0)
"""


def test_tcp_connect_accept_listen_bind_close_ipv4(net):
    # one process both listens and connects, so its pid identifies every event
    pid, (port, cport, _) = child(SERVER.format(v6=False, host="127.0.0.1"))
    port, cport = int(port), int(cport)

    bind = by(net, Kind.BIND, pid)[0]
    assert (bind.family, bind.saddr, bind.sport, bind.ret) == ("AF_INET", "127.0.0.1", 0, 0)
    assert bind.proto == "tcp" and bind.syscall == "bind"

    listen = by(net, Kind.LISTEN, pid)[0]
    assert listen.ret == 0 and listen.fd == bind.fd
    assert (listen.family, listen.proto, listen.saddr, listen.sport) == ("AF_INET", "tcp", "127.0.0.1", port)

    conn = by(net, Kind.CONNECT, pid)[0]
    assert conn.family == "AF_INET" and conn.proto == "tcp"
    assert (conn.daddr, conn.dport) == ("127.0.0.1", port)
    assert (conn.saddr, conn.sport) == ("127.0.0.1", cport)
    assert conn.ret == 0 and conn.syscall == "connect"

    acc = by(net, Kind.ACCEPT, pid)[0]
    assert acc.syscall in ("accept", "accept4")
    assert (acc.saddr, acc.sport) == ("127.0.0.1", port)     # listener side
    assert (acc.daddr, acc.dport) == ("127.0.0.1", cport)    # the client
    assert acc.fd == acc.ret and acc.ret >= 0
    assert acc.proto == "tcp"

    # closes of the three tracked sockets: connected client, accepted, listener
    closes = by(net, Kind.CLOSE, pid, count=3)
    assert sorted(e.fd for e in closes) == sorted([conn.fd, acc.fd, listen.fd])
    c_close = [e for e in closes if e.fd == conn.fd][0]
    assert (c_close.daddr, c_close.dport, c_close.sport) == ("127.0.0.1", port, cport)
    assert all(e.ret == 0 for e in closes)


def test_tcp_ipv6_loopback(net):
    pid, (port, cport, _) = child(SERVER.format(v6=True, host="::1"))
    port, cport = int(port), int(cport)
    conn = by(net, Kind.CONNECT, pid)[0]
    assert conn.family == "AF_INET6"
    assert (conn.daddr, conn.dport, conn.saddr, conn.sport, conn.ret) == ("::1", port, "::1", cport, 0)
    acc = by(net, Kind.ACCEPT, pid)[0]
    assert acc.family == "AF_INET6"
    assert (acc.saddr, acc.sport, acc.daddr, acc.dport) == ("::1", port, "::1", cport)
    bind = by(net, Kind.BIND, pid)[0]
    assert (bind.family, bind.saddr) == ("AF_INET6", "::1")


def test_client_in_child_against_our_listener(net):
    """The listener lives in the test process (ignored); the client child is reported."""
    srv, port = tcp_listener()
    try:
        pid, (cport,) = child(f"c = socket.create_connection(('127.0.0.1', {port}))\n"
                              "print(os.getpid(), c.getsockname()[1])\n")
        a, peer = srv.accept()
        a.close()
    finally:
        srv.close()
    conn = by(net, Kind.CONNECT, pid)[0]
    assert (conn.daddr, conn.dport, conn.sport, conn.ret) == ("127.0.0.1", port, int(cport), 0)
    assert peer[1] == int(cport)
    net.settle(0.1)
    assert net.find(lambda e: e.kind == Kind.ACCEPT and e.sport == port) == []


def test_refused_connect(net):
    closed = closed_port()
    pid, _ = child(f"c = socket.socket()\n"
                   f"r = c.connect_ex(('127.0.0.1', {closed}))\n"
                   "assert r == 111, r\nc.close()\nprint(os.getpid())\n")
    conn = by(net, Kind.CONNECT, pid)[0]
    assert conn.ret == -errno.ECONNREFUSED == -111
    assert (conn.daddr, conn.dport) == ("127.0.0.1", closed)
    # a failed connect does not make the socket tracked: no close event
    net.settle(0.1)
    assert net.find(lambda e: e.kind == Kind.CLOSE and e.pid == pid) == []


def test_nonblocking_connect_einprogress(net):
    srv, port = tcp_listener()
    try:
        pid, _ = child(f"c = socket.socket()\nc.setblocking(False)\n"
                       f"r = c.connect_ex(('127.0.0.1', {port}))\n"
                       "print(os.getpid(), r)\n")
    finally:
        srv.close()
    conn = by(net, Kind.CONNECT, pid)[0]
    assert conn.ret in (0, -errno.EINPROGRESS)
    assert conn.dport == port


def test_udp_connect(net):
    pid, (sport,) = child("u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                          "u.connect(('127.0.0.1', 9999))\n"
                          "print(os.getpid(), u.getsockname()[1])\nu.close()\n")
    conn = by(net, Kind.CONNECT, pid)[0]
    assert (conn.family, conn.proto, conn.daddr, conn.dport, conn.ret) == \
        ("AF_INET", "udp", "127.0.0.1", 9999, 0)
    assert conn.sport == int(sport)
    close = by(net, Kind.CLOSE, pid)[0]
    assert close.fd == conn.fd and close.proto == "udp"


def test_unix_socket_connect(net, tmp_path):
    path = str(tmp_path / "sock")
    pid, _ = child(f"s = socket.socket(socket.AF_UNIX)\ns.bind({path!r})\ns.listen(1)\n"
                   f"c = socket.socket(socket.AF_UNIX)\nc.connect({path!r})\nprint(os.getpid())\n")
    conn = by(net, Kind.CONNECT, pid)[0]
    assert conn.family == "AF_UNIX"
    assert conn.path == path
    assert conn.ret == 0
    bind = by(net, Kind.BIND, pid)[0]
    assert (bind.family, bind.path) == ("AF_UNIX", path)
