"""Behavioural profiles without the kernel: folding, windows (partial ->
complete), the store tables, the command line without an agent (YAML
round trip, lock/reset, bad input), policies from a profile and VigilPolicy
exec.allow.  tests/test_profiles_e2e.py runs the whole path with podman."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from vigil.config import DEFAULTS, ConfigError, load_config
from vigil.events import Event, Kind
from vigil.profiles.book import ProfileBook
from vigil.profiles.manager import ProfileManager
from vigil.profiles.policy import PolicyFromProfileError, policies_for
from vigil.profiles.profile import Profile
from vigil.profiles.shapes import arg_shape, covered, fold_path
from vigil.state.containers.model import ContainerInfo

VIGIL = str(Path(sys.executable).parent / "vigil")
ROOTS = DEFAULTS["profiles"]["file_prefixes"]


def vigil(*args):
    return subprocess.run([VIGIL, *args], capture_output=True, text=True, timeout=60)


class Clock:
    def __init__(self):
        self.ns = time.time_ns()

    def __call__(self):
        return self.ns


def web(cid="a" * 64, start=None, **labels):
    return ContainerInfo(id=cid, name=f"web-{cid[:3]}", image="reg/web:1@sha256:ff",
                         namespace="shop", pod_name=f"web-{cid[:3]}", k8s_container_name="app",
                         owner_kind="Deployment", owner_name="web",
                         labels={"app": "web", "io.kubernetes.pod.name": "x", **labels},
                         start_time=start if start is not None else time.time_ns())


def ev(kind, c, comm="web", **f):
    e = Event(kind, time=time.time_ns(), pid=7, comm=comm, **f)
    e.container = c
    return e


def manager(tmp_path, clock, drops=None, **over):
    settings = dict(DEFAULTS["profiles"], **over)
    book = ProfileBook(str(tmp_path / "p.db"))
    alerts = []
    m = ProfileManager(settings, book, alerts.append, dropped=drops, clock=clock,
                       runtimes=DEFAULTS["enforce"]["protected"])
    return m, alerts


def test_paths_fold_into_prefixes_but_not_the_roots():
    p = Profile("w", now_ns=1)
    p.set_roots(ROOTS)
    for i in range(20):
        p.learn("file", fold_path(f"/usr/lib/py/m{i}.py"), 1000, 16)
        p.learn("file", fold_path(f"/etc/f{i}"), 1000, 16)
    assert p.prefixes == {"/usr/lib/py/"}
    assert len(p.files) == 20 and all(f.startswith("/etc/") for f in p.files)
    assert p.knows("file", "/usr/lib/py/new/deeper.py")
    assert not p.knows("file", "/etc/shadow")
    tok = "/var/run/secrets/kubernetes.io/serviceaccount/..2024_01_01_10_00_00.1234/token"
    assert fold_path(tok) == "/var/run/secrets/kubernetes.io/serviceaccount/*/token"
    p.learn("file", fold_path(tok), 1000, 16)
    assert p.knows("file", fold_path(tok.replace("10_00_00.1234", "11_30_00.9876")))
    assert covered("/a/b/c", set(), {"/a/"}) and not covered("/ab/c", set(), {"/a/"})


def test_argument_shapes():
    assert arg_shape(["python3", "-m", "http.server", "8080"]) == "-m <s> <n>"
    assert arg_shape(["nc", "--wait=2", "/tmp/x"]) == "--wait=* <path>"
    assert arg_shape(["x"] + ["a"] * 12).endswith("...")


def test_window_partial_then_complete_and_alerts_folded(tmp_path):
    clock = Clock()
    drops = [0]
    m, alerts = manager(tmp_path, clock, drops=lambda: drops[0], window=60.0, cooldown=3600.0)
    c = web()
    m.on_event(ev(Kind.EXEC, c, exe="/usr/bin/web", args=["web", "-p", "80"]))
    m.on_event(ev(Kind.CONNECT, c, family="AF_INET", proto="tcp", daddr="10.0.0.5", dport=5432))
    key = "shop/deployment/web/app"
    p = m.profiles[key]
    assert p.status == "learning" and not p.partial and p.labels == {"app": "web"}
    drops[0] = 3                              # the kernel dropped events: partial
    m._check(clock())
    assert p.partial == "the kernel dropped events"
    clock.ns += 61 * 10**9                    # window over, partial: learn one more window
    m._check(clock())
    assert p.status == "learning" and p.partial == "" and "partial" in p.history[-1][1]
    clock.ns += 61 * 10**9                    # a clean window: locked
    m._check(clock())
    assert p.status == "locked" and p.history[-1][1] == "window complete"
    # a second replica shares it; learned behaviour is quiet, deviations alert once
    c2 = web("b" * 64)
    m.on_event(ev(Kind.EXEC, c2, exe="/usr/bin/web", args=["web"]))
    assert alerts == [] and len(p.replicas) == 2
    for _ in range(3):
        m.on_event(ev(Kind.EXEC, c2, exe="/tmp/xmrig", args=["xmrig"]))
        m.on_event(ev(Kind.CONNECT, c2, family="AF_INET", proto="tcp", daddr="10.0.0.5",
                      dport=22))
    assert [a.rule for a in alerts] == ["Unexpected process in workload", "Unexpected egress"]
    assert alerts[1].output_fields["vigil.profile.value"] == "10.0.0.5:22/TCP"
    assert alerts[0].output_fields["vigil.workload"] == key
    assert m.stats()["folded"] == 4
    m.close()
    # persisted: a new agent has it, locked
    m2, _ = manager(tmp_path, clock)
    assert m2.profiles[key].status == "locked" and "/usr/bin/web" in m2.profiles[key].execs
    m2.close()


def test_already_running_and_agent_restart_are_partial(tmp_path):
    clock = Clock()
    m, _ = manager(tmp_path, clock)
    old = web(start=clock() - 3600 * 10**9)
    m.on_event(ev(Kind.EXEC, old, exe="/usr/bin/web", args=["web"]))
    assert m.profiles["shop/deployment/web/app"].partial == \
        "workload was running before learning began"
    m.close()
    m2, _ = manager(tmp_path, clock)
    assert "agent restarted during learning" in m2.profiles["shop/deployment/web/app"].partial
    m2.close()


def test_window_label_and_identity_fallbacks(tmp_path):
    clock = Clock()
    m, _ = manager(tmp_path, clock)
    c = web(**{"vigil.dev/profile-learning-window": "10m"})
    m.on_event(ev(Kind.EXEC, c, exe="/usr/bin/web", args=["web"]))
    assert m.profiles["shop/deployment/web/app"].window == 600.0
    # the same override as an OCI annotation (what CRI runtimes carry from the pod)
    annotated = web(cid="b" * 64)
    annotated.owner_name = "api"
    annotated.annotations = {"vigil.dev/profile-learning-window": "20m"}
    m.on_event(ev(Kind.EXEC, annotated, exe="/usr/bin/api", args=["api"]))
    assert m.profiles["shop/deployment/api/app"].window == 1200.0
    bare = ContainerInfo(id="d" * 64, name="box", image="", namespace="")
    m.on_event(ev(Kind.EXEC, bare, exe="/bin/sh", args=["sh"]))
    img = ContainerInfo(id="e" * 64, name="x", image="reg/api:2@sha256:aa", namespace="n")
    m.on_event(ev(Kind.EXEC, img, exe="/bin/sh", args=["sh"]))
    assert {"/container/box", "n/image/reg/api:2"} <= set(m.profiles)
    m.on_event(ev(Kind.EXEC, ContainerInfo(), exe="/bin/ls", args=["ls"]))   # host: off
    assert not any(k.startswith("host/") for k in m.profiles)
    # the runtime's own `runc init` in a container's cgroup is not the workload
    rc = ContainerInfo(id="f" * 64, name="y", image="reg/db:3", namespace="n")
    m.on_event(ev(Kind.EXEC, rc, comm="runc:[2:INIT]", exe="/", args=["runc", "init"]))
    m.on_event(ev(Kind.EXEC, rc, comm="runc", exe="/", args=["runc", "init"]))
    assert "n/image/reg/db:3" not in m.profiles
    m.close()


def _seed(path, locked=False):
    clock = Clock()
    book = ProfileBook(str(path))
    p = Profile("shop/deployment/web/app", namespace="shop", container="app",
                labels={"app": "web"}, now_ns=clock())
    p.execs = {"/usr/bin/web": {"-p <n>"}}
    p.egress = {("10.0.0.5", 5432, "TCP"), ("::1", 80, "TCP")}
    p.listen = {(8080, "TCP")}
    p.ingress = {("10.0.0.9", 8080, "TCP")}
    p.files = {"/etc/web.conf"}
    if locked:
        p.lock(clock())
    book.save([p])
    book.close()
    return p


def test_cli_without_agent_export_import_lock_reset(tmp_path):
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    _seed(a)
    r = vigil("profiles", "list", "--store", str(a))
    assert r.returncode == 0 and "shop/deployment/web/app" in r.stdout and "learning" in r.stdout
    out = tmp_path / "p.yaml"
    assert vigil("profiles", "export", "--store", str(a), "-o", str(out)).returncode == 0
    doc = yaml.safe_load(out.read_text())
    assert doc["kind"] == "WorkloadProfile" and doc["spec"]["execs"][0]["path"] == "/usr/bin/web"
    _seed(b, locked=False).workload
    vigil("profiles", "reset", "--store", str(b), "--all")
    assert json.loads(vigil("profiles", "list", "--store", str(b), "--json").stdout or "null") \
        is None
    r = vigil("profiles", "import", "--store", str(b), str(out))
    assert r.returncode == 0 and "imported 1" in r.stdout, r.stderr
    r = vigil("profiles", "lock", "--store", str(b), "shop/deployment/web/app")
    assert r.returncode == 0 and "locked 1" in r.stdout
    shown = json.loads(vigil("profiles", "show", "--store", str(b), "shop/deployment/web/app",
                             "--json").stdout)
    assert shown["status"] == "locked" and shown["files"] == ["/etc/web.conf"]
    r = vigil("profiles", "learn", "--store", str(b), "--for", "10m")
    assert r.returncode == 0 and ProfileBook(str(b)).setting("window") == 600.0
    r = vigil("profiles", "lock", "--store", str(b))
    assert r.returncode == 2 and "--all" in r.stderr


def test_import_errors_name_file_line_and_key(tmp_path):
    db = tmp_path / "a.db"
    _seed(db)
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: vigil.dev/v1\nkind: WorkloadProfile\nmetadata: {name: w}\n"
                   "spec:\n  listen:\n  - {port: 99999, protocol: TCP}\n")
    r = vigil("profiles", "import", "--store", str(db), str(bad))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert f"{bad}:6:" in r.stderr and "spec.listen[0].port" in r.stderr
    bad.write_text("apiVersion: vigil.dev/v1\nkind: WorkloadProfile\nmetadata: {name: w}\n"
                   "spec:\n  colour: red\n")
    r = vigil("profiles", "import", "--store", str(db), str(bad))
    assert r.returncode == 1 and f"{bad}:5:" in r.stderr and "unknown key 'colour'" in r.stderr
    r = vigil("profiles", "show", "--store", str(db), "nope")
    assert r.returncode == 1 and "no profile 'nope'" in r.stderr
    r = vigil("profiles", "list", "--store", str(tmp_path / "missing.db"))
    assert r.returncode == 1 and "Traceback" not in r.stderr


def test_policy_from_profile_validates(tmp_path):
    db = tmp_path / "a.db"
    p = _seed(db, locked=True)
    out = tmp_path / "pol.yaml"
    r = vigil("profiles", "policy", "--store", str(db), p.workload, "-o", str(out))
    assert r.returncode == 0, r.stderr
    r = vigil("policy", "validate", "--json", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    pols = {x["policy"]: x for x in json.loads(r.stdout)}
    assert pols["NetworkPolicy shop/vigil-profile-shop-deployment-web-app"]["mode"] == "audit"
    assert set(pols["NetworkPolicy shop/vigil-profile-shop-deployment-web-app"]["isolates"]) == \
        {"egress", "ingress"}
    net, vp = yaml.safe_load_all(out.read_text())
    assert net["spec"]["egress"] == [
        {"to": [{"ipBlock": {"cidr": "10.0.0.5/32"}}], "ports": [{"protocol": "TCP", "port": 5432}]},
        {"to": [{"ipBlock": {"cidr": "::1/128"}}], "ports": [{"protocol": "TCP", "port": 80}]}]
    assert net["spec"]["ingress"] == [{"ports": [{"protocol": "TCP", "port": 8080}],
                                       "from": [{"ipBlock": {"cidr": "10.0.0.9/32"}}]}]
    assert vp["spec"]["exec"] == {"allow": [{"path": "/usr/bin/web"}]}
    d = p.to_dict()
    with pytest.raises(PolicyFromProfileError, match="no label in common"):
        policies_for(dict(d, labels={}))
    with pytest.raises(PolicyFromProfileError, match="host executable"):
        policies_for(dict(d, kind="host"))


@pytest.mark.parametrize("entry,msg", [
    ("[{name: sh}]", "exec.allow takes paths only"),
    ("[]", "an empty allow list would kill every exec"),
    ("[{path: bin/sh}]", "expected an absolute path"),
])
def test_exec_allow_is_checked(tmp_path, entry, msg):
    f = tmp_path / "p.yaml"
    f.write_text("apiVersion: vigil.dev/v1\nkind: VigilPolicy\nmetadata: {name: x}\nspec:\n"
                 f"  exec:\n    allow: {entry}\n")
    r = vigil("policy", "validate", str(f))
    assert r.returncode == 1 and msg in r.stderr and f"{f}:6:" in r.stderr, r.stderr


def test_profiles_config_errors(tmp_path):
    cfg = tmp_path / "v.yaml"
    cfg.write_text("profiles:\n  enabled: true\n  window: -5m\n")
    with pytest.raises(ConfigError) as e:
        load_config(str(cfg))
    assert f"{cfg}:3" in str(e.value) and "profiles.window" in str(e.value)
    cfg.write_text("profiles:\n  file_prefixes: [etc]\n")
    with pytest.raises(ConfigError, match="not an absolute path"):
        load_config(str(cfg))
    cfg.write_text("profiles: {enabled: true, window: 10m}\n")
    assert load_config(str(cfg))["profiles"]["window"] == 600.0
