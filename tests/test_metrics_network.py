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

import json
import re

import dns.message
import yaml
import dns.rcode
import pytest

from podman_env import V2
from prom_env import PROMETHEUS, PROMTOOL, Prometheus, VigilAgent, free_port

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
    rules.write_text("- rule: marker\n  desc: x\n  condition: evt.type = execve and "
                     "proc.name = true and proc.args contains metrics-marker\n  output: x\n"
                     "  priority: NOTICE\n")
    agent = VigilAgent(["-r", str(rules), "-o", f"sensors.dns_ports=[53,{dns_srv.port}]"])
    prom = Prometheus([agent.address])
    cid = uuid.uuid4().hex + uuid.uuid4().hex
    cg = Path(V2) / "vigiltest.slice" / f"docker-{cid}.scope"
    cg.parent.mkdir(exist_ok=True)
    try:            # the container's memory.current and cpu.stat
        (cg.parent / "cgroup.subtree_control").write_text("+memory +cpu")
    except OSError:
        pass
    cg.mkdir()
    v1mem = Path("/sys/fs/cgroup/memory/vigiltest.slice") / cg.name     # hybrid hosts
    if Path("/sys/fs/cgroup/memory").is_dir() and not (Path(V2) / "memory.stat").exists():
        v1mem.mkdir(parents=True, exist_ok=True)
    closed = free_port()
    try:
        r = subprocess.run([sys.executable, str(WORKLOAD), str(cg), str(sink.port), str(closed),
                            str(dns_srv.port), str(N), str(M), ",".join(NAMES), str(BYTES)],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        for _ in range(3):
            subprocess.run(["true", "metrics-marker"])
        yield {"prom": prom, "agent": agent, "cid": cid[:12], "sink": sink.port,
               "closed": closed, "dns": dns_srv, "received": sink.received}
    finally:
        prom.stop()
        agent.stop()
        dns_srv.close()
        for d in (cg, cg.parent, v1mem, v1mem.parent):
            if not d.exists():
                continue
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


ROOT = Path(__file__).resolve().parent.parent
METRIC = re.compile(r"\b((?:vigil|process)_[a-z0-9_]+)")


def _dashboard_exprs():
    d = json.loads((ROOT / "deploy/grafana/vigil.json").read_text())
    exprs = [(p["title"], t["expr"]) for p in d["panels"] if p.get("type") != "row"
             for t in p["targets"]]
    variables = {v["name"]: v for v in d["templating"]["list"]}
    return d, exprs, variables


def _concrete(expr: str) -> str:
    """As Grafana sends it with every namespace and pod selected."""
    return (expr.replace("$__rate_interval", "30s").replace("$namespace", ".*")
            .replace("$pod", ".*"))


def test_dashboard_variables_and_datasource():
    d, exprs, variables = _dashboard_exprs()
    assert variables["datasource"]["type"] == "datasource"
    assert {"namespace", "pod"} <= set(variables)
    assert all(p["datasource"]["uid"] == "${datasource}" for p in d["panels"]
               if p.get("type") != "row")
    titles = " ".join(t for t, _ in exprs).lower()
    for what in ("alerts", "lost", "tcp", "dns", "packets", "block i/o", "run-queue",
                 "agent cpu", "agent rss"):
        assert what in titles, what


def test_every_dashboard_expression_returns_data(setup):
    p = setup["prom"]
    time.sleep(3)           # a few more scrapes: rate() over 30s wants two samples
    _, exprs, variables = _dashboard_exprs()
    empty = [(t, e) for t, e in exprs if not p.query(_concrete(e))]
    assert not empty, empty
    for name in ("namespace", "pod"):
        q = variables[name]["query"]["query"]
        metric = METRIC.search(q).group(1)
        assert p.query(f"count({metric})"), q


def _alert_rules():
    doc = yaml.safe_load((ROOT / "deploy/prometheus/vigil-alerts.yaml").read_text())
    return [r for g in doc["groups"] for r in g["rules"]]


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed")
def test_alert_rules_pass_promtool():
    r = subprocess.run([PROMTOOL, "check", "rules",
                        str(ROOT / "deploy/prometheus/vigil-alerts.yaml")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    names = {x["alert"] for x in _alert_rules()}
    assert names == {"VigilEventsLost", "VigilAgentDown", "VigilHighConnectFailures"}


def test_every_alert_expression_evaluates_on_exported_metrics(setup):
    """Each alert's expression is valid PromQL on the live server, and every
    metric it names has data (an alert on a metric vigil does not export
    would never fire); without its threshold it returns data."""
    p = setup["prom"]
    for rule in _alert_rules():
        expr = rule["expr"]
        p.query(expr)                       # raises unless the server accepts it
        for metric in set(METRIC.findall(expr)):
            assert p.query(f"count({metric})"), (rule["alert"], metric)
        base = re.split(r"\s(?:>|==)\s", expr)[0]
        assert p.query(base), (rule["alert"], base)
