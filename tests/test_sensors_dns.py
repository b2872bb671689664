"""DNS sensor against the real kernel: queries sent with sendto, sendmsg and
sendmmsg to a tiny UDP responder on 127.0.0.1, name and type decoded."""
import socket
import struct
import subprocess
import sys
import threading
import uuid

import pytest

from vigil.events.decode import parse_dns_query
from vigil.events import Kind


def build_query(name: str, qtype: int, qid: int = 0x1234) -> bytes:
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.split("."):
        q += bytes([len(label)]) + label.encode()
    return q + b"\0" + struct.pack(">HH", qtype, 1)


class Responder:
    """Answers every query with an empty NOERROR response."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self.sock.bind(("127.0.0.1", 53))
        except OSError:
            self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.sock.settimeout(0.2)
        self.seen = []
        self._stop = False
        self.t = threading.Thread(target=self._serve, daemon=True)
        self.t.start()

    def _serve(self):
        while not self._stop:
            try:
                data, addr = self.sock.recvfrom(2048)
            except socket.timeout:
                continue
            except OSError:
                return
            self.seen.append(data)
            resp = bytearray(data)
            resp[2] |= 0x80
            self.sock.sendto(bytes(resp), addr)

    def close(self):
        self._stop = True
        self.t.join(2)
        self.sock.close()


@pytest.fixture(scope="module")
def responder():
    r = Responder()
    yield r
    r.close()


@pytest.fixture(scope="module")
def dns(start_pipeline, responder):
    ports = (responder.port,) if responder.port == 53 else (53, responder.port)
    c = start_pipeline({Kind.DNS}, dns_ports=ports)
    yield c
    c.stop()


SENDER = r"""
import ctypes, os, socket, struct, sys
port = int(sys.argv[1]); tag = sys.argv[2]
def q(name, qtype, qid):
    b = struct.pack('>HHHHHH', qid, 0x0100, 1, 0, 0, 0)
    for l in name.split('.'):
        b += bytes([len(l)]) + l.encode()
    return b + b'\0' + struct.pack('>HH', qtype, 1)
dst = ('127.0.0.1', port)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
s.sendto(q('sendto.' + tag + '.example', 1, 1), dst); s.recv(512)
s.sendmsg([q('sendmsg.' + tag + '.example', 28, 2)], [], 0, dst); s.recv(512)

# sendmmsg on a connected socket: two datagrams in one call (like glibc's A+AAAA)
c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
c.settimeout(2)
c.connect(dst)
class iovec(ctypes.Structure):
    _fields_ = [('base', ctypes.c_void_p), ('len', ctypes.c_size_t)]
class msghdr(ctypes.Structure):
    _fields_ = [('name', ctypes.c_void_p), ('namelen', ctypes.c_uint32), ('iov', ctypes.POINTER(iovec)),
                ('iovlen', ctypes.c_size_t), ('control', ctypes.c_void_p), ('controllen', ctypes.c_size_t),
                ('flags', ctypes.c_int)]
class mmsghdr(ctypes.Structure):
    _fields_ = [('hdr', msghdr), ('len', ctypes.c_uint)]
libc = ctypes.CDLL(None, use_errno=True)
bufs = [ctypes.create_string_buffer(q('mx.' + tag + '.example', 15, 3)),
        ctypes.create_string_buffer(q('aaaa.' + tag + '.example', 28, 4))]
iovs = [iovec(ctypes.cast(b, ctypes.c_void_p), len(b.raw) - 1) for b in bufs]
msgs = (mmsghdr * 2)()
for i in range(2):
    msgs[i].hdr.iov = ctypes.pointer(iovs[i]); msgs[i].hdr.iovlen = 1
n = libc.sendmmsg(c.fileno(), msgs, 2, 0)
assert n == 2, ctypes.get_errno()
c.recv(512); c.recv(512)
# write() on the connected socket (busybox nslookup, Go's resolver)
os.write(c.fileno(), q('write.' + tag + '.example', 16, 6)); c.recv(512)
# a datagram to a port that is not DNS is not reported
s.sendto(q('notdns.' + tag + '.example', 1, 5), ('127.0.0.1', 9))
print(os.getpid())
"""


def test_queries_sendto_sendmsg_sendmmsg(dns, responder):
    tag = uuid.uuid4().hex[:8]
    p = subprocess.run([sys.executable, "-c", SENDER, str(responder.port), tag],
                       capture_output=True, text=True, timeout=20)
    assert p.returncode == 0, p.stderr
    pid = int(p.stdout.split()[-1])
    evs = dns.wait_for(lambda e: e.kind == Kind.DNS and e.pid == pid, count=5)
    dns.settle(0.1)
    evs = dns.find(lambda e: e.kind == Kind.DNS and e.pid == pid)
    got = [(e.syscall, e.query, e.qtype) for e in evs]
    assert got == [
        ("sendto", f"sendto.{tag}.example", "A"),
        ("sendmsg", f"sendmsg.{tag}.example", "AAAA"),
        ("sendmmsg", f"mx.{tag}.example", "MX"),
        ("sendmmsg", f"aaaa.{tag}.example", "AAAA"),
        ("write", f"write.{tag}.example", "TXT"),
    ]
    for e in evs:
        assert (e.family, e.daddr, e.dport, e.proto) == ("AF_INET", "127.0.0.1", responder.port, "udp")
        assert e.comm.startswith("python")
    assert len(responder.seen) >= 5


def test_set_dns_ports_changes_what_is_decoded(dns, responder):
    tag = uuid.uuid4().hex[:8]
    dns.sensors.set_dns_ports([9])
    try:
        p = subprocess.run([sys.executable, "-c", SENDER, str(responder.port), tag],
                           capture_output=True, text=True, timeout=20)
        assert p.returncode == 0, p.stderr
        pid = int(p.stdout.split()[-1])
        evs = dns.wait_for(lambda e: e.kind == Kind.DNS and e.pid == pid)
        dns.settle(0.1)
        evs = dns.find(lambda e: e.kind == Kind.DNS and e.pid == pid)
        assert [(e.query, e.dport) for e in evs] == [(f"notdns.{tag}.example", 9)]
    finally:
        ports = (responder.port,) if responder.port == 53 else (53, responder.port)
        dns.sensors.set_dns_ports(ports)


def test_parse_dns_query_unit():
    assert parse_dns_query(build_query("a.b.example", 15)) == ("a.b.example", "MX")
    assert parse_dns_query(build_query("x.example", 999)) == ("x.example", "999")
    assert parse_dns_query(b"\0" * 10) == (None, None)
    # compression pointer in a question is not followed
    bad = build_query("x.example", 1)[:12] + b"\xc0\x0c" + b"\0\x01\0\x01"
    assert parse_dns_query(bad) == (None, None)
    # truncated mid-label
    assert parse_dns_query(build_query("abcdef.example", 1)[:16]) == (None, None)
