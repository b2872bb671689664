"""VigilPolicy file.deny: opens of a file refused by identity, on whichever
hook this kernel has.  With BPF LSM or fmod_ret (the kernels of `make
test-kernels` booted with lsm=...,bpf) the open fails with EPERM; on the
tracepoint path (this host: no LSM, no fentry) the process is killed at the
open's exit, before it runs another instruction.  The same alert either way;
the test asserts the verdict of the hook the agent reports it took."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile

import pytest

from podman_env import poll
from test_enforce_e2e import VIGIL, Agent
from vigil.enforce.documents import PolicyError
from vigil.enforce.loader import load_policies

pytestmark = pytest.mark.slow

READER = r"""
import os, sys
path, how = sys.argv[1], sys.argv[2]
flags = os.O_RDONLY if how == "read" else os.O_WRONLY | os.O_APPEND
try:
    fd = os.open(path, flags)
except OSError as e:
    print("errno", e.errno, flush=True)
    sys.exit(3)
print("opened", flush=True)
os.close(fd)
"""

HEAD = "apiVersion: vigil.dev/v1\nkind: VigilPolicy\nmetadata: {name: x}\nspec:\n"


@pytest.mark.parametrize("body,message", [
    ("  file:\n    deny: [{path: etc/shadow}]\n",
     r"p.yaml:6: .*spec.file.deny\[0\].path: path 'etc/shadow': expected an absolute path"),
    ("  file:\n    deny: [{path: /etc/shadow, access: exec}]\n",
     r"spec.file.deny\[0\].access: unknown access 'exec' \(known: read, write, any\)"),
    ("  file:\n    deny: []\n", r"spec.file.deny: expected a list of \{path"),
    ("  file:\n    allow: [{path: /etc/shadow}]\n", r"spec.file.allow: unknown key 'allow' \(known: deny\)"),
    ("  file:\n    deny: [{path: /etc/, access: read}]\n", r"path '/etc/': expected an "
     "absolute path of a file"),
])
def test_file_deny_is_checked(tmp_path, body, message):
    p = tmp_path / "p.yaml"
    p.write_text(HEAD + body)
    with pytest.raises(PolicyError, match=message):
        load_policies([str(p)])


def fs_type(path: str) -> str:
    """The file system type of the mount holding path (/proc/self/mounts)."""
    best, kind = "", ""
    with open("/proc/self/mounts") as f:
        for line in f:
            _src, mnt, typ = line.split()[:3]
            if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
                best, kind = mnt, typ
    return kind


def identity_dir(tmp_path_factory, name: str):
    """(a directory whose files stat(2) names by the kernel's inode, the directory to
    remove afterwards or None).  The VMs of make test-kernels have /tmp on
    overlayfs, whose stat (dev, ino) is not the kernel's inode (a documented limit
    of identity, as for the watched files): there it is on tmpfs."""
    tmp = tmp_path_factory.mktemp(name)
    if fs_type(str(tmp)) != "overlay":
        return tmp, None
    from pathlib import Path
    made = Path(tempfile.mkdtemp(prefix=f"vigil-{name}-", dir="/dev/shm"))
    return made, made


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("needs root (BPF)")
    tmp, made = identity_dir(tmp_path_factory, "filedeny")
    secret, audited, other = tmp / "secret", tmp / "audited", tmp / "other"
    for f in (secret, audited, other):
        f.write_text("x\n")
    (tmp / "reader.py").write_text(READER)
    (tmp / "link").symlink_to(secret)
    os.link(secret, tmp / "hardlink")
    pol = tmp / "policies.yaml"
    pol.write_text(f"""
apiVersion: vigil.dev/v1
kind: VigilPolicy
metadata: {{name: no-secret}}
spec:
  selector: {{host: true}}
  file:
    deny: [{{path: {secret}, access: read}}]
---
apiVersion: vigil.dev/v1
kind: VigilPolicy
metadata: {{name: watch-audited}}
spec:
  mode: audit
  selector: {{host: true}}
  file:
    deny: [{{path: {audited}}}]
