"""Evasion, tried as an attacker would: one `vigil run` agent (default rules,
JSON alerts on stdout into a file, a private store) for the whole module, and
per variant an untrusted program (tests/data/e2e/vtool.c, compiled into a temp
directory) that reads /etc/shadow in one more devious way.  Every variant must
raise "Read sensitive file untrusted" naming that very process (exact pid):
sensitivity is decided on what was opened (device+inode), whatever path, link,
root, mount or syscall reached it, and trust is decided on the executable's
path, not on a name the process can choose.

Checks do not sleep: after the workload the test creates a symlink to
/etc/shadow (a "fence" alert, "Create link to sensitive file") and waits for
it; the agent judges events in order, so once the fence is out the workload's
open has been judged.

The hardlink to /etc/shadow is made before the agent starts (its creation
would be an alert of its own) and removed when the module ends.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "data" / "e2e"))
from e2e_harness import (AgentProc, build_vtool, require_kernel, rule, wait_until,  # noqa: E402
                         write_rules)

RULE = "Read sensitive file untrusted"
FENCE_RULE = "Create link to sensitive file"
SHADOW = "/etc/shadow"
# a directory name of 120 bytes: 40 of them nest a working directory whose
# absolute path is longer than PATH_MAX (4096)
DEEP_NAME = "d" * 120
DEEP_LEVELS = 40


class Env:
    def __init__(self, d: Path, agent: AgentProc, vtool: Path, hardlink: Path | None,
                 hardlink_skip: str):
        self.d, self.agent, self.vtool = d, agent, vtool
        self.hardlink, self.hardlink_skip = hardlink, hardlink_skip
        self.fences = d / "fences"
        self.fences.mkdir(exist_ok=True)

    def fence(self) -> None:
        """Trigger a known alert and wait for it: everything before it was judged."""
        link = self.fences / uuid.uuid4().hex[:12]
        os.symlink(SHADOW, link)
        try:
            self.agent.wait_alerts(FENCE_RULE, timeout=15, pred=lambda a: a["output_fields"].get(
                "fs.path.target") == str(link))
        finally:
            link.unlink()

    def alerts_for(self, pid: int) -> list:
        return [a for a in self.agent.alerts(RULE) if a["output_fields"].get("proc.pid") == pid]

    def judged(self, pid: int) -> list:
        """The rule's alerts naming pid, once the agent has judged pid's events."""
        self.fence()
        try:
            # the fence proves order; a little grace for an event another CPU reserved late
            return wait_until(lambda: self.alerts_for(pid), timeout=1.0)
        except AssertionError:
            return []


def run_workload(argv, cwd=None, stdin_bytes: bytes | None = None) -> int:
    """Start argv (exec'd directly, so its pid is the reader's pid), wait, check success."""
    p = subprocess.Popen([str(a) for a in argv], cwd=cwd, stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = p.communicate(stdin_bytes, timeout=30)
    assert p.returncode == 0, f"workload {argv} failed ({p.returncode}): {err.decode()}"
    return p.pid


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    require_kernel()
    d = tmp_path_factory.mktemp("evasion")
    vtool = build_vtool(d)
    # trusted names given to an untrusted program: a symlink, a hardlink, a copy
    for sub in ("sym", "hard", "copy"):
        (d / sub).mkdir()
    os.symlink(vtool, d / "sym" / "sshd")
    os.link(vtool, d / "hard" / "sshd")
    shutil.copy2(vtool, d / "copy" / "sshd")
    hardlink, skip = None, ""
    if os.stat(SHADOW).st_dev == os.stat(d).st_dev:
        hardlink = d / "hl-shadow"
        os.link(SHADOW, hardlink)
    else:
        skip = f"{d} is on another file system than /etc: no hardlink to /etc/shadow possible"
    cfg = d / "vigil.yaml"
    cfg.write_text("# defaults: the shipped ruleset\n")
    agent = None
    try:
        agent = AgentProc(["run", "-c", cfg, "--output", "json", "--store", d / "alerts.db"], d,
                          ready="running with")
        yield Env(d, agent, vtool, hardlink, skip)
    finally:
        if agent is not None:
            agent.kill()
        if hardlink is not None and os.path.lexists(hardlink):
            hardlink.unlink()


# --- the variants ---------------------------------------------------------------------
# each: (id, builder(env) -> (argv, cwd), expected fd.name or None when the
# rule may name the file by the path used)

def _deep(e: Env):
    base = e.d
    ups = DEEP_LEVELS + len(base.parts) - 1 + 1       # one more ".." than needed: stays at /
    return [e.vtool, "deepcwd", base, DEEP_LEVELS, DEEP_NAME, "../" * ups + "etc/shadow"], None


def _symlink_file(e: Env):
    link = e.d / f"sl-{uuid.uuid4().hex[:8]}"
    os.symlink(SHADOW, link)
    return [e.vtool, "open", link], None


def _symlink_dir(e: Env):
    link = e.d / f"etc-{uuid.uuid4().hex[:8]}"
    os.symlink("/etc", link)
    return [e.vtool, "open", link / "shadow"], None


def _hardlink(e: Env):
    if e.hardlink is None:
        pytest.skip(e.hardlink_skip)
    return [e.vtool, "open", e.hardlink], None


def _bind_mount(e: Env):
    if not shutil.which("unshare"):
        pytest.skip("unshare (util-linux) is not installed")
    target = e.d / f"bind-{uuid.uuid4().hex[:8]}"
    target.mkdir()
    # a private mount namespace: the bind mount never shows on the host; unshare
    # and sh exec, so the reader keeps the pid we started
    script = 'mount --bind /etc "$1" && exec "$2" open "$1/shadow"'
    return ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", target,
            e.vtool], None


VARIANTS = [
    ("plain", lambda e: ([e.vtool, "open", SHADOW], None), SHADOW),
    ("double-slashes", lambda e: ([e.vtool, "open", "//etc///shadow"], None), SHADOW),
    ("dot", lambda e: ([e.vtool, "open", "/etc/./shadow"], None), SHADOW),
    ("dotdot", lambda e: ([e.vtool, "open", "/etc/../etc/shadow"], None), SHADOW),
    ("leading-dot-and-slashes", lambda e: ([e.vtool, "open", "/./etc//./shadow"], None), SHADOW),
    ("up-from-another-dir", lambda e: ([e.vtool, "open", "/usr/../etc/ssh/../shadow"], None),
     SHADOW),
    ("relative-cwd-etc", lambda e: ([e.vtool, "open", "shadow"], "/etc"), SHADOW),
    ("relative-cwd-tmp", lambda e: ([e.vtool, "open", "../etc/shadow"], "/tmp"), SHADOW),
    ("dirfd", lambda e: ([e.vtool, "openat", "/etc", "shadow"], None), SHADOW),
    ("dirfd-trailing-slashes", lambda e: ([e.vtool, "openat", "/etc//", "./shadow"], None),
     SHADOW),
    ("dirfd-up", lambda e: ([e.vtool, "openat", "/usr", "../etc/shadow"], None), SHADOW),
    ("long-300", lambda e: ([e.vtool, "open", "/etc/" + "./" * 150 + "shadow"], None), SHADOW),
    ("long-4000-dotdot", lambda e: ([e.vtool, "open", "/" + "tmp/../" * 570 + "etc/shadow"],
                                    None), SHADOW),
    ("long-4000-slashes", lambda e: ([e.vtool, "open", "/" * 4080 + "etc/shadow"], None), SHADOW),
    ("cwd-beyond-path-max", _deep, SHADOW),
    ("symlink-in-tmp", _symlink_file, None),
    ("symlink-to-etc-dir", _symlink_dir, None),
    ("hardlink-made-earlier", _hardlink, None),
    ("proc-self-root", lambda e: ([e.vtool, "open", "/proc/self/root/etc/shadow"], None), None),
    ("proc-1-root", lambda e: ([e.vtool, "open", "/proc/1/root/etc/shadow"], None), None),
    ("bind-mount", _bind_mount, None),
    ("chroot-etc", lambda e: ([e.vtool, "chroot", "/etc", "/shadow"], None), None),
    ("openat2", lambda e: ([e.vtool, "openat2", SHADOW], None), SHADOW),
    ("open_by_handle_at", lambda e: ([e.vtool, "handle", SHADOW, "/etc"], None), None),
    ("io_uring-openat", lambda e: ([e.vtool, "uring-openat", SHADOW], None), SHADOW),
    ("io_uring-openat2", lambda e: ([e.vtool, "uring-openat2", SHADOW], None), SHADOW),
    ("prctl-name-sshd", lambda e: ([e.vtool, "prctl", "sshd", SHADOW], None), SHADOW),
    ("exec-symlink-named-sshd", lambda e: ([e.d / "sym" / "sshd", "open", SHADOW], None), SHADOW),
    ("exec-hardlink-named-sshd", lambda e: ([e.d / "hard" / "sshd", "open", SHADOW], None),
     SHADOW),
    ("copy-named-sshd", lambda e: ([e.d / "copy" / "sshd", "open", SHADOW], None), SHADOW),
]


@pytest.mark.parametrize("build,fd_name", [pytest.param(b, f, id=i) for i, b, f in VARIANTS])
def test_untrusted_shadow_read_alerts(env, build, fd_name):
    argv, cwd = build(env)
    pid = run_workload(argv, cwd=cwd)
    found = env.judged(pid)
    assert found, (f"no {RULE!r} alert for pid {pid} ({[str(a)[:80] for a in argv]}); "
                   f"agent stderr: {env.agent.stderr()[-1500:]}")
    a = found[0]
    assert a["priority"] == "Warning"
    if fd_name is not None:
        # paths are normalised: the alert names the file, not the spelling used
        assert a["output_fields"]["fd.name"] == fd_name, a["output_fields"]


# --- benign look-alikes: real trusted programs at their real paths --------------------

BENIGN = [
    ("chage", ["/usr/bin/chage", "-l", "root"], None),
    ("passwd-status", ["/usr/bin/passwd", "-S", "root"], None),
    ("unix_chkpwd", ["/usr/sbin/unix_chkpwd", "root", "nullok"], b"x\0"),
]


@pytest.mark.parametrize("argv,stdin", [pytest.param(a, s, id=i) for i, a, s in BENIGN])
def test_trusted_program_by_path_is_quiet(env, argv, stdin):
    if not os.access(argv[0], os.X_OK):
        pytest.skip(f"{argv[0]} is not installed")
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    p.communicate(stdin, timeout=30)
    # (unix_chkpwd answers "bad password" with a non-zero exit; it did read the file)
    assert not env.judged(p.pid), f"{argv[0]} at its own path is a trusted reader"


def test_untrusted_non_sensitive_reads_are_quiet(env):
    # an ordinary file below /etc, and a file merely *named* shadow elsewhere
    fake = env.d / "fake-etc" / "shadow"
    fake.parent.mkdir(exist_ok=True)
    fake.write_text("not the shadow file\n")
    pids = [run_workload([env.vtool, "open", "/etc/hostname"]),
            run_workload([env.vtool, "open", fake])]
    env.fence()
    for pid in pids:
        assert not env.alerts_for(pid), env.alerts_for(pid)


def test_agent_survived(env):
    assert env.agent.proc.poll() is None, env.agent.stderr()
    assert "Traceback" not in env.agent.stderr()


# --- proc.name is the name set at exec; renaming is an event of its own -----------------

def test_proc_name_is_the_exec_name_and_prctl_is_an_event(tmp_path):
    require_kernel()
    vtool = build_vtool(tmp_path)
    marker = tmp_path / "marker"
    marker.write_text("x")
    rules = write_rules(tmp_path / "rules.yaml", [
        rule("Marker read", f"evt.type in (open, openat) and fd.name = {marker}",
             "marker read (name=%proc.name pid=%proc.pid)"),
        rule("Process renamed", "evt.type = prctl", "renamed (name=%proc.name pid=%proc.pid)"),
    ])
    agent = AgentProc(["run", "-r", rules, "--no-store", "--output", "json"], tmp_path,
                      ready="running with")
    try:
        pid = run_workload([vtool, "prctl", "sshd", marker])
        (a,) = agent.wait_alerts("Marker read", timeout=10,
                                 pred=lambda a: a["output_fields"].get("proc.pid") == pid)
        # Falco's proc.name: the executable's name at exec, not the comm the process chose
        assert a["output_fields"]["proc.name"] == "vtool", a["output_fields"]
        agent.wait_alerts("Process renamed", timeout=5,
                          pred=lambda a: a["output_fields"].get("proc.pid") == pid)
    finally:
        agent.kill()
