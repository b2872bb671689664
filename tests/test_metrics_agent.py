"""/metrics, /healthz and /readyz of `vigil run`, scraped by a real Prometheus:
the agent's health metrics (events, losses, alerts by rule and priority,
rules' time, outputs, caches, build info, process CPU and RSS) read through
Prometheus' query API; a busy port is a warning and the agent keeps alerting;
a bad metrics.address is a config error."""
import socket
import subprocess
import time

import pytest
import requests

from conftest import VIGIL
from prom_env import PROMETHEUS, Prometheus, VigilAgent

pytestmark = pytest.mark.skipif(PROMETHEUS is None, reason="prometheus not installed")

RULES = """
- rule: metrics test marker
  desc: true with a marker argument
  condition: evt.type = execve and proc.name = true and proc.args contains "metrics-marker"
  output: marker seen %proc.cmdline
  priority: WARNING
"""


@pytest.fixture(scope="module")
def rules_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("rules") / "r.yaml"
    p.write_text(RULES)
    return p


@pytest.fixture(scope="module")
def agent(bpf_objects, rules_file):
    a = VigilAgent(["-r", str(rules_file), "-o", "metrics.tcp=false"])
    yield a
    a.stop()


@pytest.fixture(scope="module")
def prom(agent):
    p = Prometheus([agent.address])
    yield p
    p.stop()


def test_readyz_flips_to_200_after_attach(agent):
    # the endpoint answers while rules and sensors load, then says ready
    assert agent.ready_codes[-1] == 200
    assert 503 in agent.ready_codes, agent.ready_codes
    assert requests.get(agent.url + "/healthz", timeout=5).status_code == 200
    assert requests.get(agent.url + "/nothing", timeout=5).status_code == 404


def test_health_metrics_through_prometheus(agent, prom):
    n = 3
    for _ in range(n):
        subprocess.run(["true", "metrics-marker"])
    total = prom.wait_for('sum(vigil_alerts_total{rule="metrics test marker",'
                          'priority="warning"})', lambda v: v >= n)
    assert total >= n
    assert prom.value('up{job="vigil"}') == 1
    assert prom.value('vigil_events_total{kind="exec"}') > 0
    assert prom.value('sum(vigil_events_lost_total{where="kernel"})') == 0
    assert prom.value("vigil_build_info") == 1
    assert prom.value("process_resident_memory_bytes") > 10e6
    assert prom.value("process_cpu_seconds_total") > 0
    assert prom.value("vigil_process_cache_entries") > 10
    assert prom.value("vigil_container_cache_entries") >= 0
    assert prom.value("vigil_rule_evaluation_seconds_count") > 0
    assert prom.value('vigil_output_errors_total{output="stdout"}') == 0
    assert prom.value('vigil_output_queue_length{output="stdout"}') == 0


def test_alert_counts_are_exact(agent, prom):
    before = prom.value('sum(vigil_alerts_total{rule="metrics test marker"})') or 0
    for _ in range(5):
        subprocess.run(["true", "metrics-marker"])
    want = before + 5
    got = prom.wait_for('sum(vigil_alerts_total{rule="metrics test marker"})',
                        lambda v: v >= want)
    time.sleep(2)
    assert prom.value('sum(vigil_alerts_total{rule="metrics test marker"})') == want == got


def test_busy_port_is_a_warning_and_the_agent_keeps_alerting(bpf_objects, rules_file):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    port = s.getsockname()[1]
    a = VigilAgent(["-r", str(rules_file), "-o", "metrics.tcp=false"], port=port,
                   wait_ready=False)
    try:
        deadline = time.monotonic() + 60
        while "marker seen" not in a.stdout() and time.monotonic() < deadline:
            assert a.proc.poll() is None, a.stderr()
            subprocess.run(["true", "metrics-marker"])
            time.sleep(0.2)
    finally:
        err = a.stop()
        s.close()
    assert f"metrics endpoint disabled: cannot listen on 127.0.0.1:{port}" in err
    assert "Traceback" not in err
    assert a.proc.returncode == 0, err
    assert "marker seen" in a.stdout(), err


@pytest.mark.parametrize("value,why", [
    ("nonsense", "expected HOST:PORT"),
    ("127.0.0.1:99999", "expected a port 1..65535"),
    ("::1:9476", "an IPv6 address goes in brackets"),
])
def test_bad_metrics_address_is_a_config_error(tmp_path, value, why, monkeypatch):
    monkeypatch.delenv("VIGIL_METRICS_ADDRESS")
    cfg = tmp_path / "vigil.yaml"
    cfg.write_text(f"rules: []\nmetrics:\n  address: '{value}'\n")
    r = subprocess.run([VIGIL, "run", "-c", str(cfg), "--dry-run"], capture_output=True,
                       text=True)
    assert r.returncode == 1
    assert f"{cfg}:3: metrics.address: {why}" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    r = subprocess.run([VIGIL, "run", "--metrics", value, "--dry-run"], capture_output=True,
                       text=True)
    assert r.returncode == 1 and "metrics.address" in r.stderr and "Traceback" not in r.stderr


def test_bad_metrics_keys_are_config_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("VIGIL_METRICS_ADDRESS")
    cfg = tmp_path / "vigil.yaml"
    cfg.write_text("metrics:\n  max_destinations: 0\n")
    r = subprocess.run([VIGIL, "run", "-c", str(cfg), "--dry-run"], capture_output=True,
                       text=True)
    assert r.returncode == 1 and f"{cfg}:2: metrics.max_destinations" in r.stderr, r.stderr
    cfg.write_text("metrics:\n  colour: blue\n")
    r = subprocess.run([VIGIL, "run", "-c", str(cfg), "--dry-run"], capture_output=True,
                       text=True)
    assert r.returncode == 1 and f"{cfg}:2: metrics.colour: unknown key" in r.stderr, r.stderr
