"""deploy/kubernetes: `kubectl kustomize` renders it, every built-in object validates
against the current Kubernetes schemas (kubernetes-validate, strict), the optional
Prometheus operator component renders (custom resources: not schema-checked) and
promtool accepts the rules; the DaemonSet's pod template runs under `podman kube
play` with the ConfigMaps and the Secret (translated only where podman cannot
express them) and the agent inside uses the ConfigMap's rules."""
from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from image_env import ROOT, build_image, env_value, one, rendered
from podman_env import podman

sys.path.insert(0, str(Path(__file__).parent / "data" / "e2e"))
from e2e_harness import Receiver, wait_until  # noqa: E402

BASE = ROOT / "deploy" / "kubernetes"
OPERATOR = BASE / "components" / "prometheus-operator"
GRAFANA = ROOT / "deploy" / "grafana"
ALERTS_FILE = ROOT / "deploy" / "prometheus" / "vigil-alerts.yaml"


def overlay(tmp_path, components) -> Path:
    """A kustomization that is the base plus ``components`` (relative paths: kustomize
    refuses absolute ones)."""
    d = tmp_path / "overlay"
    d.mkdir()
    rel = lambda p: os.path.relpath(p, d)  # noqa: E731
    (d / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [rel(BASE)], "components": [rel(c) for c in components]}))
    return d


@pytest.fixture(scope="module")
def objs():
    return rendered(BASE)


def test_renders_what_a_node_agent_needs(objs):
    kinds = sorted((o["kind"], o["metadata"]["name"]) for o in objs)
    assert kinds == sorted([
        ("Namespace", "vigil"), ("ServiceAccount", "vigil"), ("ClusterRole", "vigil"),
        ("ClusterRoleBinding", "vigil"), ("PriorityClass", "vigil-node-critical"),
        ("Secret", "vigil-webhook"), ("DaemonSet", "vigil"), ("Service", "vigil-metrics"),
        ("ConfigMap", "vigil-config"), ("ConfigMap", "vigil-rules"),
        ("ConfigMap", "vigil-policies")])
    for o in objs:
        if o["kind"] not in ("Namespace", "ClusterRole", "ClusterRoleBinding", "PriorityClass"):
            assert o["metadata"]["namespace"] == "vigil", o["metadata"]


def test_every_object_validates_against_current_schemas(objs):
    import kubernetes_validate
    version = kubernetes_validate.latest_version()
    for o in objs:
        try:
            kubernetes_validate.validate(o, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{o['kind']}/{o['metadata']['name']} against {version}: {e.message} "
                        f"at {'.'.join(map(str, e.path))}")


def test_rbac_is_read_only_and_least(objs):
    rules = one(objs, "ClusterRole")["rules"]
    got = {(g, r, v) for rule in rules for g in rule["apiGroups"] for r in rule["resources"]
           for v in rule["verbs"]}
    assert got == {(g, r, v) for g, r in (("", "pods"), ("", "namespaces"),
                                          ("networking.k8s.io", "networkpolicies"))
                   for v in ("get", "list", "watch")}


def test_daemonset_runs_everywhere_with_what_it_needs(objs):
    ds = one(objs, "DaemonSet")
    spec = ds["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    assert spec["hostPID"] is True and spec["tolerations"] == [{"operator": "Exists"}]
    assert spec["priorityClassName"] == "vigil-node-critical"
    assert spec["serviceAccountName"] == "vigil"
    caps = c["securityContext"]["capabilities"]
    assert {"BPF", "PERFMON", "SYS_ADMIN", "SYS_PTRACE", "NET_ADMIN"} <= set(caps["add"])
    assert "SYS_RESOURCE" not in caps["add"] and caps["drop"] == ["ALL"]
    assert c["securityContext"]["privileged"] is False
    vols = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: vols[m["name"]] for m in c["volumeMounts"]}
    for host in ("/sys/kernel/btf", "/sys/kernel/tracing", "/sys/fs/cgroup", "/sys/fs/bpf"):
        assert mounts[host]["hostPath"]["path"] == host
    assert mounts["/host/proc"]["hostPath"]["path"] == "/proc"
    assert mounts["/host/run/containerd"]["hostPath"]["path"] == "/run/containerd"
    assert {e["name"]: e.get("value") for e in c["env"]}["VIGIL_HOST_ROOT"] == "/host"
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["ports"] == [{"name": "metrics", "containerPort": 9476, "protocol": "TCP"}]
    assert set(c["resources"]) == {"requests", "limits"}
    conf = yaml.safe_load(one(objs, "ConfigMap", "vigil-config")["data"]["vigil.yaml"])
    assert conf["metrics"]["address"] == "0.0.0.0:9476"
    assert "/etc/vigil/rules" in conf["rules"] and mounts["/etc/vigil/rules"]["configMap"]


