"""What the kernel says about a process, live: capability sets at exec (file
capabilities, ambient ones, setuid to nobody) and after the setuid family and
capset; session and process-group ids and their leaders (setsid, setpgid);
the start time (proc.duration); the executable's inode and flags (overlay upper
layer from podman --rootfs DIR:O, writable, memfd); failed execs.  Field values
are checked against libsinsp's definitions (thread.cap_*, proc.sid, proc.sname,
proc.vpgid, proc.is_*_leader, proc.duration, proc.exe_ino*, proc.is_exe_*)."""
import os
import shutil
import stat
import subprocess
import sys
import textwrap
import time
from types import SimpleNamespace

import pytest

from vigil.events import Kind
from vigil.events.structs import EXE_LOWER_LAYER, EXE_UPPER_LAYER, EXE_WRITABLE
from vigil.rules import fields as F
from vigil.rules.fields.proc_state import CAP_NAMES, caps_text

KINDS = {Kind.EXEC, Kind.FORK, Kind.EXIT, Kind.SETUID, Kind.SETID, Kind.CAPSET, Kind.SESSION,
         Kind.EXECFAIL}
NOBODY = 65534
SETPRIV = shutil.which("setpriv")
SETCAP = shutil.which("setcap")
SETSID = shutil.which("setsid")
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


@pytest.fixture(scope="module")
def pc(start_pipeline):
    c = start_pipeline(KINDS)
    yield c
    c.stop()


def field(c, name, ev):
    cx = SimpleNamespace(proctable=c.pipeline.proctable, written_paths=None, evnum=0)
    return F.lookup(name).fn(ev, cx)


def own_caps(which: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(which + ":"):
            return int(line.split()[1], 16)
    raise AssertionError(which)


def execs_of(c, path, count=1, pid=None):
    return c.wait_for(lambda e: e.kind == Kind.EXEC and e.exe == path
                      and (pid is None or e.pid == pid), count=count)


def py(code: str, *args, **kw):
    """Run a Python child (root); its stdout lines."""
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True,
                       text=True, timeout=20, **kw)
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


@pytest.fixture
def exe_copy(tmp_path):
    """A private copy of /bin/true (its own inode), world-readable path."""
    os.chmod(tmp_path, 0o755)
    p = tmp_path / "vtrue"
    shutil.copy("/bin/true", p)
    os.chmod(p, 0o755)
    return p


# --------------------------------------------------------------- capabilities

def test_caps_text_is_falco_form():
    assert caps_text(0) == ""
    assert caps_text(None) is None
    assert caps_text(0b11) == "CAP_CHOWN CAP_DAC_OVERRIDE"
    assert caps_text((1 << 21) | (1 << 40)) == "CAP_SYS_ADMIN CAP_CHECKPOINT_RESTORE"
    assert caps_text(1 << 41) == ""      # a bit with no name is left out, as libsinsp does
    assert len(CAP_NAMES) == 41


def test_root_exec_has_the_full_sets(pc, exe_copy):
    subprocess.run([str(exe_copy)], check=True)
    ev = execs_of(pc, str(exe_copy))[0]
    full = caps_text(own_caps("CapBnd"))      # root's exec: permitted = effective = bounding set
    assert "CAP_SYS_ADMIN" in full and full.startswith("CAP_CHOWN CAP_DAC_OVERRIDE")
    assert field(pc, "thread.cap_effective", ev) == full
    assert field(pc, "thread.cap_permitted", ev) == full
    assert field(pc, "thread.cap_inheritable", ev) == ""


@pytest.mark.skipif(SETPRIV is None, reason="setpriv not installed")
def test_exec_as_nobody_has_empty_sets_not_na(pc, exe_copy):
    subprocess.run([SETPRIV, "--reuid", str(NOBODY), "--regid", str(NOBODY), "--clear-groups",
                    str(exe_copy)], check=True)
    ev = execs_of(pc, str(exe_copy))[0]
    assert ev.uid == NOBODY
    for which in ("effective", "permitted", "inheritable"):
        assert field(pc, f"thread.cap_{which}", ev) == ""


@pytest.mark.skipif(SETPRIV is None, reason="setpriv not installed")
def test_ambient_caps_survive_exec_as_nobody(pc, exe_copy):
    subprocess.run([SETPRIV, "--reuid", str(NOBODY), "--regid", str(NOBODY), "--clear-groups",
                    "--inh-caps=+net_raw", "--ambient-caps=+net_raw", str(exe_copy)], check=True)
    ev = execs_of(pc, str(exe_copy))[0]
    for which in ("effective", "permitted", "inheritable"):
        assert field(pc, f"thread.cap_{which}", ev) == "CAP_NET_RAW"