""")
    agent = Agent(tmp, str(pol))
    status = json.loads((agent.run_dir / "enforce.json").read_text())
    yield tmp, agent, status
    agent.stop()
    if made is not None:
        shutil.rmtree(made, ignore_errors=True)


def read(tmp, path, how="read"):
    return subprocess.run([sys.executable, str(tmp / "reader.py"), str(path), how],
                          capture_output=True, text=True, timeout=60)


def denied(r, hook: str) -> bool:
    """The open was refused the way this hook refuses it."""
    if hook == "tracepoint":
        return r.returncode == -signal.SIGKILL and r.stdout == ""
    return r.returncode == 3 and r.stdout.split() == ["errno", "1"]


def test_the_best_hook_this_kernel_has_is_used(setup):
    _tmp, agent, status = setup
    hook = status["file_hook"]
    from vigil.kernel.probe import HOOKS, probe_hook, probes_path
    from vigil.kernel.environment import tracefs_path
    from vigil.state.containers.cgroupfs import find_v2_mount
    assert os.path.exists(probes_path())
    by = {h.name: h for h in HOOKS}
    avail = {n: probe_hook(by[n], tracefs_path(), find_v2_mount()).available
             for n in ("lsm", "fmod_ret")}
    want = "lsm" if avail["lsm"] else "fmod_ret" if avail["fmod_ret"] else "tracepoint"
    assert hook == want, status
    # the hooks not taken say why
    for h in ("lsm", "fmod_ret")[:("lsm", "fmod_ret", "tracepoint").index(want)]:
        assert status["file_hook_why"][h], status
    # one warning line where opens cannot be refused (the tracepoint fallback)
    err = agent.err_path.read_text()
    lines = [x for x in err.splitlines() if "file open enforcement:" in x]
    assert len(lines) == (1 if hook == "tracepoint" else 0), err
    if hook == "tracepoint":
        assert "a denied open kills the process" in lines[0] and "lsm: " in lines[0]


def test_a_denied_file_cannot_be_read_by_any_name(setup):
    tmp, agent, status = setup
    hook = status["file_hook"]
    for name in ("secret", "link", "hardlink"):
        r = read(tmp, tmp / name)
        assert denied(r, hook), (name, r)
    # writing is not denied (access: read), nor is another file
    assert read(tmp, tmp / "secret", "write").stdout == "opened\n"
    assert read(tmp, tmp / "other").stdout == "opened\n"
    verdict = "kill" if hook == "tracepoint" else "deny"
    rule = "File open denied by policy"
    # three denials (of the same inode: one event a second, the rest counted and
    # reported with vigil.repeat_count)
    total = lambda: sum(a["output_fields"].get("vigil.repeat_count", 1)  # noqa: E731
                        for a in agent.alerts(rule))
    ok = poll(lambda: total() >= 3, 60, 1.0)
    assert ok, (agent.alerts(rule), agent.err_path.read_text())
    alerts = agent.alerts(rule)
    st = os.stat(tmp / "secret")
    for a in alerts:
        f = a["output_fields"]
        assert f["vigil.policy"] == "VigilPolicy no-secret" and a["priority"] == "Critical"
        assert f["vigil.verdict"] == verdict and f["vigil.hook"] == hook
        assert f["vigil.workload"] == "host" and f["vigil.access"] == "read"
        # the file's own path, walked from the dentry the open reached
        assert f["fd.name"] in (str(tmp / "secret"), str(tmp / "hardlink"))
        assert (f["fd.dev"], f["fd.ino"]) == (st.st_dev, st.st_ino)     # as stat(2) says
    first = next(a["output_fields"] for a in alerts if "proc.pid" in a["output_fields"])
    assert first["proc.name"] == os.path.basename(sys.executable)[:15]


def test_audit_mode_reports_and_allows(setup):
    tmp, agent, _status = setup
    assert read(tmp, tmp / "audited").stdout == "opened\n"
    ok = poll(lambda: agent.alerts("File open would be denied by policy (audit)"), 60, 1.0)
    assert ok
    f = agent.alerts("File open would be denied by policy (audit)")[0]["output_fields"]
    assert f["vigil.verdict"] == "audit" and f["vigil.policy"] == "VigilPolicy watch-audited"
    assert f["fd.name"] == str(tmp / "audited")


def test_a_replaced_file_is_denied_again(setup):
    tmp, agent, status = setup
    new = tmp / "secret.new"
    new.write_text("y\n")
    os.rename(new, tmp / "secret")         # as passwd replaces /etc/shadow: a new inode
    ok = poll(lambda: denied(read(tmp, tmp / "secret"), status["file_hook"]), 15, 0.5)
    assert ok, agent.err_path.read_text()


def test_policy_show_names_the_hook(setup):
    _tmp, agent, status = setup
    r = subprocess.run([VIGIL, "policy", "show"], capture_output=True, text=True, env=agent.env,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    line = next(x for x in r.stdout.splitlines() if x.startswith("file opens denied by: "))
    hook = status["file_hook"]
    assert line.startswith(f"file opens denied by: {hook} ")
    assert ("kill at the open's exit" in line) is (hook == "tracepoint")