def test_shipped_rules_and_config_load(objs, tmp_path):
    """The ConfigMaps' rules validate, and their vigil.yaml loads (but for the
    metrics section when this branch has no metrics server)."""
    from vigil.config import DEFAULTS, load_config
    rules = one(objs, "ConfigMap", "vigil-rules")["data"]
    for name, text in rules.items():
        (tmp_path / name).write_text(text)
    r = subprocess.run([str(Path(sys.executable).parent / "vigil"), "rules", "validate",
                        str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    conf = yaml.safe_load(one(objs, "ConfigMap", "vigil-config")["data"]["vigil.yaml"])
    if "metrics" not in DEFAULTS:
        conf.pop("metrics")
    conf["rules"], conf["policies"] = [str(tmp_path)], []
    (tmp_path / "vigil.yaml").write_text(yaml.safe_dump(conf))
    cfg = load_config(str(tmp_path / "vigil.yaml"))
    assert cfg["outputs"]["webhook"]["enabled"] is False


def test_prometheus_operator_component(tmp_path):
    objs = rendered(overlay(tmp_path, [OPERATOR]))
    sm = one(objs, "ServiceMonitor")
    assert sm["metadata"]["namespace"] == "vigil"
    svc = one(objs, "Service", "vigil-metrics")
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert sm["spec"]["endpoints"][0]["port"] == svc["spec"]["ports"][0]["name"]
    rule = one(objs, "PrometheusRule")
    promtool = shutil.which("promtool")
    if not promtool:
        pytest.skip("promtool not installed (Debian package prometheus)")
    f = tmp_path / "rules.yaml"
    f.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    r = subprocess.run([promtool, "check", "rules", str(f)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_promtool_accepts_the_alert_file():
    if not ALERTS_FILE.exists():
        pytest.skip(f"{ALERTS_FILE.relative_to(ROOT)} comes with the metrics work (branch iss-m11)")
    promtool = shutil.which("promtool")
    if not promtool:
        pytest.skip("promtool not installed (Debian package prometheus)")
    r = subprocess.run([promtool, "check", "rules", str(ALERTS_FILE)], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_dashboards_configmap_from_the_grafana_json(tmp_path):
    dashboards = sorted(GRAFANA.glob("*.json"))
    if not dashboards:
        pytest.skip("deploy/grafana/*.json comes with the metrics work (branch iss-m11)")
    cm = one(rendered(overlay(tmp_path, [GRAFANA])), "ConfigMap", "vigil-dashboards")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    for d in dashboards:
        assert json.loads(cm["data"][d.name]) == json.loads(d.read_text())


# --- the pod template under podman kube play -----------------------------------------------

def kube_play_yaml(objs, image, pod_name, tmp_path, receiver_url, rules_text) -> str:
    """The DaemonSet's pod template as a Pod, with the ConfigMaps; only what podman
    cannot express is translated: DaemonSet -> Pod, the node name (fieldRef) -> a
    literal, the Secret (kube play resolves neither secretKeyRef nor secret volumes)
    -> literal env values and a host directory with its files."""
    ds = one(objs, "DaemonSet")
    spec = json.loads(json.dumps(ds["spec"]["template"]["spec"]))
    (c,) = spec["containers"]
    c["image"] = image
    secret = one(objs, "Secret")
    data = dict(secret.get("stringData") or {})
    data.update({k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()})
    data.update(enabled="true", url=receiver_url, token="test-token")   # this test's receiver
    sdir = tmp_path / "secret"
    sdir.mkdir()
    for k, v in data.items():
        (sdir / k).write_text(v)
    for e in c["env"]:
        ref = (e.get("valueFrom") or {}).get("secretKeyRef")
        if ref:
            assert ref["name"] == secret["metadata"]["name"]
            e.pop("valueFrom")
            e["value"] = data[ref["key"]]
        elif "valueFrom" in e:
            e["value"] = env_value(e)
            e.pop("valueFrom")
    for v in spec["volumes"]:
        if "secret" in v:
            v.pop("secret")
            v["hostPath"] = {"path": str(sdir), "type": "Directory"}
    cms = [json.loads(json.dumps(o)) for o in objs if o["kind"] == "ConfigMap"]
    for cm in cms:
        cm["metadata"].pop("namespace", None)
        if cm["metadata"]["name"] == "vigil-rules":
            cm["data"]["kube-play.yaml"] = rules_text      # a rule only the ConfigMap has
        if cm["metadata"]["name"] == "vigil-config":
            conf = yaml.safe_load(cm["data"]["vigil.yaml"])
            from vigil.config import DEFAULTS
            if "metrics" not in DEFAULTS:
                # this branch has no metrics server (it comes with iss-m11): no probes
                conf.pop("metrics")
                c.pop("readinessProbe")
                c.pop("livenessProbe")
            conf["store"] = {"enabled": False}      # the webhook delivers from memory
            cm["data"]["vigil.yaml"] = yaml.safe_dump(conf)
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": pod_name, "labels": ds["spec"]["template"]["metadata"]["labels"]},
           "spec": spec}
    return yaml.safe_dump_all(cms + [pod])


@pytest.mark.slow
def test_pod_template_runs_with_the_configmaps_and_secret(objs, tmp_path, bpf_objects):
    image, _ = build_image()
    marker = tmp_path / f"vigil-kube-{uuid.uuid4().hex[:8]}"
    marker.write_bytes(Path("/bin/true").read_bytes())
    marker.chmod(0o755)
    rules_text = ("- rule: Kube play marker exec\n  desc: only in the test's ConfigMap\n"
                  f"  condition: evt.type = execve and proc.exepath = {marker}\n"
                  "  output: marker exec (pid=%proc.pid exe=%proc.exepath)\n"
                  "  priority: WARNING\n  tags: [test]\n")
    receiver = Receiver(host="0.0.0.0")     # the pod has its own network: the host's name
    pod = f"vigil-kube-{uuid.uuid4().hex[:6]}"      # in it is host.containers.internal
    play = tmp_path / "play.yaml"
    url = f"http://host.containers.internal:{receiver.port}/"
    play.write_text(kube_play_yaml(objs, image, pod, tmp_path, url, rules_text))
    r = podman("kube", "play", str(play), timeout=120)
    try:
        assert r.returncode == 0, r.stderr
        ctr = f"{pod}-vigil"
        logs = lambda: podman("logs", ctr).stderr + podman("logs", ctr).stdout  # noqa: E731
        wait_until(lambda: "running with" in logs(), 90, what="the agent in the pod to start")
        assert "/etc/vigil/rules/kube-play.yaml" in logs()
        pid = subprocess.Popen([str(marker)]).pid

        def alert():
            out = podman("logs", ctr).stdout
            for line in out.splitlines():
                if line.startswith("{"):
                    a = json.loads(line)
                    if a["rule"] == "Kube play marker exec" and \
                            a["output_fields"].get("proc.pid") == pid:
                        return a
        a = wait_until(alert, 15, what=f"the ConfigMap rule's alert; logs:\n{logs()[-2000:]}")
        assert a["output_fields"]["proc.exepath"] == str(marker)
        # the Secret's webhook URL and token were used
        got = wait_until(lambda: receiver.received("Kube play marker exec"), 15,
                         what="the alert at the Secret's webhook")
        assert got[0]["output_fields"]["proc.pid"] == pid
        assert receiver.headers[0]["Authorization"] == "Bearer test-token"
        assert "Traceback" not in logs()
    finally:
        podman("pod", "rm", "-f", "-t", "10", pod, timeout=120)
        receiver.close()