@pytest.mark.skipif(SETPRIV is None or SETCAP is None, reason="setpriv/setcap not installed")
def test_file_capabilities_are_in_the_exec(pc, exe_copy):
    subprocess.run([SETCAP, "cap_chown,cap_net_raw+ep", str(exe_copy)], check=True)
    subprocess.run([SETPRIV, "--reuid", str(NOBODY), "--regid", str(NOBODY), "--clear-groups",
                    str(exe_copy)], check=True)
    ev = execs_of(pc, str(exe_copy))[0]
    assert field(pc, "thread.cap_effective", ev) == "CAP_CHOWN CAP_NET_RAW"
    assert field(pc, "thread.cap_permitted", ev) == "CAP_CHOWN CAP_NET_RAW"
    assert field(pc, "thread.cap_inheritable", ev) == ""
    # the process table keeps them for the process's later events
    pc.wait_for(lambda e: e.kind == Kind.EXIT and e.pid == ev.pid)
    ex = pc.find(lambda e: e.kind == Kind.EXIT and e.pid == ev.pid)[0]
    assert field(pc, "thread.cap_effective", ex) == "CAP_CHOWN CAP_NET_RAW"


CAPSET_TO_CHOWN = """
    import ctypes, os
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    hdr = (ctypes.c_uint32 * 2)(0x20080522, 0)            # _LINUX_CAPABILITY_VERSION_3, self
    data = (ctypes.c_uint32 * 6)(1, 1, 0, 0, 0, 0)        # eff, prm, inh (low words), high words
    assert libc.syscall(126, hdr, data) == 0, ctypes.get_errno()   # capset
    print(os.getpid())
"""


def test_capset_changes_the_sets(pc):
    (pid,) = map(int, py(CAPSET_TO_CHOWN))
    ev = pc.wait_for(lambda e: e.kind == Kind.CAPSET and e.pid == pid)[0]
    assert (ev.ret, ev.syscall, ev.cap_effective, ev.cap_permitted) == (0, "capset", 1, 1)
    assert F.evt_type(ev) == "capset"
    assert field(pc, "thread.cap_effective", ev) == "CAP_CHOWN"
    ex = pc.wait_for(lambda e: e.kind == Kind.EXIT and e.pid == pid)[0]
    assert field(pc, "thread.cap_permitted", ex) == "CAP_CHOWN"
    assert field(pc, "thread.cap_inheritable", ex) == ""


def test_setresuid_to_nobody_drops_the_caps(pc):
    # raw syscalls: glibc's wrappers would signal every thread (one event each)
    (pid,) = map(int, py(f"""
        import ctypes, os
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        assert libc.syscall(117, {NOBODY}, {NOBODY}, {NOBODY}) == 0     # setresuid
        assert libc.syscall(106, 4321) == -1                            # setgid: EPERM now
        print(os.getpid())
    """))
    evs = pc.wait_for(lambda e: e.kind == Kind.SETID and e.pid == pid, count=2)
    res, gid = evs
    assert (res.syscall, res.id_args, res.ret, res.uid) == ("setresuid", [NOBODY] * 3, 0, NOBODY)
    assert F.evt_type(res) == "setresuid"
    assert field(pc, "thread.cap_effective", res) == ""
    assert (gid.syscall, gid.id_args, gid.ret) == ("setgid", [4321], -1)
    ex = pc.wait_for(lambda e: e.kind == Kind.EXIT and e.pid == pid)[0]
    assert field(pc, "thread.cap_permitted", ex) == ""


def test_setuid_event_carries_the_caps_after(pc):
    (pid,) = map(int, py(f"""
        import ctypes, os
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        assert libc.syscall(105, {NOBODY}) == 0
        print(os.getpid())
    """))
    ev = pc.wait_for(lambda e: e.kind == Kind.SETUID and e.pid == pid)[0]
    assert (ev.new_uid, ev.ret, ev.cap_effective) == (NOBODY, 0, 0)
    assert field(pc, "thread.cap_effective", ev) == ""


# --------------------------------------------------------------- session and process group

