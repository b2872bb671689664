"""L7 pairing end to end: the l7 sensor on real servers and clients (an
HTTP/1.1 keep-alive server, redis-server with redis-cli and redis-benchmark,
a private PostgreSQL with psql and psycopg), requests counted exactly on both
sides, by the process that made or served them."""
import shutil
import subprocess
from collections import Counter

import pytest

from l7_env import HttpServer, L7Pipeline, Postgres, RedisServer, http_client, pg_bin


@pytest.fixture(scope="module")
def l7(bpf_objects):
    p = L7Pipeline()
    yield p
    p.stop()


@pytest.fixture(scope="module")
def web():
    s = HttpServer()
    yield s
    s.stop()


def by(reqs, *attrs):
    return Counter(tuple(getattr(r, a) for a in attrs) for r in reqs)


def test_http_keepalive_exact_counts_both_sides_and_slow_buckets(l7, web):
    plan = ([("GET", "/status/200")] * 5 + [("GET", "/status/404")] * 3
            + [("POST", "/status/201")] * 2 + [("DELETE", "/status/503")]
            + [("GET", "/slow/300")] * 2)
    client = http_client(web.port, plan)
    server = l7.take(lambda r: r.tgid == web.pid, want=len(plan))
    out = l7.take(lambda r: r.tgid == client, want=len(plan))
    want = Counter({("GET", 200): 7, ("GET", 404): 3, ("POST", 201): 2, ("DELETE", 503): 1})
    assert by(server, "method", "status") == want
    assert by(out, "method", "status") == want
    assert {r.direction for r in server} == {"inbound"}
    assert {r.direction for r in out} == {"outbound"}
    # one keep-alive connection: every request on the same client port
    assert len({r.peer_port for r in server}) == 1
    assert {(r.local_port, r.peer_ip) for r in server} == {(web.port, "127.0.0.1")}
    assert {(r.peer_ip, r.peer_port) for r in out} == {("127.0.0.1", web.port)}
    for side in (server, out):
        slow = [r for r in side if r.path == "/slow/300"]
        assert len(slow) == 2 and all(0.25 < r.duration_s <= 0.5 for r in slow)
        assert all(r.duration_s < 0.25 for r in side if r.path != "/slow/300")
        assert [r.error for r in side if r.status == 503] == [True]
        assert not any(r.closed for r in side)


def test_http_connection_closed_mid_request_is_an_error_on_both_sides(l7, web):
    client = http_client(web.port, [("GET", "/status/200"), ("GET", "/drop")])
    server = l7.take(lambda r: r.tgid == web.pid, want=2)
    out = l7.take(lambda r: r.tgid == client, want=2)
    for side in (server, out):
        assert by(side, "path", "status", "closed", "error") == Counter({
            ("/status/200", 200, False, False): 1, ("/drop", 0, True, True): 1})


@pytest.fixture(scope="module")
def redis_server():
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server not installed")
    s = RedisServer()
    yield s
    s.stop()


