"""Enforcement end to end: `vigil run --policy` with real sockets, processes and
podman containers (busybox --rootfs, --network host: the host's loopback, their
own cgroup) carrying kubelet-style labels.

Listeners on 127.0.0.1 and ::1, ports A and B.  One agent enforces:

* NetworkPolicy web/egress-a: pods app=web of namespace web may reach only A;
* NetworkPolicy closed/no-ingress: pods of namespace closed accept no connection;
* VigilPolicy audit-b (audit): namespace audit would not reach B (alerts, allows);
* VigilPolicy no-tools: in namespace web, /bin/busybox-denied and `ncat` are
  killed at exec.

Every container is started after the agent: covered from its first exec.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from podman_env import make_rootfs, podman, poll, skip_reason

pytestmark = pytest.mark.slow
VIGIL = str(Path(sys.executable).parent / "vigil")
SKIP = skip_reason()
if SKIP:
    pytestmark = [pytest.mark.slow, pytest.mark.skip(reason=SKIP)]

WEB = ["--label", "io.kubernetes.pod.namespace=web", "--label", "io.kubernetes.pod.name=web-1",
       "--label", "app=web"]
OTHER = ["--label", "io.kubernetes.pod.namespace=other", "--label", "app=web"]


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Listeners:
    """TCP listeners on 127.0.0.1 and ::1 for each port (accept and close)."""

    def __init__(self, ports):
        self.socks = []
        for port in ports:
            for fam, addr in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
                s = socket.socket(fam, socket.SOCK_STREAM)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((addr, port))
                s.listen(64)
                self.socks.append(s)
                threading.Thread(target=self._serve, args=(s,), daemon=True).start()

    @staticmethod
    def _serve(s):
        while True:
            try:
                c, _ = s.accept()
                c.close()
            except OSError:
                return

    def close(self):
        for s in self.socks:
            s.close()


def connect(host, port, timeout=2.0):
    """0 on success, else the errno (ETIMEDOUT for a timeout)."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect((host, port))
        return 0
    except socket.timeout:
        return 110
    except OSError as e:
        return e.errno
    finally:
        s.close()


class Agent:
    def __init__(self, tmp: Path, policy: str, extra=(), config=None):
        self.tmp = tmp
        self.run_dir = tmp / f"run-{uuid.uuid4().hex[:6]}"
        self.store = tmp / f"alerts-{uuid.uuid4().hex[:6]}.db"
        cfg = tmp / "vigil.yaml"
        cfg.write_text(config or "containers: {hold: 3s}\n")
        # one quiet rule: the kernel sends up little but what enforcement needs
        rules = tmp / "rules.yaml"
        rules.write_text("- rule: never\n  desc: quiet\n  condition: evt.type = execve and "
                         "proc.name = vigil-never-x\n  output: never %proc.name\n"
                         "  priority: DEBUG\n")
        env = dict(os.environ, VIGIL_RUN_DIR=str(self.run_dir))
        self.env = env
        self.out = open(tmp / "agent.out", "w")
        self.err_path = tmp / f"agent-{uuid.uuid4().hex[:6]}.err"
        self.err = open(self.err_path, "w")
        self.p = subprocess.Popen([VIGIL, "run", "-c", str(cfg), "-r", str(rules), "--policy", policy,
                                   "--store", str(self.store), "--output", "json", *extra],
                                  stdout=self.out, stderr=self.err, env=env,
                                  start_new_session=True)
        status = self.run_dir / "enforce.json"
        # a kernel booted in an emulated VM (make test-kernels) starts the agent far slower
        start = float(os.environ.get("VIGIL_TEST_START_TIMEOUT", "60"))
        ok = poll(lambda: status.exists() or self.p.poll() is not None, start)
        assert ok and self.p.poll() is None, self.err_path.read_text()
        time.sleep(1.0)     # the event loop is running

    def alerts(self, rule) -> list:
        r = subprocess.run([VIGIL, "alerts", "--store", str(self.store), "--json", "--rule", rule,
                            "--limit", "0"], capture_output=True, text=True)
        return [json.loads(x) for x in r.stdout.splitlines() if x.strip()]

    def stop(self, sig=signal.SIGINT):
        if self.p.poll() is None:
            self.p.send_signal(sig)
            try:
                self.p.wait(20)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.out.close()
        self.err.close()
        return self.err_path.read_text()


def run_in(rootfs, meta, script):
    p = podman("run", "--rm", "--network", "host", *meta, "--rootfs", rootfs,
               "/bin/sh", "-c", script, timeout=90)
    return p.stdout + p.stderr


def nc_script(*targets):
    return "; ".join(f"nc -w 2 {h} {p} </dev/null && echo {tag}-ok || echo {tag}-fail"
                     for tag, h, p in targets)