@pytest.mark.skipif(SETSID is None, reason="setsid not installed")
def test_setsid_leader_and_its_child(pc, tmp_path):
    marker = tmp_path / "m"
    # setsid(1) is not a group leader here (a child of the test), so it calls setsid()
    # itself and execs sh; sh (no job control) runs cat in its own group
    p = subprocess.run([SETSID, "/bin/sh", "-c", f"/bin/cat {marker} 2>/dev/null; echo $$"],
                       capture_output=True, text=True, timeout=10)
    sh_pid = int(p.stdout.split()[-1])
    ss = pc.wait_for(lambda e: e.kind == Kind.SESSION and e.pid == sh_pid)[0]
    assert (ss.syscall, ss.ret, ss.sid, ss.vpgid) == ("setsid", sh_pid, sh_pid, sh_pid)
    sh = execs_of(pc, os.path.realpath("/bin/sh"), pid=sh_pid)[0]
    cat = execs_of(pc, "/usr/bin/cat")[-1] if os.path.realpath("/bin/cat") == "/usr/bin/cat" \
        else execs_of(pc, "/bin/cat")[-1]
    assert cat.ppid == sh_pid
    assert field(pc, "proc.sid", sh) == sh_pid
    assert field(pc, "proc.is_sid_leader", sh) is True
    assert field(pc, "proc.is_vpgid_leader", sh) is True
    assert field(pc, "proc.sname", sh) == "sh"
    assert field(pc, "proc.sid", cat) == sh_pid
    assert field(pc, "proc.vpgid", cat) == sh_pid
    assert field(pc, "proc.is_sid_leader", cat) is False
    assert field(pc, "proc.is_vpgid_leader", cat) is False
    assert field(pc, "proc.sname", cat) == "sh"
    assert field(pc, "proc.sid.exe", cat) == "/bin/sh"
    assert field(pc, "proc.sid.exepath", cat) == os.path.realpath("/bin/sh")
    assert field(pc, "proc.vpgid.name", cat) == "sh"
    assert field(pc, "proc.vpgid.exepath", cat) == os.path.realpath("/bin/sh")


def test_test_runner_children_are_not_leaders(pc, exe_copy):
    subprocess.run([str(exe_copy)], check=True)
    ev = execs_of(pc, str(exe_copy))[0]
    assert field(pc, "proc.sid", ev) == os.getsid(0)
    assert field(pc, "proc.vpgid", ev) == os.getpgid(0)
    assert field(pc, "proc.is_vpgid_leader", ev) is False
    assert field(pc, "proc.is_sid_leader", ev) is False


def test_setpgid_self_and_by_the_parent(pc, exe_copy):
    out = py(f"""
        import os, time
        a = os.fork()
        if a == 0:                      # its own group, then exec
            os.setpgid(0, 0)
            os.execv({str(exe_copy)!r}, ["vtrue"])
        b = os.fork()
        if b == 0:                      # the parent puts it in a group; it exits without exec
            time.sleep(0.3)
            os._exit(0)
        os.setpgid(b, b)
        os.waitpid(a, 0)
        os.waitpid(b, 0)
        print(a, b)
    """)
    a, b = map(int, out)
    ev = execs_of(pc, str(exe_copy), pid=a)[0]
    assert (ev.vpgid, field(pc, "proc.is_vpgid_leader", ev)) == (a, True)
    sp = pc.wait_for(lambda e: e.kind == Kind.SESSION and e.syscall == "setpgid"
                     and e.id_args == [b, b])[0]
    assert sp.ret == 0 and sp.pid != b       # done by the parent
    ex = pc.wait_for(lambda e: e.kind == Kind.EXIT and e.pid == b)[0]
    assert field(pc, "proc.vpgid", ex) == b
    assert field(pc, "proc.is_vpgid_leader", ex) is True


# --------------------------------------------------------------- start time and the executable

def test_duration_counts_from_fork_not_exec(pc, exe_copy):
    (pid,) = map(int, py(f"""
        import os, time
        c = os.fork()
        if c == 0:
            time.sleep(0.6)
            os.execv({str(exe_copy)!r}, ["vtrue"])
        os.waitpid(c, 0)
        print(c)
    """))
    ev = execs_of(pc, str(exe_copy), pid=pid)[0]
    fork = pc.wait_for(lambda e: e.kind == Kind.FORK and e.child_pid == pid)[0]
    d = field(pc, "proc.duration", ev)
    assert d == ev.time - ev.start_time
    assert 0.55e9 < d < 5e9
    assert abs(ev.start_time - fork.time) < 20_000_000
    assert field(pc, "proc.pid.ts", ev) == ev.start_time


def test_exe_inode_fields(pc, exe_copy):
    st = os.stat(exe_copy)
    subprocess.run([str(exe_copy)], check=True)
    ev = execs_of(pc, str(exe_copy))[0]
    assert field(pc, "proc.exe_ino", ev) == st.st_ino
    assert field(pc, "proc.exe_ino.ctime", ev) == st.st_ctime_ns
    assert field(pc, "proc.exe_ino.mtime", ev) == st.st_mtime_ns
    assert field(pc, "proc.exe_ino.ctime_duration_proc_start", ev) == ev.start_time - st.st_ctime_ns
    assert ev.exe_ctime == st.st_ctime_ns // 10**9     # the seconds form stays


