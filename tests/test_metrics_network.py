"""Network and DNS health per workload through a real Prometheus: a process in
a container-like cgroup (a docker scope: its own container_id label) makes N
successful and M refused TCP connects and K DNS queries with known rcodes
against local servers, then sends a known number of bytes; the counters are
exact, the connect-latency histogram counts N, and the packets it sent on lo
add up to the transfer within a small tolerance."""
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import dns.message
import dns.rcode
import pytest

from podman_env import V2
from prom_env import PROMETHEUS, Prometheus, VigilAgent, free_port

pytestmark = pytest.mark.skipif(PROMETHEUS is None or V2 is None,
                                reason="prometheus or cgroup v2 missing")

N, M = 7, 4
NAMES = ["ok1.test.", "ok2.test.", "nx1.test.", "ok3.test.", "nx2.test."]   # nx*: NXDOMAIN
BYTES = 1_000_000
WORKLOAD = Path(__file__).parent / "metrics_workload.py"


class DnsServer:
    """Answers every query: NXDOMAIN for names starting with nx, else NOERROR."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while True:
            try:
                data, peer = self.sock.recvfrom(4096)
            except OSError:
                return
            q = dns.message.from_wire(data)
            r = dns.message.make_response(q)
            if str(q.question[0].name).startswith("nx"):
                r.set_rcode(dns.rcode.NXDOMAIN)
            self.sock.sendto(r.to_wire(), peer)

    def close(self):
        self.sock.close()


class Sink:
    """A TCP listener that accepts everything and reads it all."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.received = 0
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.drain, args=(c,), daemon=True).start()

    def drain(self, c):
        with c:
            while True:
                b = c.recv(65536)
                if not b:
                    break
                self.received += len(b)
            try:
                c.sendall(b"k")
            except OSError:
                pass


@pytest.fixture(scope="module")
def setup(bpf_objects, tmp_path_factory):
    dns_srv, sink = DnsServer(), Sink()
    rules = tmp_path_factory.mktemp("r") / "r.yaml"
    rules.write_text("- rule: nothing\n  desc: x\n  condition: evt.type = execve and "
                     "proc.name = nothing-at-all\n  output: x\n  priority: DEBUG\n")
    agent = VigilAgent(["-r", str(rules), "-o", f"sensors.dns_ports=[53,{dns_srv.port}]"])
    prom = Prometheus([agent.address])
    cid = uuid.uuid4().hex + uuid.uuid4().hex
    cg = Path(V2) / "vigiltest.slice" / f"docker-{cid}.scope"
    cg.mkdir(parents=True)
    closed = free_port()
    try:
        r = subprocess.run([sys.executable, str(WORKLOAD), str(cg), str(sink.port), str(closed),
                            str(dns_srv.port), str(N), str(M), ",".join(NAMES), str(BYTES)],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        yield {"prom": prom, "agent": agent, "cid": cid[:12], "sink": sink.port,
               "closed": closed, "dns": dns_srv, "received": sink.received}
    finally:
        prom.stop()
        agent.stop()
        dns_srv.close()
        for d in (cg, cg.parent):
            for _ in range(50):
                try:
                    d.rmdir()
                    break
                except OSError:
                    time.sleep(0.1)


def _wait(prom, expr, want, timeout=30):
    v = prom.wait_for(expr, lambda x: x >= want, timeout)
    time.sleep(1.5)                # and it stays there: nothing counted twice
    return prom.value(expr)


def test_tcp_connects_are_exact(setup):
    p, cid = setup["prom"], setup["cid"]
    ok = f'sum(vigil_tcp_connects_total{{container_id="{cid}",result="success",' \
         f'destination="127.0.0.1:{setup["sink"]}"}})'
    assert _wait(p, ok, N + 1) == N + 1          # and the transfer's connection
    bad = f'sum(vigil_tcp_connects_total{{container_id="{cid}",result="refused",' \
          f'destination="127.0.0.1:{setup["closed"]}"}})'
    assert _wait(p, bad, M) == M
    assert p.value(f'sum(vigil_tcp_connects_total{{container_id="{cid}"}})') == N + 1 + M
    cnt = f'sum(vigil_tcp_connect_duration_seconds_count{{container_id="{cid}"}})'
    assert p.value(cnt) == N + 1
    # every connect on loopback takes well under a second
    le1 = f'sum(vigil_tcp_connect_duration_seconds_bucket{{container_id="{cid}",le="1.048576"}})'
    assert p.value(le1) == N + 1
    assert p.value(f'sum(vigil_tcp_active_connections{{container_id="{cid}"}})') == 0


def test_dns_requests_by_rcode_are_exact(setup):
    p, cid = setup["prom"], setup["cid"]
    ok = sum(1 for n in NAMES if not n.startswith("nx"))
    nx = len(NAMES) - ok
    e = f'sum(vigil_dns_requests_total{{container_id="{cid}",qtype="A",rcode="NOERROR"}})'
    assert _wait(p, e, ok) == ok
    e = f'sum(vigil_dns_requests_total{{container_id="{cid}",qtype="A",rcode="NXDOMAIN"}})'
    assert p.value(e) == nx
    e = f'sum(vigil_dns_request_duration_seconds_count{{container_id="{cid}"}})'
    assert p.value(e) == len(NAMES)


def test_packets_sent_on_lo_match_the_transfer(setup):
    p, cid = setup["prom"], setup["cid"]
    assert setup["received"] == BYTES
    e = f'sum(vigil_net_bytes_total{{container_id="{cid}",direction="transmit"}})'
    sent = _wait(p, e, BYTES)
    # the payload plus headers (TCP/IP/link ~ 66 bytes a packet) and the connects' handshakes
    pk = p.value(f'sum(vigil_net_packets_total{{container_id="{cid}",direction="transmit",'
                 f'interface="lo"}})')
    assert BYTES <= sent <= BYTES + pk * 100 + 20_000, (sent, pk)
    assert BYTES / 65536 <= pk <= BYTES / 500, pk
    # the size histogram counts every packet on lo
    h = p.value('sum(vigil_net_packet_size_bytes_count{interface="lo",direction="transmit"})')
    assert h >= pk
    assert p.value('sum(vigil_net_packets_total{interface="lo",direction="receive"})') > 0


def test_block_io_histogram_gains_samples_after_an_fsynced_write(setup, tmp_path):
    p = setup["prom"]
    expr = 'sum(vigil_block_io_duration_seconds_count{op="write"})'
    before = p.wait_for(expr, lambda v: True) or 0
    # on the node's disk (tmp_path may be on it; /var/tmp is)
    path = Path("/var/tmp") / f"vigil-bio-{uuid.uuid4().hex}"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, os.urandom(1 << 20))
        os.fsync(fd)
        os.close(fd)
    finally:
        path.unlink()
    after = p.wait_for(expr, lambda v: v > before)
    assert after > before
    # buckets are cumulative and end at the count
    inf = p.value('sum(vigil_block_io_duration_seconds_bucket{op="write",le="+Inf"})')
    assert inf == p.value(expr)


def test_runqueue_latency_is_counted_per_workload(setup):
    p = setup["prom"]
    v = p.wait_for('sum(vigil_runqueue_latency_seconds_count{container="host"})',
                   lambda x: x > 0)
    assert v > 0
