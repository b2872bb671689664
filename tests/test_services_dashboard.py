"""deploy/grafana/vigil-services.json: its shape, and every PromQL expression parsed
by promtool (tests/test_service_map.py runs them against a real Prometheus scraping
an agent that saw real traffic)."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from prom_env import PROMTOOL

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy" / "grafana" / "vigil-services.json"


def dashboard():
    return json.loads(DASHBOARD.read_text())


def exprs():
    return [(p["title"], t["refId"], t["expr"]) for p in dashboard()["panels"]
            if p.get("type") != "row" for t in p["targets"]]


def concrete(expr: str, namespace: str = ".*") -> str:
    """As Grafana sends it with every namespace selected."""
    return expr.replace("$__rate_interval", "30s").replace("$namespace", namespace)


def test_shape_red_per_protocol_and_the_node_graph():
    d = dashboard()
    assert d["uid"] == "vigil-services"
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and "namespace" in variables
    panels = [p for p in d["panels"] if p.get("type") != "row"]
    assert all(p["datasource"]["uid"] == "${datasource}" for p in panels)
    [graph] = [p for p in panels if p["type"] == "nodeGraph"]
    refs = {t["refId"]: t for t in graph["targets"]}
    assert set(refs) == {"nodes", "edges"}
    assert all(t["format"] == "table" and t["instant"] for t in refs.values())
    assert "vigil_service_requests_total" in refs["edges"]["expr"]
    text = json.dumps(d)
    for metric in ("vigil_http_requests_total", "vigil_http_request_duration_seconds_bucket",
                   "vigil_redis_requests_total", "vigil_redis_request_duration_seconds_bucket",
                   "vigil_postgres_queries_total", "vigil_postgres_query_duration_seconds_bucket",
                   "vigil_service_request_duration_seconds_bucket"):
        assert metric in text, metric
    titles = " ".join(p["title"] for p in panels).lower()
    for what in ("http: rate", "http: error ratio", "http: duration", "redis: rate",
                 "postgresql: error ratio", "edges"):
        assert what in titles, what
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))


def test_every_expression_parses(tmp_path):
    if not PROMTOOL:
        pytest.skip("promtool not installed (Debian package prometheus)")
    rules = [{"record": f"dashboard:expr{i}", "expr": concrete(e)}
             for i, (_, _, e) in enumerate(exprs())]
    f = tmp_path / "rules.yaml"
    f.write_text(yaml.safe_dump({"groups": [{"name": "vigil-services", "rules": rules}]}))
    r = subprocess.run([PROMTOOL, "check", "rules", str(f)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {len(rules)} rules found" in r.stdout