@pytest.mark.skipif(SETPRIV is None, reason="setpriv not installed")
def test_exe_writable(pc, tmp_path, exe_copy):
    mine = tmp_path / "mine"
    shutil.copy(exe_copy, mine)
    os.chown(mine, NOBODY, NOBODY)
    os.chmod(mine, 0o755)
    nobody = [SETPRIV, "--reuid", str(NOBODY), "--regid", str(NOBODY), "--clear-groups"]
    subprocess.run(nobody + [str(exe_copy)], check=True)      # root's 0755 file, run by nobody
    subprocess.run(nobody + [str(mine)], check=True)          # nobody's own file
    subprocess.run([str(exe_copy)], check=True)               # root: CAP_DAC_OVERRIDE
    ro, own = execs_of(pc, str(exe_copy))[0], execs_of(pc, str(mine))[0]
    assert field(pc, "proc.is_exe_writable", ro) is False
    assert field(pc, "proc.is_exe_writable", own) is True
    root = execs_of(pc, str(exe_copy), count=2)[1]
    assert root.uid == 0 and field(pc, "proc.is_exe_writable", root) is True
    assert not ro.exe_flags & (EXE_UPPER_LAYER | EXE_LOWER_LAYER)   # not on overlayfs


def test_exe_from_memfd(pc):
    (pid,) = map(int, py("""
        import os
        c = os.fork()
        if c == 0:
            f = os.memfd_create("vmem")
            os.write(f, open("/bin/true", "rb").read())
            os.execv(f"/proc/self/fd/{f}", ["vmem"])
        os.waitpid(c, 0)
        print(c)
    """))
    ev = pc.wait_for(lambda e: e.kind == Kind.EXEC and e.pid == pid)[0]
    assert ev.exe.startswith("/memfd:vmem")
    assert field(pc, "proc.is_exe_from_memfd", ev) is True
    assert field(pc, "proc.is_exe_upper_layer", ev) is False


def test_exe_is_argv0_and_exepath_the_file(pc, exe_copy):
    link = exe_copy.parent / "vlink"
    os.symlink(exe_copy.name, link)
    subprocess.run(["./vlink", "a"], cwd=exe_copy.parent, check=True)
    ev = execs_of(pc, str(exe_copy))[0]
    assert field(pc, "proc.exe", ev) == "./vlink"            # argv[0] as given
    assert field(pc, "proc.exepath", ev) == str(exe_copy)   # the resolved executable
    assert field(pc, "proc.name", ev) == "vlink"            # comm: the name executed


# --------------------------------------------------------------- overlayfs upper layer

def test_upper_layer_from_podman_overlay_rootfs(pc, tmp_path):
    from podman_env import make_rootfs, podman, skip_reason
    why = skip_reason()
    if why:
        pytest.skip(why)
    root = make_rootfs(tmp_path / "rootfs", tools=("sh", "cp", "mkdir", "true"))
    # busybox picks its applet by name: the dropped copy is called true
    r = podman("run", "--rm", "--net=none", "--rootfs", f"{root}:O", "/bin/sh", "-c",
               "mkdir /tmp/vd && cp /bin/busybox /tmp/vd/true && /tmp/vd/true && /bin/true")
    assert r.returncode == 0, r.stderr
    drop = pc.wait_for(lambda e: e.kind == Kind.EXEC and e.exe.endswith("/tmp/vd/true"))[0]
    # the shell runs its last command in place: the image's busybox as /bin/true
    image = pc.wait_for(lambda e: e.kind == Kind.EXEC and e.pid == drop.ppid
                        and e.exe.endswith("/bin/busybox") and e.args == ["/bin/true"])[0]
    assert drop.exe_flags & EXE_UPPER_LAYER and not drop.exe_flags & EXE_LOWER_LAYER
    assert field(pc, "proc.is_exe_upper_layer", drop) is True
    assert image.exe_flags & EXE_LOWER_LAYER
    assert field(pc, "proc.is_exe_upper_layer", image) is False
    assert drop.vpid > 1 and drop.exe_flags & EXE_WRITABLE


# --------------------------------------------------------------- failed execs