@pytest.fixture(scope="module")
def ports():
    a, b, c = free_port(), free_port(), free_port()
    lst = Listeners((a, b))
    yield a, b, c
    lst.close()


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory):
    root = tmp_path_factory.mktemp("enf-rootfs") / "r"
    r = make_rootfs(root, tools=("sh", "cat", "echo", "sleep", "true", "nc"),
                    links={"bin/ncat": "busybox"})
    shutil.copy(root / "bin" / "busybox", root / "bin" / "busybox-denied")
    return r


@pytest.fixture(scope="module")
def policy_file(tmp_path_factory, ports):
    a, b, c = ports
    path = tmp_path_factory.mktemp("enf-pol") / "policies.yaml"
    path.write_text(f"""
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: egress-a, namespace: web}}
spec:
  podSelector: {{matchLabels: {{app: web}}}}
  policyTypes: [Egress]
  egress:
  - to: [{{ipBlock: {{cidr: 127.0.0.0/8}}}}, {{ipBlock: {{cidr: "::1/128"}}}}]
    ports: [{{port: {a}}}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: no-ingress, namespace: closed}}
spec:
  podSelector: {{}}
  policyTypes: [Ingress]
---
apiVersion: vigil.dev/v1
kind: VigilPolicy
metadata: {{name: audit-b}}
spec:
  mode: audit
  selector: {{namespaces: [audit]}}
  egress:
    deny: [{{cidr: 127.0.0.1/32, ports: ["{b}"], protocol: TCP}}]
---
apiVersion: vigil.dev/v1
kind: VigilPolicy
metadata: {{name: no-tools}}
spec:
  selector: {{namespaces: [web]}}
  exec:
    deny: [{{path: /bin/busybox-denied}}, {{name: ncat}}]
""")
    return str(path)


@pytest.fixture(scope="module")
def agent(tmp_path_factory, policy_file):
    ag = Agent(tmp_path_factory.mktemp("enf-agent"), policy_file)
    yield ag
    ag.stop()


def test_selected_container_reaches_only_a_and_the_denial_is_alerted_and_stored(agent, rootfs,
                                                                              ports):
    a, b, _ = ports
    out = run_in(rootfs, WEB, nc_script(("A", "127.0.0.1", a), ("B", "127.0.0.1", b)))
    assert "A-ok" in out and "B-fail" in out, out
    assert "Operation not permitted" in out, out
    found = poll(lambda: agent.alerts("Network policy denied egress"), 10)
    assert found, agent.err_path.read_text()
    f = found[0]["output_fields"]
    assert f["vigil.policy"] == "NetworkPolicy web/egress-a"
    assert f["vigil.peer"] == f"127.0.0.1:{b}/TCP"
    assert f["vigil.workload"] == "web/web-1"
    assert f["proc.name"] == "nc"


def test_unselected_container_and_host_reach_b(agent, rootfs, ports):
    a, b, _ = ports
    out = run_in(rootfs, OTHER, nc_script(("B", "127.0.0.1", b)))
    assert "B-ok" in out, out
    assert connect("127.0.0.1", b) == 0


def test_ipv6_loopback(agent, rootfs, ports):
    a, b, _ = ports
    out = run_in(rootfs, WEB, nc_script(("A6", "::1", a), ("B6", "::1", b)))
    assert "A6-ok" in out and "B6-fail" in out, out
    assert poll(lambda: [x for x in agent.alerts("Network policy denied egress")
                         if x["output_fields"]["vigil.peer"] == f"[::1]:{b}/TCP"], 10)


def test_audit_mode_alerts_but_allows(agent, rootfs, ports):
    a, b, _ = ports
    out = run_in(rootfs, ["--label", "io.kubernetes.pod.namespace=audit"],
                 nc_script(("B", "127.0.0.1", b)))
    assert "B-ok" in out, out
    found = poll(lambda: agent.alerts("Network policy would deny egress (audit)"), 10)
    assert found and found[0]["output_fields"]["vigil.policy"] == "VigilPolicy audit-b"


def test_ingress_policy_refuses_connections_into_the_container(agent, rootfs, ports):
    _, _, c = ports
    name = f"enf-in-{uuid.uuid4().hex[:6]}"
    p = podman("run", "-d", "--name", name, "--network", "host",
               "--label", "io.kubernetes.pod.namespace=closed", "--rootfs", rootfs,
               "/bin/sh", "-c", f"nc -l -p {c} -w 30; echo served")
    assert p.returncode == 0, p.stderr
    try:
        # the listener is up (its socket exists) before we try
        assert poll(lambda: any(f":{c:04X} " in Path(f).read_text()
                                for f in ("/proc/net/tcp", "/proc/net/tcp6")), 15)
        assert connect("127.0.0.1", c, timeout=2.0) == 110      # the SYN is dropped
        assert poll(lambda: agent.alerts("Network policy denied ingress"), 10)
    finally:
        podman("rm", "-f", name)