def test_redis_commands_and_one_error_exact(l7, redis_server):
    script = "SET k v\nGET k\nINCR n\nINCR n\nINCR n\nINCR k\nDEL k n\nPING\n"
    p = subprocess.Popen(["redis-cli", "-p", str(redis_server.port)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    out, _ = p.communicate(script, timeout=30)
    assert "ERR value is not an integer" in out
    server = l7.take(lambda r: r.tgid == redis_server.pid, want=8)
    client = l7.take(lambda r: r.tgid == p.pid, want=8)
    want = Counter({("SET", False): 1, ("GET", False): 1, ("INCR", False): 3, ("INCR", True): 1,
                    ("DEL", False): 1, ("PING", False): 1})
    # redis-cli asks COMMAND DOCS when it starts (for its hints): not ours
    assert by([r for r in client if r.method != "COMMAND"], "method", "error") == want
    assert by([r for r in server if r.method != "COMMAND"], "method", "error") == want
    assert {r.protocol for r in client + server} == {"redis"}


def test_redis_pipelined_benchmark_counted_exactly(l7, redis_server):
    n = 3200          # a multiple of -P 16 x -c 2: redis-benchmark sends whole batches
    p = subprocess.Popen(["redis-benchmark", "-p", str(redis_server.port), "-t", "set,get",
                          "-n", str(n), "-P", "16", "-c", "2", "-q"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert p.wait(120) == 0
    server = l7.take(lambda r: r.tgid == redis_server.pid and r.method in ("SET", "GET"),
                     want=2 * n, timeout=20)
    client = l7.take(lambda r: r.tgid == p.pid and r.method in ("SET", "GET"), want=2 * n)
    assert by(server, "method", "error") == Counter({("SET", False): n, ("GET", False): n})
    assert by(client, "method", "error") == Counter({("SET", False): n, ("GET", False): n})
    assert l7.pipeline.sensors.stats()["l7"].get("dropped", 0) == 0


@pytest.fixture(scope="module")
def pg():
    if not pg_bin("initdb") or shutil.which("psql") is None:
        pytest.skip("postgresql / psql not installed")
    s = Postgres()
    yield s
    s.stop()


def test_postgres_simple_queries_and_one_error_exact(l7, pg):
    r = pg.psql("SELECT 1;\nSELECT 2;\nCREATE TABLE t (a int);\nINSERT INTO t VALUES (1);\n"
                "SELECT * FROM no_such_table;\nSELECT count(*) FROM t;\n")
    assert "no_such_table" in r.stderr
    server = l7.take(lambda q: q.protocol == "postgres" and q.direction == "inbound"
                     and q.local_port == pg.port, want=6)
    client = l7.take(lambda q: q.protocol == "postgres" and q.direction == "outbound"
                     and q.peer_port == pg.port, want=6)
    assert by(server, "error") == Counter({(False,): 5, (True,): 1})
    assert by(client, "error") == Counter({(False,): 5, (True,): 1})
    # the server side is the backend the postmaster forked after accept()
    assert {q.tgid for q in server} != {pg.pid}


def test_postgres_extended_protocol_through_psycopg(l7, pg):
    psycopg = pytest.importorskip("psycopg")
    code = ("import psycopg, sys\n"
            f"c = psycopg.connect('host=127.0.0.1 port={pg.port} user=postgres dbname=postgres "
            "sslmode=disable gssencmode=disable', autocommit=True)\n"
            "for i in range(4):\n"
            "    c.execute('SELECT %s::int', (i,)).fetchall()\n"
            "try:\n"
            "    c.execute('SELECT %s::int / 0', (1,))\n"
            "except psycopg.errors.DivisionByZero:\n"
            "    pass\n"
            "c.close()\n")
    import sys
    p = subprocess.Popen([sys.executable, "-c", code])
    assert p.wait(60) == 0
    client = l7.take(lambda q: q.tgid == p.pid, want=5)
    server = l7.take(lambda q: q.protocol == "postgres" and q.direction == "inbound"
                     and q.local_port == pg.port, want=5)
    assert by(client, "error") == Counter({(False,): 4, (True,): 1})
    assert by(server, "error") == Counter({(False,): 4, (True,): 1})
    del psycopg


def test_only_the_enabled_protocols_are_detected(l7, redis_server, web):
    only_http = L7Pipeline(protocols=("http",))
    try:
        p = subprocess.Popen(["redis-cli", "-p", str(redis_server.port)], stdin=subprocess.PIPE,
                             stdout=subprocess.DEVNULL, text=True)
        p.communicate("SET a b\nGET a\n", timeout=30)
        client = http_client(web.port, [("GET", "/status/200")] * 2)
        got = only_http.take(lambda r: r.tgid == client, want=2)
        assert by(got, "protocol", "status") == Counter({("http", 200): 2})
        # the server listened before this sensor started: its accepts are followed
        served = only_http.take(lambda r: r.tgid == web.pid, want=2)
        assert by(served, "direction", "status") == Counter({("inbound", 200): 2})
        assert only_http.take(lambda r: r.protocol == "redis", timeout=0) == []
    finally:
        only_http.stop()
    # the module's sensor (every protocol) saw the redis commands meanwhile
    seen = l7.take(lambda r: r.tgid == p.pid, want=3)
    assert by([r for r in seen if r.method != "COMMAND"], "method") == Counter(
        {("SET",): 1, ("GET",): 1})
    l7.take(lambda r: r.tgid == client)


@pytest.mark.parametrize("text, where, why", [
    ("l7:\n  protocols: [http, ftp]\n", 2, "l7.protocols: unknown protocol 'ftp' (known: http, "
     "redis, postgres)"),
    ("l7:\n  protocols: http\n", 2, "l7.protocols: expected a list of protocols"),
    ("l7:\n  max_peers: 0\n", 2, "l7.max_peers"),
    ("l7:\n  ringbuf_size: 1000\n", 2, "l7.ringbuf_size: expected a power of two"),
    ("l7:\n  colour: blue\n", 2, "l7.colour: unknown key"),
])
def test_bad_l7_settings_are_config_errors_with_file_and_line(tmp_path, text, where, why):
    from conftest import VIGIL
    cfg = tmp_path / "vigil.yaml"
    cfg.write_text(text)
    r = subprocess.run([VIGIL, "run", "-c", str(cfg), "--dry-run"], capture_output=True,
                       text=True)
    assert r.returncode == 1
    assert f"{cfg}:{where}: {why}" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_connections_followed_in_user_space_are_bounded(bpf_objects, web):
    import sys
    small = L7Pipeline(protocols=("http",), max_connections=2)
    code = ("import http.client, sys\n"
            "cs = [http.client.HTTPConnection('127.0.0.1', int(sys.argv[1])) for _ in range(3)]\n"
            "for c in cs:\n"
            "    c.request('GET', '/status/200'); c.getresponse().read()\n"
            "for c in cs:\n"
            "    c.request('GET', '/status/202'); c.getresponse().read()\n")
    try:
        p = subprocess.Popen([sys.executable, "-c", code, str(web.port)])
        assert p.wait(60) == 0
        got = small.take(lambda r: r.tgid == p.pid, want=6)
        assert by(got, "status") == Counter({(200,): 3, (202,): 3})
        assert small.tracker.stats["evicted"] >= 1
        assert len(small.tracker.conns) <= 2
    finally:
        small.stop()
