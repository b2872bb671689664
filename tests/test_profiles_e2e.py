"""Behavioural profiles end to end: `vigil run` with profiles on, real podman
containers of one image (``podman import`` of a busybox root: no pull) with
kubelet-style labels, --network host (the host's loopback, their own cgroup).

1. Learning: a fixed script (execs, opens under /etc, a connect to a local
   server on port A, a listener on port L) in container 1; the profile holds it.
2. ``vigil profiles lock``; container 2 (a second replica) repeats the script
   without any alert, then twice: a new binary, an unlearned file, a connect to
   port B, a listener on port M -- each alerts once, with the workload.
3. The agent restarts: the profile is still locked; the learned script stays
   quiet, a new binary alerts.
4. ``vigil profiles policy``: both documents validate; enforced, the learned
   connect goes through, port B is refused, the new binary is killed.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import uuid
from pathlib import Path

import pytest

from podman_env import make_rootfs, podman, poll, skip_reason
from test_enforce_e2e import Listeners, free_port

pytestmark = pytest.mark.slow
VIGIL = str(Path(sys.executable).parent / "vigil")
SKIP = skip_reason()
if SKIP:
    pytestmark = [pytest.mark.slow, pytest.mark.skip(reason=SKIP)]

LABELS = ["--label", "io.kubernetes.pod.namespace=prof", "--label",
          "io.kubernetes.container.name=app", "--label", "app=webp"]
QUIET_RULES = ("- rule: never\n  desc: quiet\n  condition: evt.type = execve and "
               "proc.name = vigil-never-x\n  output: never %proc.name\n  priority: DEBUG\n")
RULES = ("Unexpected process in workload", "Unexpected egress", "Unexpected file access",
         "Unexpected listening port")


def vigil(*args, check=True):
    r = subprocess.run([VIGIL, *args], capture_output=True, text=True, timeout=60)
    if check:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


class Agent:
    def __init__(self, tmp: Path, store: Path, extra=(), profiles=True):
        self.store = store
        cfg = tmp / f"vigil-{uuid.uuid4().hex[:6]}.yaml"
        cfg.write_text("containers: {hold: 3s}\n" + (
            "profiles: {enabled: true, window: 1h, flush_interval: 300ms}\n" if profiles else ""))
        rules = tmp / "rules.yaml"
        rules.write_text(QUIET_RULES)
        self.err_path = tmp / f"agent-{uuid.uuid4().hex[:6]}.err"
        self.err = open(self.err_path, "w")
        env = dict(os.environ, VIGIL_RUN_DIR=str(tmp / f"run-{uuid.uuid4().hex[:6]}"))
        self.out = open(tmp / f"agent-{uuid.uuid4().hex[:6]}.out", "w")
        self.p = subprocess.Popen([VIGIL, "run", "-c", str(cfg), "-r", str(rules), "--store",
                                   str(store), "--output", "json", *extra],
                                  stdout=self.out, stderr=self.err, env=env,
                                  start_new_session=True)
        ok = poll(lambda: "rules" in self.err_path.read_text() or self.p.poll() is not None, 60)
        assert ok and self.p.poll() is None, self.err_path.read_text()
        if profiles:
            ok = poll(lambda: self._alive(), 30)
            assert ok, self.err_path.read_text()
        time.sleep(1.5)      # the event loop runs

    def _alive(self):
        from vigil.profiles.book import ProfileBook
        try:
            b = ProfileBook(str(self.store), readonly=True)
        except Exception:
            return False
        try:
            return b.agent_alive()
        finally:
            b.close()

    def alerts(self, rule) -> list:
        r = vigil("alerts", "--store", str(self.store), "--json", "--rule", rule, "--limit", "0")
        return [json.loads(x) for x in r.stdout.splitlines() if x.strip()]

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGINT)
            try:
                self.p.wait(30)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.out.close()
        self.err.close()
        return self.err_path.read_text()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("prof")
    a, b, lp, mp = free_port(), free_port(), free_port(), free_port()
    lst = Listeners((a, b))
    root = tmp / "root"
    make_rootfs(root, tools=("sh", "cat", "echo", "sleep", "true", "nc", "ls", "kill"))
    shutil.copy(root / "bin" / "busybox", root / "bin" / "busybox-new")
    (root / "etc" / "app.conf").write_text("learned\n")
    (root / "etc" / "secret.conf").write_text("never read while learning\n")
    image = f"localhost/vigil-prof-{uuid.uuid4().hex[:8]}:1"
    with tarfile.open(tmp / "root.tar", "w") as t:
        t.add(root, arcname=".")
    r = podman("import", "-q", str(tmp / "root.tar"), image)
    assert r.returncode == 0, r.stderr
    yield {"tmp": tmp, "a": a, "b": b, "l": lp, "m": mp, "image": image,
           "store": tmp / "profiles.db"}
    lst.close()
    podman("image", "rm", "-f", image)


def learned_script(e):
    return (f"cat /etc/app.conf >/dev/null; ls /etc >/dev/null; "
            f"nc -w 2 127.0.0.1 {e['a']} </dev/null && echo a-ok || echo a-fail; "
            f"nc -l -p {e['l']} </dev/null >/dev/null & sleep 1; kill $! ; echo done")


def deviant_script(e):
    return ("/bin/busybox-new true; echo new=$?; cat /etc/secret.conf >/dev/null; "
            f"nc -w 2 127.0.0.1 {e['b']} </dev/null && echo b-ok || echo b-fail; "
            f"nc -l -p {e['m']} </dev/null >/dev/null & sleep 1; kill $! ; echo done")


def run(e, script, name=None):
    args = ["run", "--rm", "--network", "host", *LABELS]
    if name:
        args += ["--name", name]
    p = podman(*args, e["image"], "/bin/sh", "-c", script, timeout=90)
    return p.stdout + p.stderr


def workload(e) -> str:
    return f"prof/image/{e['image']}/app"


def profile(e) -> dict:
    r = vigil("profiles", "show", "--store", str(e["store"]), workload(e), "--json", check=False)
    return json.loads(r.stdout) if r.returncode == 0 else {}


def learned(e):
    d = profile(e)
    return (d and any(x["path"] == "/bin/busybox" for x in d["execs"])
            and "/etc/app.conf" in d["files"]
            and {"addr": "127.0.0.1", "port": e["a"], "protocol": "TCP"} in d["egress"]
            and {"port": e["l"], "protocol": "TCP"} in d["listen"]) and d


def test_learn_lock_alert_restart_policy(env):
    e = env
    agent = Agent(e["tmp"], e["store"])
    try:
        out = run(e, learned_script(e), name=f"prof-1-{uuid.uuid4().hex[:6]}")
        assert "a-ok" in out and "done" in out, out
        d = poll(lambda: learned(e), 15)
        assert d, profile(e)
        assert d["status"] == "learning" and d["kind"] == "image"
        assert d["labels"] == {"app": "webp"} and d["namespace"] == "prof"
        assert "/etc/secret.conf" not in d["files"]
        for rule in RULES:
            assert agent.alerts(rule) == [], rule     # learning: no alerts

        r = vigil("profiles", "lock", "--store", str(e["store"]), workload(e))
        assert "applied by the running agent" in r.stdout, r.stdout + r.stderr
        assert profile(e)["status"] == "locked"

        # a second replica: learned behaviour is quiet, deviations alert once each
        out = run(e, learned_script(e), name=f"prof-2-{uuid.uuid4().hex[:6]}")
        assert "a-ok" in out, out
        time.sleep(1.5)
        for rule in RULES:
            assert agent.alerts(rule) == [], (rule, agent.alerts(rule))
        for _ in range(2):
            out = run(e, deviant_script(e), name=f"prof-3-{uuid.uuid4().hex[:6]}")
            assert "b-ok" in out and "done" in out, out
        want = {"Unexpected process in workload": "/bin/busybox-new",
                "Unexpected file access": "/etc/secret.conf",
                "Unexpected egress": f"127.0.0.1:{e['b']}/TCP",
                "Unexpected listening port": f"{e['m']}/TCP"}
        assert poll(lambda: all(agent.alerts(r) for r in RULES), 10), \
            ({r: agent.alerts(r) for r in RULES}, profile(e))
        time.sleep(1.0)
        for rule, value in want.items():
            got = agent.alerts(rule)
            assert len(got) == 1, (rule, got)
            f = got[0]["output_fields"]
            assert f["vigil.workload"] == workload(e)
            assert f["vigil.profile.value"] == value
            assert f["k8s.ns.name"] == "prof" and f["container.id"]
        assert profile(e)["replicas"] >= 3
    finally:
        err = agent.stop()
    assert "Traceback" not in err, err

    # the agent restarts: the profile is kept, still locked
    agent = Agent(e["tmp"], e["store"])
    try:
        d = profile(e)
        assert d["status"] == "locked" and learned(e)
        before = len(agent.alerts("Unexpected process in workload"))
        out = run(e, learned_script(e) + "; /bin/busybox-new true")
        assert "a-ok" in out, out
        assert poll(lambda: len(agent.alerts("Unexpected process in workload")) == before + 1, 10)
        time.sleep(1.0)
        assert len(agent.alerts("Unexpected egress")) == 1
        assert len(agent.alerts("Unexpected file access")) == 1
        assert len(agent.alerts("Unexpected listening port")) == 1
    finally:
        err = agent.stop()
    assert "Traceback" not in err, err

    # policies from the profile: valid, and enforced they let the learned through
    audit = e["tmp"] / "audit.yaml"
    vigil("profiles", "policy", "--store", str(e["store"]), workload(e), "-o", str(audit))
    r = vigil("policy", "validate", "--json", str(audit))
    pols = json.loads(r.stdout)
    assert {p["mode"] for p in pols} == {"audit"} and len(pols) == 2
    enforcing = e["tmp"] / "enforce.yaml"
    vigil("profiles", "policy", "--store", str(e["store"]), workload(e), "--enforce",
          "-o", str(enforcing))
    r = vigil("policy", "validate", "--json", str(enforcing))
    assert {p["mode"] for p in json.loads(r.stdout)} == {"enforce"}
    agent = Agent(e["tmp"], e["tmp"] / "enforce.db", extra=("--policy", str(enforcing)),
                  profiles=False)
    try:
        out = run(e, learned_script(e) + f"; nc -w 2 127.0.0.1 {e['b']} </dev/null && "
                  "echo b-ok || echo b-fail; /bin/busybox-new true; echo new=$?")
        assert "a-ok" in out and "done" in out, out
        assert "b-fail" in out and "new=137" in out, out
        assert poll(lambda: agent.alerts("Process killed by policy"), 10)
        killed = agent.alerts("Process killed by policy")
        assert {a["output_fields"]["vigil.binary"] for a in killed} == {"/bin/busybox-new"}
        assert agent.alerts("Network policy denied egress")
    finally:
        err = agent.stop()
    assert "Traceback" not in err, err