def test_denied_binaries_die_by_sigkill_before_printing(agent, rootfs):
    out = run_in(rootfs, WEB, "/bin/busybox-denied echo SHOULD-NOT-PRINT; echo rc=$?; "
                              "ncat 2>&1; echo rc2=$?")
    assert "SHOULD-NOT-PRINT" not in out and "applet not found" not in out, out
    assert "rc=137" in out and "rc2=137" in out, out
    found = poll(lambda: agent.alerts("Process killed by policy"), 10)
    assert {x["output_fields"]["vigil.binary"] for x in found} >= {"/bin/busybox-denied"}


def test_a_denied_first_exec_is_killed_while_held(agent, rootfs):
    p = podman("run", "--rm", "--network", "host", *WEB, "--rootfs", rootfs,
               "/bin/busybox-denied", "echo", "SHOULD-NOT-PRINT", timeout=90)
    assert "SHOULD-NOT-PRINT" not in p.stdout
    assert p.returncode == 137, (p.returncode, p.stdout, p.stderr)


def test_policy_show_lists_workloads(agent, rootfs):
    r = subprocess.run([VIGIL, "policy", "show", "--json"], capture_output=True, text=True,
                       env=agent.env)
    st = json.loads(r.stdout)
    assert st["running"] and {p["policy"] for p in st["policies"]} >= {
        "NetworkPolicy web/egress-a", "VigilPolicy no-tools"}
    assert "net_verdict__connect4" in st["programs"]


def test_after_the_agent_exits_everything_connects_again(agent, rootfs, ports):
    a, b, _ = ports
    out = run_in(rootfs, WEB, nc_script(("B", "127.0.0.1", b)))
    assert "B-fail" in out, out
    agent.stop()
    out = run_in(rootfs, WEB, nc_script(("B", "127.0.0.1", b)) + "; /bin/busybox-denied echo hi")
    assert "B-ok" in out and "hi" in out, out


HOST_UDP = """
apiVersion: vigil.dev/v1
kind: VigilPolicy
metadata: {{name: host-udp}}
spec:
  selector: {{host: true}}
  egress:
    deny: [{{cidr: 127.0.0.1/32, ports: ["{port}"], protocol: UDP}},
           {{cidr: 127.0.0.1/32, ports: ["{port}"], protocol: TCP}}]
"""


def udp_send(port, connect_first=False):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        if connect_first:
            s.connect(("127.0.0.1", port))
            s.send(b"x")
        else:
            s.sendto(b"x", ("127.0.0.1", port))
        return 0
    except OSError as e:
        return e.errno
    finally:
        s.close()


def test_udp_to_a_denied_port_fails_and_persist_survives_kill_9(tmp_path, ports):
    _, b, _ = ports
    pol = tmp_path / "udp.yaml"
    pol.write_text(HOST_UDP.format(port=b))
    pin = Path("/sys/fs/bpf/vigil")
    assert not pin.exists(), "pinned enforcement left by someone: vigil policy remove --all"
    ag = Agent(tmp_path, str(pol), extra=("--persist",))
    try:
        assert udp_send(b) == 1                        # sendmsg: EPERM
        assert udp_send(b, connect_first=True) == 1    # connect: EPERM
        assert udp_send(b + 1 if b < 65535 else b - 1) == 0
        assert poll(lambda: [x for x in ag.alerts("Network policy denied egress")
                             if x["output_fields"]["vigil.peer"] == f"127.0.0.1:{b}/UDP"], 10)
        ag.stop(signal.SIGKILL)
        # kill -9: the pins keep the programs attached
        assert pin.is_dir() and any(p.name.startswith("link_") for p in pin.iterdir())
        assert connect("127.0.0.1", b) == 1
        assert udp_send(b) == 1
    finally:
        if ag.p.poll() is None:
            ag.stop(signal.SIGKILL)
        r = subprocess.run([VIGIL, "policy", "remove", "--all"], capture_output=True, text=True)
    assert r.returncode == 0 and "removed" in r.stdout, r.stdout + r.stderr
    assert not pin.exists()
    assert connect("127.0.0.1", b) == 0 and udp_send(b) == 0


def test_a_clean_exit_with_persist_keeps_enforcing_until_removed(tmp_path, ports):
    _, b, _ = ports
    pol = tmp_path / "udp.yaml"
    pol.write_text(HOST_UDP.format(port=b))
    ag = Agent(tmp_path, str(pol), extra=("--persist",))
    ag.stop()
    try:
        assert connect("127.0.0.1", b) == 1
    finally:
        subprocess.run([VIGIL, "policy", "remove", "--all"], capture_output=True)
    assert connect("127.0.0.1", b) == 0
