"""The service map end to end: real podman containers (a busybox httpd server and a
wget client, labelled as pods), real host processes, real traffic; exact edge counts
through the agent's /metrics, `vigil services`, a real Prometheus (every dashboard
expression), and `vigil top`'s HTTP columns."""
from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid

import pytest

from conftest import VIGIL, closed_port
from prom_env import VigilAgent
from tui_env import TMUX, Tmux
from podman_env import make_rootfs, podman, poll, skip_reason

PODMAN_SKIP = skip_reason()


def pod_labels(pod, ns, container):
    return ["--label", f"io.kubernetes.pod.name={pod}", "--label",
            f"io.kubernetes.pod.namespace={ns}", "--label",
            f"io.kubernetes.container.name={container}"]


@pytest.fixture(scope="module")
def pods(tmp_path_factory):
    """A server pod (shop/web: busybox httpd on 8080) and a client pod (shop/shopper:
    sleeps; `podman exec` runs its requests), with their IPs."""
    if PODMAN_SKIP:
        pytest.skip(PODMAN_SKIP)
    root = make_rootfs(tmp_path_factory.mktemp("svc-rootfs"),
                       ("sh", "httpd", "wget", "sleep", "echo", "cat"), dirs=("www", "www/cgi-bin"))
    with open(f"{root}/www/index.html", "w") as f:
        f.write("hello\n")
    tag = uuid.uuid4().hex[:8]
    server, client = f"vigil-svc-web-{tag}", f"vigil-svc-shopper-{tag}"
    r = podman("run", "-d", "--name", server, *pod_labels("web", "shop", "httpd"), "--rootfs",
               root, "/bin/httpd", "-f", "-p", "8080", "-h", "/www")
    assert r.returncode == 0, r.stderr
    r = podman("run", "-d", "--name", client, *pod_labels("shopper", "shop", "wget"),
               "--rootfs", root, "/bin/sleep", "600")
    assert r.returncode == 0, r.stderr
    ips = {n: podman("inspect", "-f", "{{.NetworkSettings.IPAddress}}", n).stdout.strip()
           for n in (server, client)}
    try:
        yield {"server": server, "client": client, "server_ip": ips[server],
               "client_ip": ips[client], "rootfs": root}
    finally:
        podman("rm", "-f", "-t", "0", server, client)


def test_a_peer_ip_on_this_node_names_its_pod(pods):
    from vigil.l7.identity import Identities
    from vigil.state.containers.resolver import ContainerResolver
    with ContainerResolver() as r:
        r.seed()
        for name in ("server", "client"):
            cid = podman("inspect", "-f", "{{.Id}}", pods[name]).stdout.strip()
            assert poll(lambda: (r.containers().get(cid) or None) and
                        r.containers()[cid].complete, 15)
        ids = Identities(r)
        me = ("", "host/pytest", "host")
        assert ids.peer(pods["server_ip"], "host", me) == ("shop", "web")
        assert ids.peer(pods["client_ip"], "host", me) == ("shop", "shopper")
        assert ids.peer("127.0.0.1", "host", me) == ("", "host")
        assert ids.peer("203.0.113.9", "host", me) == ("", "203.0.113.0/24")