def test_failed_execs_are_events(pc, tmp_path, exe_copy):
    noexec = tmp_path / "noexec"
    noexec.write_text("#!/bin/sh\n")
    os.chmod(noexec, 0o644)
    (pid,) = map(int, py(f"""
        import os
        for path in ("/nonexistent/vx", {str(noexec)!r}):
            try:
                os.execv(path, [path, "a b", "c"])
            except OSError:
                pass
        c = os.fork()
        if c == 0:
            os.execv({str(exe_copy)!r}, ["vtrue"])
        os.waitpid(c, 0)
        print(os.getpid())
    """))
    enoent, eacces = pc.wait_for(lambda e: e.kind == Kind.EXECFAIL and e.pid == pid, count=2)
    assert (enoent.ret, enoent.path, enoent.args, enoent.syscall) == (
        -2, "/nonexistent/vx", ["/nonexistent/vx", "a b", "c"], "execve")
    assert (eacces.ret, eacces.path) == (-13, str(noexec))
    assert enoent.comm == "python3" or enoent.comm.startswith("python")
    execs_of(pc, str(exe_copy))
    pc.settle()
    # the successful exec is an exec event only; the failed ones left the process as it was
    assert pc.find(lambda e: e.kind == Kind.EXECFAIL and e.path == str(exe_copy)) == []
    assert pc.find(lambda e: e.kind == Kind.EXEC and e.pid == pid
                   and e.exe in ("/nonexistent/vx", str(noexec))) == []
    assert Kind.EXECFAIL.spec.falco_types == ()     # rules see successful execs only


def test_failed_execveat(pc):
    (pid,) = map(int, py("""
        import ctypes, os
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        argv = (ctypes.c_char_p * 2)(b"vmissing", None)
        assert libc.syscall(322, -100, b"vmissing", argv, None, 0) == -1    # execveat
        print(os.getpid())
    """, cwd="/"))
    ev = pc.wait_for(lambda e: e.kind == Kind.EXECFAIL and e.pid == pid)[0]
    assert (ev.ret, ev.path, ev.args, ev.syscall) == (-2, "vmissing", ["vmissing"], "execveat")


# --------------------------------------------------------------- Falco's rules files

def falco_rules_dir():
    """Falco's own rules files: $VIGIL_FALCO_RULES_DIR, else ../shared/falco-rules
    beside the repository, else /work/shared/falco-rules."""
    from pathlib import Path
    env = os.environ.get("VIGIL_FALCO_RULES_DIR")
    repo = Path(__file__).resolve().parent.parent
    for d in ([Path(env)] if env else []) + [repo.parent / "shared" / "falco-rules",
                                             Path("/work/shared/falco-rules")]:
        if (d / "falco_rules.yaml").is_file():
            return d
    return None


def test_every_proc_and_thread_field_of_the_falco_files_is_known():
    import re
    d = falco_rules_dir()
    if d is None:
        pytest.skip("Falco's rules files are not here (set VIGIL_FALCO_RULES_DIR)")
    used = set()
    for f in ("falco_rules.yaml", "falco-incubating_rules.yaml", "falco-sandbox_rules.yaml"):
        used |= set(re.findall(r"\b((?:proc|thread)\.[a-z_.]*[a-z_])", (d / f).read_text()))
    assert {"proc.duration", "proc.sname", "thread.cap_effective", "thread.cap_permitted",
            "proc.is_vpgid_leader", "proc.exe_ino.ctime_duration_proc_start"} <= used
    assert sorted(n for n in used if not F.known(n)) == []
    for n in used:
        assert F.FIELDS[n].desc or n not in _KERNEL_FIELDS, n


_KERNEL_FIELDS = {"proc.duration", "proc.sname", "thread.cap_effective", "thread.cap_permitted",
                  "thread.cap_inheritable", "proc.is_vpgid_leader", "proc.is_sid_leader",
                  "proc.sid", "proc.vpgid", "proc.exe_ino", "proc.exe_ino.ctime",
                  "proc.exe_ino.mtime", "proc.exe_ino.ctime_duration_proc_start",
                  "proc.is_exe_upper_layer", "proc.is_exe_writable"}


def test_kernel_fields_are_documented():
    assert [n for n in sorted(_KERNEL_FIELDS) if not F.FIELDS[n].desc] == []


def test_parent_duration(pc, exe_copy):
    (pid,) = map(int, py(f"""
        import os, time
        time.sleep(0.4)
        c = os.fork()
        if c == 0:
            os.execv({str(exe_copy)!r}, ["vtrue"])
        os.waitpid(c, 0)
        print(os.getpid())
    """))
    ev = execs_of(pc, str(exe_copy))[0]
    assert ev.ppid == pid
    parent = pc.pipeline.proctable.get(pid)
    assert field(pc, "proc.ppid.ts", ev) == parent.start_time
    assert field(pc, "proc.ppid.duration", ev) == ev.time - parent.start_time
    assert 0.35e9 < ev.time - parent.start_time < 5e9
