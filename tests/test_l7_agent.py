"""L7 in `vigil run`: the HTTP RED metrics on both sides (exact counts by
method and status, slow requests in the 0.25-0.5 s buckets) read through a
real Prometheus, the http event kind feeding a rule (/actuator), and
l7.protocols: [] loading nothing."""
import json
import random
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from l7_env import HttpServer, http_client
from prom_env import PROMETHEUS, Prometheus, VigilAgent

pytestmark = pytest.mark.skipif(PROMETHEUS is None, reason="prometheus not installed")

RULES = """
- rule: HTTP request to a Spring actuator
  desc: a request for /actuator (the brief's odd socket input)
  condition: evt.type = http and http.path startswith /actuator
  output: actuator request %http.method %http.path -> %http.status (%http.direction) by %proc.name
  priority: WARNING
"""
LEAN = ["-o", "metrics.tcp=false", "-o", "metrics.packets=false", "-o", "metrics.dns=false",
        "-o", "metrics.block_io=false", "-o", "metrics.runqueue=false"]


@pytest.fixture(scope="module")
def agent(bpf_objects, tmp_path_factory):
    rules = tmp_path_factory.mktemp("rules") / "http.yaml"
    rules.write_text(RULES)
    a = VigilAgent(["-v", "-r", str(rules), "--output", "json", *LEAN])
    yield a
    a.stop()


def samples(text, name):
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name:
                yield s


def total(text, name, **labels):
    return sum(s.value for s in samples(text, name)
               if all(s.labels.get(k) == v for k, v in labels.items()))


def wait_total(agent, name, want, timeout=20.0, **labels):
    deadline = time.monotonic() + timeout
    while True:
        v = total(agent.metrics_text(), name, **labels)
        if v >= want or time.monotonic() > deadline:
            return v
        time.sleep(0.2)


def test_http_red_metrics_both_sides_through_prometheus_and_the_actuator_rule(agent):
    web = HttpServer()
    src = f"127.{random.randint(64, 250)}.{random.randint(1, 250)}.{random.randint(2, 250)}"
    try:
        plan = ([("GET", "/status/200")] * 4 + [("GET", "/status/404")] * 2
                + [("POST", "/status/201")] + [("GET", "/slow/300")] * 2
                + [("GET", "/actuator/env")])
        http_client(web.port, plan, src=src)
        inbound = {"direction": "inbound", "peer": src}
        outbound = {"direction": "outbound", "peer": f"127.0.0.1:{web.port}"}
        name = "vigil_http_requests_total"
        assert wait_total(agent, name, len(plan), **inbound) == len(plan)
        assert wait_total(agent, name, len(plan), **outbound) == len(plan)
        text = agent.metrics_text()
        for side in (inbound, outbound):
            got = {(s.labels["method"], s.labels["status"]): s.value
                   for s in samples(text, name)
                   if all(s.labels.get(k) == v for k, v in side.items())}
            assert got == {("GET", "200"): 7, ("GET", "404"): 2, ("POST", "201"): 1}
            assert {s.labels["container"] for s in samples(text, name)
                    if s.labels.get("peer") == side["peer"]} == {"host"}
        prom = Prometheus([agent.address])
        try:
            for side in (inbound, outbound):
                sel = ",".join(f'{k}="{v}"' for k, v in side.items())
                h = "vigil_http_request_duration_seconds_bucket"
                assert prom.wait_for(f'sum(vigil_http_requests_total{{{sel}}})',
                                     lambda v: v >= len(plan)) == len(plan)
                assert prom.value(f'sum({h}{{{sel},le="0.25"}})') == len(plan) - 2
                assert prom.value(f'sum({h}{{{sel},le="0.5"}})') == len(plan)
                assert prom.value(f'sum(vigil_http_requests_total{{{sel},status="404"}})') == 2
        finally:
            prom.stop()
    finally:
        web.stop()
    deadline = time.monotonic() + 10
    alerts = []
    while time.monotonic() < deadline and len(alerts) < 2:
        alerts = [json.loads(line) for line in agent.stdout().splitlines()
                  if "actuator" in line and line.startswith("{")]
        time.sleep(0.2)
    # both sides saw it: the server (inbound) and the client (outbound)
    assert sorted(a["output_fields"]["http.direction"] for a in alerts) == ["inbound", "outbound"]
    for a in alerts:
        assert a["rule"] == "HTTP request to a Spring actuator"
        assert a["output_fields"]["http.path"] == "/actuator/env"
        assert a["output_fields"]["http.method"] == "GET"
        assert a["output_fields"]["http.status"] == 200


def test_l7_off_loads_nothing(bpf_objects):
    a = VigilAgent(["-v", "-o", "l7.protocols=[]", *LEAN])
    try:
        text = a.metrics_text()
    finally:
        err = a.stop()
    assert "programs attached for kinds" in err
    kinds = err.split("programs attached for kinds", 1)[1].split()[0].split(",")
    assert "l7" not in kinds
    assert "vigil_http_requests_total" not in text


def test_l7_on_attaches_the_sensor(agent):
    err = agent.stderr()
    kinds = err.split("programs attached for kinds", 1)[1].split()[0].split(",")
    assert "l7" in kinds


def test_redis_and_postgres_red_metrics(agent):
    import shutil
    import subprocess
    from l7_env import Postgres, RedisServer, pg_bin
    if shutil.which("redis-server") is None or not pg_bin("initdb"):
        pytest.skip("redis-server or postgresql not installed")
    redis, pg = RedisServer(), Postgres()
    try:
        subprocess.run(["redis-cli", "-p", str(redis.port)], input="SET k 1\nINCR k\nINCR k\n"
                       "HSET k f v\nGET k\n", text=True, capture_output=True, check=True)
        pg.psql("SELECT 1;\nSELECT 2;\nSELECT 1/0;\n")
        rpeer = {"direction": "outbound", "peer": f"127.0.0.1:{redis.port}"}
        ppeer = {"direction": "outbound", "peer": f"127.0.0.1:{pg.port}"}
        assert wait_total(agent, "vigil_postgres_queries_total", 3, **ppeer) == 3
        assert wait_total(agent, "vigil_redis_requests_total", 1, command="GET", **rpeer) == 1
        text = agent.metrics_text()
        got = {(s.labels["command"], s.labels["status"]): s.value
               for s in samples(text, "vigil_redis_requests_total")
               if all(s.labels.get(k) == v for k, v in rpeer.items())
               and s.labels["command"] != "COMMAND"}
        # HSET on a string is WRONGTYPE: the one error
        assert got == {("SET", "ok"): 1, ("INCR", "ok"): 2, ("HSET", "error"): 1,
                       ("GET", "ok"): 1}
        pq = {s.labels["status"]: s.value for s in samples(text, "vigil_postgres_queries_total")
              if all(s.labels.get(k) == v for k, v in ppeer.items())}
        assert pq == {"ok": 2, "error": 1}
        assert total(text, "vigil_postgres_query_duration_seconds_count", **ppeer) == 3
        assert total(text, "vigil_redis_request_duration_seconds_count", **rpeer) == sum(
            s.value for s in samples(text, "vigil_redis_requests_total")
            if all(s.labels.get(k) == v for k, v in rpeer.items()))
    finally:
        redis.stop()
        pg.stop()
