"""VigilPolicy process selectors (`process: {paths, names}` on egress entries),
live: the exec-time name and executable path tag a task in the kernel (task
storage, inherited at fork), and the connect hooks judge its connections with
the entries of its classes.  Real processes on the host, a podman container."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from podman_env import make_rootfs, poll, skip_reason
from test_enforce_e2e import Agent, Listeners, connect, free_port, run_in, nc_script
from vigil.enforce.documents import PolicyError
from vigil.enforce.loader import load_policies

pytestmark = pytest.mark.slow

CHILD = r"""
import os, socket, sys, threading
port = int(sys.argv[1])
def try_():
    s = socket.socket()
    try:
        s.connect(("127.0.0.1", port)); return 0
    except OSError as e:
        return e.errno
    finally:
        s.close()
out = {}
t = threading.Thread(target=lambda: out.setdefault("thread", try_())); t.start(); t.join()
pid = os.fork()
if pid == 0:
    os._exit(try_())
_, st = os.waitpid(pid, 0)
print(try_(), out["thread"], os.WEXITSTATUS(st))
"""


def test_a_process_selector_is_egress_only_and_checked(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text("apiVersion: vigil.dev/v1\nkind: VigilPolicy\nmetadata: {name: x}\nspec:\n"
                 "  ingress:\n    deny: [{ports: [\"22\"], process: {names: [sshd]}}]\n")
    with pytest.raises(PolicyError, match=r"p.yaml:6: .*spec.ingress.deny\[0\].process: a "
                                          "process selector applies to egress only"):
        load_policies([str(p)])
    p.write_text("apiVersion: vigil.dev/v1\nkind: VigilPolicy\nmetadata: {name: x}\nspec:\n"
                 "  egress:\n    deny:\n    - ports: [\"80\"]\n      process: {paths: [curl]}\n")
    with pytest.raises(PolicyError, match=r"process.paths\[0\]: path 'curl': expected an "
                                          "absolute path"):
        load_policies([str(p)])
    p.write_text("apiVersion: vigil.dev/v1\nkind: VigilPolicy\nmetadata: {name: x}\nspec:\n"
                 "  egress:\n    deny: [{ports: [\"80\"], process: {}}]\n")
    with pytest.raises(PolicyError, match="expected paths"):
        load_policies([str(p)])


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("needs root (BPF)")
    tmp = tmp_path_factory.mktemp("procsel")
    real = os.path.realpath(sys.executable)
    shutil.copy(real, tmp / "vpy")                 # tagged by its path
    (tmp / "vproc-name").symlink_to(real)          # tagged by its exec-time name
    (tmp / "child.py").write_text(CHILD)
    a, b = free_port(), free_port()
    lst = Listeners((a, b))
    pol = tmp / "policies.yaml"
    pol.write_text(f"""
apiVersion: vigil.dev/v1
kind: VigilPolicy
metadata: {{name: host-tools}}
spec:
  selector: {{host: true}}
  egress:
    deny:
    - cidr: 127.0.0.1/32
      ports: ["{b}"]
      process: {{paths: [{tmp / "vpy"}], names: [vproc-name]}}
---
apiVersion: vigil.dev/v1
kind: VigilPolicy
metadata: {{name: only-nc}}
spec:
  selector: {{namespaces: [procsel]}}
  egress:
    allow: [{{cidr: 127.0.0.0/8, ports: ["{a}"], process: {{paths: [/bin/busybox-nc]}}}}]
""")
    ag = Agent(tmp, str(pol))
    yield tmp, ag, a, b
    ag.stop()
    lst.close()


def run_child(exe, tmp, port):
    r = subprocess.run([str(exe), str(tmp / "child.py"), str(port)], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


def test_a_path_selected_process_its_threads_and_forks_are_denied(setup):
    tmp, ag, a, b = setup
    assert run_child(tmp / "vpy", tmp, b) == ["1", "1", "1"]      # EPERM everywhere
    assert run_child(tmp / "vpy", tmp, a) == ["0", "0", "0"]      # another port: allowed
    found = poll(lambda: [x for x in ag.alerts("Network policy denied egress")
                          if x["output_fields"]["vigil.policy"] == "VigilPolicy host-tools"], 10)
    assert found and found[0]["output_fields"]["vigil.peer"] == f"127.0.0.1:{b}/TCP"


def test_a_name_selected_process_is_denied_and_others_are_not(setup):
    tmp, ag, a, b = setup
    assert run_child(tmp / "vproc-name", tmp, b) == ["1", "1", "1"]
    assert run_child(os.path.realpath(sys.executable), tmp, b) == ["0", "0", "0"]
    assert connect("127.0.0.1", b) == 0       # this older, untagged process


SKIP = skip_reason()


@pytest.mark.skipif(bool(SKIP), reason=SKIP or "")
def test_an_allow_list_for_one_process_default_denies_the_others(setup):
    tmp, ag, a, b = setup
    root = tmp / "rootfs"
    rootfs = make_rootfs(root, tools=("sh", "echo", "nc"))
    shutil.copy(root / "bin" / "busybox", root / "bin" / "busybox-nc")
    # busybox sh runs its nc applet without an exec: that task's exec-time identity is sh's
    # (/bin/busybox), whatever name it gives itself; /bin/busybox-nc is exec'd for real
    out = run_in(rootfs, ["--label", "io.kubernetes.pod.namespace=procsel"],
                 f"/bin/busybox-nc nc -w 2 127.0.0.1 {a} </dev/null && echo NC-ok || echo NC-fail; "
                 f"/bin/busybox-nc nc -w 2 127.0.0.1 {b} </dev/null && echo NCB-ok || echo NCB-fail; "
                 + nc_script(("SH", "127.0.0.1", a)))
    assert "NC-ok" in out and "NCB-fail" in out and "SH-fail" in out, out
    assert "Operation not permitted" in out, out