def test_services_without_an_agent_is_one_error_line():
    r = subprocess.run([VIGIL, "services", "--interval", "100ms", "--metrics-url",
                        f"127.0.0.1:{closed_port()}"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert r.stderr.startswith("vigil: error: no vigil agent answers at http://127.0.0.1:")
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = subprocess.run([VIGIL, "services", "--interval", "0"], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 2 and "must be more than 0" in r.stderr




# --- with a running agent and real traffic -----------------------------------------------

HTTP_SERVER = textwrap.dedent("""
    import ctypes, http.server, sys, time
    if len(sys.argv) > 1:                      # a name the agent is told to ignore
        ctypes.CDLL(None).prctl(15, sys.argv[1].encode(), 0, 0, 0)
    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"          # keep-alive
        def do_GET(self):
            code = {"/ok": 200, "/missing": 404, "/fail": 500, "/slow": 200}.get(self.path, 404)
            if self.path == "/slow":
                time.sleep(0.3)
            body = b"x" * 10
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        def log_message(self, *a):
            pass
    s = http.server.HTTPServer(("127.0.0.1", 0), H)
    print(s.server_address[1], flush=True)
    s.serve_forever()
""")
# one keep-alive connection (curl reuses it for every URL of one command line)
PATHS = ["/ok"] * 5 + ["/missing"] * 2 + ["/fail"] * 3 + ["/slow"]


UNWATCHED = "unwatchedsrv"      # a server the agent does not follow (sensors.ignore_comms)


@pytest.fixture(scope="module")
def agent():
    a = VigilAgent(["-o", f"sensors.ignore_comms=[{UNWATCHED}]"])
    yield a
    a.stop()


@pytest.fixture(scope="module")
def http_server():
    p = subprocess.Popen([sys.executable, "-c", HTTP_SERVER], stdout=subprocess.PIPE,
                         text=True)
    port = int(p.stdout.readline())
    yield p, port
    p.kill()
    p.wait()


CLIENT_DIR = tempfile.mkdtemp(prefix="vigil-svcmap-")
atexit.register(shutil.rmtree, CLIENT_DIR, True)


def own_copy(path: str, name: str) -> str:
    """A copy of a client under a name only these tests use: their edges are theirs
    alone on a node where other processes call servers too (a host process is named
    by its executable)."""
    dst = os.path.join(CLIENT_DIR, name)
    if not os.path.exists(dst):
        shutil.copy2(path, dst)
    return dst


CURL = "svcmap-curl"
CURL_EDGE = "host/" + CURL


def curl(port, paths):
    urls = [a for x in paths for a in ("-o", "/dev/null", f"http://127.0.0.1:{port}{x}")]
    r = subprocess.run([own_copy(shutil.which("curl"), CURL), "-s", "-w", "%{http_code}\\n",
                        *urls],
                       capture_output=True, text=True, timeout=60)
    return r.stdout.split()


def service_samples(agent) -> dict:
    """(client, server, protocol, status_class) -> n, from the agent's /metrics."""
    from prometheus_client.parser import text_string_to_metric_families
    out = {}
    for fam in text_string_to_metric_families(agent.metrics_text()):
        if fam.name == "vigil_service_requests":
            for s in fam.samples:
                lb = s.labels
                c = "/".join(x for x in (lb["client_namespace"], lb["client_workload"]) if x)
                sv = "/".join(x for x in (lb["server_namespace"], lb["server_workload"]) if x)
                out[(c, sv, lb["protocol"], lb["status_class"])] = s.value
    return out


def edge_of(samples, client, server, proto="http") -> dict:
    return {k[3]: v for k, v in samples.items() if k[:3] == (client, server, proto)}


@pytest.fixture(scope="module")
def redis_pg():
    from l7_env import Postgres, RedisServer, pg_bin
    if not (shutil.which("redis-server") and pg_bin("initdb")):
        pytest.skip("redis-server or PostgreSQL not installed")
    redis, pg = RedisServer(), Postgres()
    yield redis, pg
    redis.stop()
    pg.stop()


def own_psql(pg, sql: str):
    from l7_env import pg_bin
    # Debian's /usr/bin/psql is a wrapper that execs the real one: copy that
    exe = own_copy(pg_bin("psql"), "svcmap-psql")
    return subprocess.run([exe, "-X", "-q", "-h", "127.0.0.1", "-p", str(pg.port), "-U",
                           "postgres", "-d", "postgres", "-f", "-"], input=sql, text=True,
                          env=dict(os.environ, PGSSLMODE="disable", PGGSSENCMODE="disable"),
                          capture_output=True, timeout=60)


def l7_lost(agent) -> float:
    from prometheus_client.parser import text_string_to_metric_families
    return sum(s.value for fam in text_string_to_metric_families(agent.metrics_text())
               if fam.name == "vigil_events_lost" for s in fam.samples
               if s.labels.get("kind") == "l7")


def exactly(agent, make, client, server, want: dict, proto="http", tries: int = 3) -> dict:
    """Run ``make()`` (the traffic) and return the edge's growth once it is ``want``; on a
    node busy enough that the kernel lost L7 records meanwhile (counted in
    vigil_events_lost_total{kind="l7"}), try again: exact counts need every record."""
    grown = {}
    for _ in range(tries):
        lost = l7_lost(agent)
        before = edge_of(service_samples(agent), client, server, proto)
        make()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            now = edge_of(service_samples(agent), client, server, proto)
            grown = {k: v - before.get(k, 0) for k, v in now.items() if v - before.get(k, 0)}
            if grown == want:
                return grown
            time.sleep(0.3)
        if l7_lost(agent) == lost:
            break
    return grown


def exe_of(pid) -> str:
    return "host/" + os.path.basename(os.readlink(f"/proc/{pid}/exe"))


def test_host_client_and_server_count_once(agent, http_server):
    server, port = http_server
    client, srv = CURL_EDGE, exe_of(server.pid)

    def make():
        assert curl(port, PATHS) == ["200"] * 5 + ["404"] * 2 + ["500"] * 3 + ["200"]
    grown = exactly(agent, make, client, srv, {"2xx": 6, "4xx": 2, "5xx": 3})
    assert grown == {"2xx": 6, "4xx": 2, "5xx": 3}
    # nothing else was counted for this exchange: no edge named from an address
    s = service_samples(agent)
    assert not [k for k in s if k[0] == client and k[1] in ("host", "other")], s


def test_only_the_client_seen_names_the_server_from_its_address(agent):
    p = subprocess.Popen([sys.executable, "-c", HTTP_SERVER, UNWATCHED],
                         stdout=subprocess.PIPE, text=True)
    try:
        port = int(p.stdout.readline())

        def make():
            assert curl(port, ["/ok"] * 4 + ["/fail"]) == ["200"] * 4 + ["500"]
        # 127.0.0.1 seen from a host process: a host process, not named (it is not observed)
        grown = exactly(agent, make, CURL_EDGE, "host", {"2xx": 4, "5xx": 1})
        assert grown == {"2xx": 4, "5xx": 1}
    finally:
        p.kill()
        p.wait()


def test_podman_pods_edge(agent, pods):
    client, server = "shop/shopper", "shop/web"
    url = f"http://{pods['server_ip']}:8080"

    def make():
        r = podman("exec", pods["client"], "/bin/sh", "-c",
                   f"for i in 1 2 3; do wget -q -O /dev/null {url}/index.html; done; "
                   f"wget -q -O /dev/null {url}/missing; echo done")
        assert r.stdout.strip() == "done", r.stderr
    grown = exactly(agent, make, client, server, {"2xx": 3, "4xx": 1})
    assert grown == {"2xx": 3, "4xx": 1}
    # once: neither end was also counted under a name from its address
    others = {k[:2] for k in service_samples(agent) if client in k[:2] or server in k[:2]}
    assert others == {(client, server)}, others


def test_vigil_services_prints_the_interval(agent, http_server):
    server, port = http_server
    srv = exe_of(server.pid)
    p = subprocess.Popen([VIGIL, "services", "--json", "--interval", "8s", "--metrics-url",
                          agent.address], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    try:
        assert p.stderr.readline().startswith("sampling http://")   # first scrape taken
        lost = l7_lost(agent)
        grown = exactly(agent, lambda: curl(port, ["/ok"] * 7 + ["/fail"] + ["/slow"] * 2),
                        CURL_EDGE, srv, {"2xx": 9, "5xx": 1}, tries=1)
        if grown != {"2xx": 9, "5xx": 1} and l7_lost(agent) > lost:
            pytest.skip("the kernel lost L7 records meanwhile (a busy node)")
        assert grown == {"2xx": 9, "5xx": 1}
        out, err = p.communicate(timeout=30)
    finally:
        p.kill()
    assert p.returncode == 0, err
    doc = json.loads(out)
    [row] = [r for r in doc["edges"] if (r["client"], r["server"]) == (CURL_EDGE, srv)]
    assert row["requests"] == 10 and row["status"] == {"2xx": 9, "5xx": 1}, (row, doc, err)
    assert row["error_ratio"] == pytest.approx(0.1)
    assert row["rate"] == pytest.approx(10 / doc["interval_seconds"])
    # 8 fast ones and 2 of 0.3 s: p50 in the fast buckets, p99 in (0.25, 0.5]
    assert row["p50_seconds"] < 0.1 and 0.25 < row["p99_seconds"] <= 0.5
    # the same interval as Graphviz and as a table
    r = subprocess.run([VIGIL, "services", "--dot", "--interval", "100ms", "--metrics-url",
                        agent.address], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stdout.startswith("digraph vigil_services {"), r.stderr


HTTP_LOOP = textwrap.dedent("""
    import http.client, sys, time
    c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]))
    while True:
        for path in ("/ok", "/ok", "/ok", "/fail"):
            c.request("GET", path)
            c.getresponse().read()
        time.sleep(0.05)
""")


@pytest.fixture
def http_loop(http_server):
    _, port = http_server
    p = subprocess.Popen([sys.executable, "-c", HTTP_LOOP, str(port)])
    yield p
    p.kill()
    p.wait()


def test_top_shows_each_process_http_traffic(agent, http_server, http_loop):
    server, _ = http_server
    r = subprocess.run([VIGIL, "top", "--once", "--json", "--interval", "3s", "--sort", "rate",
                        "--metrics-url", agent.address], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    rows = {x["pid"]: x for x in json.loads(r.stdout)}
    for pid in (server.pid, http_loop.pid):         # the server's view and the client's
        row = rows[pid]
        n, errs = row["http_requests"], row["http_errors"]
        assert n >= 8, row
        # a run of the loop's ok, ok, ok, fail: a quarter of them, rounded either way
        assert n // 4 <= errs <= -(-n // 4), row
        assert row["http_error_ratio"] == errs / n
        assert row["http_p50_seconds"] is not None and row["http_p99_seconds"] < 0.25, row
        assert row["container"] == "host" and row["connections"] >= 1, row


@pytest.mark.skipif(not TMUX, reason="tmux not installed")
def test_top_live_http_columns_in_a_terminal(agent, http_server, http_loop):
    server, _ = http_server
    term = Tmux([VIGIL, "top", "--metrics-url", agent.address, "--sort", "rate"])
    try:
        def served(s):
            f = next((line.split() for line in s.splitlines()
                      if line.split()[:1] == [str(server.pid)]), None)
            return f is not None and f[8] != "-" and float(f[8]) > 0 and f[11] != "-"
        s = term.wait_for(served, timeout=20)
        assert served(s), s
        assert "sorted by rate" in s and "not answering" not in s
    finally:
        term.close()


def test_top_namespace_filter_and_container_rows(agent, pods):
    r = subprocess.run([VIGIL, "top", "--once", "--json", "--containers", "--namespace", "shop",
                        "--interval", "500ms", "--metrics-url", agent.address],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert {(x["namespace"], x["pod"], x["container"]) for x in rows} == \
        {("shop", "web", "httpd"), ("shop", "shopper", "wget")}, rows


def test_redis_and_postgres_edges(agent, redis_pg):
    redis, pg = redis_pg
    rcli = own_copy(shutil.which("redis-cli"), "svcmap-rcli")
    cli = "host/svcmap-rcli"
    srv = exe_of(redis.pid)             # Debian's redis-server is redis-check-rdb

    def redis_cmds():
        for args in (["SET", "k", "v"], ["GET", "k"], ["INCR", "k"]):
            subprocess.run([rcli, "-p", str(redis.port), *args], capture_output=True,
                           timeout=30)
    want = {"ok": 2, "error": 1}           # INCR of "v": an error reply
    assert exactly(agent, redis_cmds, cli, srv, want, "redis") == want
    pg_server = exe_of(pg.pid)
    psql = "host/svcmap-psql"

    def queries():
        r = own_psql(pg, "SELECT 1;\nSELECT 2;\nSELECT * FROM no_such_table;\n")
        assert "no_such_table" in r.stderr
    assert exactly(agent, queries, psql, pg_server, want, "postgres") == want


def test_every_dashboard_expression_against_prometheus(agent, http_server, http_loop,
                                                       redis_pg):
    """Each expression of deploy/grafana/vigil-services.json through a real Prometheus
    scraping the agent returns data: HTTP, Redis and PostgreSQL traffic above."""
    from prom_env import Prometheus
    from test_services_dashboard import concrete, exprs
    redis, pg = redis_pg
    prom = Prometheus([agent.address])
    try:
        # traffic while Prometheus scrapes: rate() over 30s wants it in two samples
        for i in range(3):
            subprocess.run(["redis-cli", "-p", str(redis.port), "INCR", "k"],
                           capture_output=True, timeout=30)
            pg.psql("SELECT 1;\nSELECT * FROM no_such_table;\n")
            time.sleep(1)
        assert prom.wait_for("sum(vigil_service_requests_total)", lambda v: v > 0, 30)
        assert prom.wait_for("count(rate(vigil_service_requests_total[30s]) > 0)",
                             lambda v: v > 0, 30)
        empty = [(t, ref) for t, ref, e in exprs() if not prom.query(concrete(e))]
        assert not empty, empty
        nodes = prom.query(concrete(next(e for t, r, e in exprs() if r == "nodes")))
        edges = prom.query(concrete(next(e for t, r, e in exprs() if r == "edges")))
        ids = {n["metric"]["id"] for n in nodes}
        for e in edges:        # every edge joins two nodes of the node graph
            assert {e["metric"]["source"], e["metric"]["target"]} <= ids, (e, ids)
        assert CURL_EDGE in ids or any(i.startswith("host/python") for i in ids), ids
    finally:
        prom.stop()
