"""Process sensor against the real kernel: exec, fork, exit, args limits, self-exclusion."""
import os
import signal
import subprocess
import sys
import uuid

import pytest

from vigil.events import Kind

SH = os.path.realpath("/bin/sh")
ECHO = os.path.realpath("/bin/echo")
SLEEP = os.path.realpath("/bin/sleep")


@pytest.fixture(scope="module")
def proc(start_pipeline):
    c = start_pipeline({Kind.EXEC, Kind.EXIT, Kind.FORK})
    yield c
    c.stop()


def marker():
    return "marker-" + uuid.uuid4().hex[:10]


def test_sh_echo_exec_fork_exit(proc, tmp_path):
    m = marker()
    cwd = str(tmp_path)
    cmd = f"/bin/echo {m} a b"
    p = subprocess.run(["/bin/sh", "-c", cmd], cwd=cwd, capture_output=True)
    assert p.returncode == 0 and p.stdout == f"{m} a b\n".encode()

    sh_exec = proc.wait_for(lambda e: e.kind == Kind.EXEC and e.args == ["/bin/sh", "-c", cmd])
    assert len(sh_exec) == 1
    sh = sh_exec[0]
    assert sh.exe == SH
    assert sh.comm == "sh"
    assert sh.cwd == cwd
    assert sh.ppid == os.getpid()
    assert sh.uid == os.getuid() and sh.gid == os.getgid()
    assert sh.args_truncated is False
    assert sh.syscall == "execve"

    echo = proc.wait_for(lambda e: e.kind == Kind.EXEC and e.args == ["/bin/echo", m, "a", "b"])
    assert len(echo) == 1
    echo = echo[0]
    assert echo.exe == ECHO
    assert echo.comm == "echo"
    assert echo.cwd == cwd
    assert echo.args_truncated is False
    # dash may exec the last command in place; either way the parent is right
    if echo.pid == sh.pid:
        assert echo.ppid == os.getpid()
    else:
        assert echo.ppid == sh.pid
        forks = proc.wait_for(lambda e: e.kind == Kind.FORK and e.pid == sh.pid)
        assert [f.child_pid for f in forks] == [echo.pid]
        assert forks[0].comm == "sh"
        sh_exit = proc.wait_for(lambda e: e.kind == Kind.EXIT and e.pid == sh.pid)
        assert len(sh_exit) == 1
        assert (sh_exit[0].exit_code, sh_exit[0].exit_signal) == (0, 0)
    echo_exit = proc.wait_for(lambda e: e.kind == Kind.EXIT and e.pid == echo.pid)
    assert len(echo_exit) == 1
    assert (echo_exit[0].exit_code, echo_exit[0].exit_signal) == (0, 0)
    assert echo_exit[0].comm == "echo"
    # time order in the ring: exec before exit
    assert echo.time <= echo_exit[0].time
    # enrichment: the pipeline's process table knows the echo
    assert echo.proc is not None and echo.proc.exe == ECHO
    assert echo.proc.args == ["/bin/echo", m, "a", "b"]


def test_exec_tty_loginuid_cgroup_fields(proc):
    m = marker()
    subprocess.run(["/bin/echo", m], capture_output=True)
    ev = proc.wait_for(lambda e: e.kind == Kind.EXEC and e.args == ["/bin/echo", m])[0]
    with open("/proc/self/loginuid") as f:
        lu = int(f.read())
    assert ev.loginuid == (-1 if lu == 0xFFFFFFFF else lu)
    assert isinstance(ev.tty, str)
    assert ev.tty == ""  # no controlling terminal under pytest's capture
    with open("/proc/self/cgroup") as f:
        cg = [line.split(":", 2)[2].strip() for line in f if line.startswith("0::")][0]
    st = os.stat("/sys/fs/cgroup" + cg)
    assert ev.cgroup_id == st.st_ino
    expected_name = "" if cg == "/" else os.path.basename(cg)
    assert ev.cgroup_name == expected_name


def test_exec_tty_from_pty(proc):
    import pty
    m = marker()
    pid, fd = pty.fork()
    if pid == 0:  # child: a new session with the pty as controlling terminal
        os.execv("/bin/echo", ["/bin/echo", m])
    try:
        os.read(fd, 100)
    except OSError:
        pass
    os.waitpid(pid, 0)
    os.close(fd)
    ev = proc.wait_for(lambda e: e.kind == Kind.EXEC and e.args == ["/bin/echo", m])[0]
    assert ev.pid == pid
    assert ev.tty.startswith("pts") or ev.tty.startswith("tty") or ev.tty.isdigit(), ev.tty
    assert ev.tty != ""


def test_exit_code_3(proc):
    p = subprocess.run(["/bin/sh", "-c", "exit 3"])
    assert p.returncode == 3
    evs = proc.wait_for(lambda e: e.kind == Kind.EXEC and e.args == ["/bin/sh", "-c", "exit 3"])
    pid = evs[-1].pid
    ex = proc.wait_for(lambda e: e.kind == Kind.EXIT and e.pid == pid)
    assert (ex[0].exit_code, ex[0].exit_signal) == (3, 0)


def test_exit_killed_by_sigkill(proc):
    p = subprocess.Popen([SLEEP, "30"])
    proc.wait_for(lambda e: e.kind == Kind.EXEC and e.pid == p.pid)
    p.send_signal(signal.SIGKILL)
    assert p.wait() == -9
    ex = proc.wait_for(lambda e: e.kind == Kind.EXIT and e.pid == p.pid)
    assert len(ex) == 1
    assert ex[0].exit_signal == 9
    assert ex[0].exit_code == 0
    assert ex[0].comm == "sleep"


def test_threads_do_not_make_fork_or_exit_events(proc):
    m = marker()
    code = ("import threading,sys\n"
            "ts=[threading.Thread(target=lambda: None) for _ in range(4)]\n"
            "[t.start() for t in ts]; [t.join() for t in ts]\n")
    p = subprocess.run([sys.executable, "-c", code, m])
    assert p.returncode == 0
    ex = proc.wait_for(lambda e: e.kind == Kind.EXEC and e.args[-1:] == [m])
    pid = ex[0].pid
    proc.wait_for(lambda e: e.kind == Kind.EXIT and e.pid == pid)
    proc.settle(0.1)
    assert proc.find(lambda e: e.kind == Kind.FORK and e.pid == pid) == []
    assert len(proc.find(lambda e: e.kind == Kind.EXIT and e.pid == pid)) == 1


def test_self_exclusion(proc):
    """Nothing the pipeline's own process does is reported."""
    me = os.getpid()
    pid = os.fork()
    if pid == 0:
        os._exit(7)
    os.waitpid(pid, 0)
    ex = proc.wait_for(lambda e: e.kind == Kind.EXIT and e.pid == pid)
    assert ex[0].exit_code == 7 and ex[0].ppid == me
    proc.settle(0.1)
    assert proc.find(lambda e: e.pid == me) == []
    # the fork of that child was ours too, so no fork event names it
    assert proc.find(lambda e: e.kind == Kind.FORK and e.child_pid == pid) == []


def test_long_argv_truncated(proc):
    m = marker()
    big = ["x" * 100 for _ in range(60)]   # ~6 KB of argv
    subprocess.run(["/bin/echo", m] + big, capture_output=True)
    ev = proc.wait_for(lambda e: e.kind == Kind.EXEC and e.args[:2] == ["/bin/echo", m])[0]
    assert ev.args_truncated is True
    raw = "\0".join(ev.args)
    assert len(raw) == 4095
    assert ev.args[:2 + 30] == ["/bin/echo", m] + big[:30]
    # the last argument is cut, never garbage
    assert set(ev.args[-1]) <= {"x"}


def test_argv_not_truncated_when_it_fits(proc):
    m = marker()
    args = ["/bin/echo", m] + ["y" * 50] * 10
    subprocess.run(args, capture_output=True)
    ev = proc.wait_for(lambda e: e.kind == Kind.EXEC and e.args[:2] == ["/bin/echo", m])[0]
    assert ev.args == args
    assert ev.args_truncated is False


def test_empty_argv_exec(proc):
    """execve with argv = [] (allowed by the kernel with a warning) is reported with no args."""
    m = marker()
    code = ("import ctypes,os\n"
            "libc=ctypes.CDLL(None,use_errno=True)\n"
            "argv=(ctypes.c_char_p*1)(None)\n"
            "env=(ctypes.c_char_p*2)(b'M=" + m + "',None)\n"
            "libc.execve(b'/bin/true',argv,env)\n")
    subprocess.run([sys.executable, "-c", code])
    ev = proc.wait_for(lambda e: e.kind == Kind.EXEC and e.exe == os.path.realpath("/bin/true"))
    assert ev[-1].args in ([], [""])


@pytest.fixture(scope="module")
def proc_small_args(start_pipeline, proc):
    # a second pipeline with a 64-byte argv limit; the first keeps running
    c = start_pipeline({Kind.EXEC}, args_max=64, seed=False)
    yield c
    c.stop()


def test_args_max_limits_capture(proc_small_args, proc):
    m = marker()
    args = ["/bin/echo", m] + ["z" * 20] * 5
    subprocess.run(args, capture_output=True)
    small = proc_small_args.wait_for(lambda e: e.kind == Kind.EXEC and e.args[:2] == ["/bin/echo", m])[0]
    assert small.args_truncated is True
    assert len("\0".join(small.args)) == 63
    assert "\0".join(small.args) == "\0".join(args)[:63]
    full = proc.wait_for(lambda e: e.kind == Kind.EXEC and e.args[:2] == ["/bin/echo", m])[0]
    assert full.args == args and full.args_truncated is False


def test_pipeline_ignores_its_own_children_in_the_kernel(start_pipeline, proc):
    """With ignore_children (the CLI's setting): vigil and every process it starts afterwards are
    invisible (inheritable ignore entry, removed from the map at exit); a
    process that existed before is still seen, and so are its children."""
    m_old, m_new = marker(), marker()
    older = subprocess.Popen(["/bin/sh", "-c", f"read x; /bin/echo {m_old}"],
                             stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    c = start_pipeline({Kind.EXEC, Kind.EXIT}, ignore_children=True, seed=False)
    try:
        ign = c.sensors.maps["ignore_pids"]
        import struct
        me = os.getpid()
        newer = subprocess.run(["/bin/sh", "-c", f"/bin/echo {m_new}; /bin/true"],
                               capture_output=True)
        older.communicate(b"go\n")
        # the module pipeline (children watched) sees both
        proc.wait_for(lambda e: e.kind == Kind.EXEC and e.args == ["/bin/echo", m_new])
        proc.wait_for(lambda e: e.kind == Kind.EXEC and e.args == ["/bin/echo", m_old])
        got = c.wait_for(lambda e: e.kind == Kind.EXEC and e.args == ["/bin/echo", m_old])
        assert len(got) == 1
        c.settle(0.1)
        assert c.find(lambda e: m_new in (e.args or []) or
                      e.kind == Kind.EXEC and e.args[:2] == ["/bin/sh", "-c"] and m_new in e.args[2]) == []
        assert newer.returncode == 0
        # exited children's entries are gone; ours stays
        keys = {struct.unpack("<I", k)[0] for k in ign.keys()}
        assert me in keys
        assert older.pid not in keys
    finally:
        c.stop()


def test_args_exactly_at_the_limit_not_truncated(proc_small_args):
    """argv of exactly args_max bytes (final NUL included) fits: only the NUL is
    dropped, nothing is lost; one byte more is truncated."""
    m = marker()                       # 17 chars
    head = f"/bin/echo\0{m}\0"         # 28 bytes
    fill = "q" * (64 - len(head) - 1)  # + NUL = 64
    subprocess.run(["/bin/echo", m, fill], capture_output=True)
    subprocess.run(["/bin/echo", m, fill + "q"], capture_output=True)
    evs = proc_small_args.wait_for(lambda e: e.kind == Kind.EXEC and e.args[:2] == ["/bin/echo", m],
                                   count=2)
    assert (evs[0].args, evs[0].args_truncated) == (["/bin/echo", m, fill], False)
    assert (evs[1].args, evs[1].args_truncated) == (["/bin/echo", m, fill], True)


def test_memfd_exec_exe_path(proc):
    """A binary run from a memfd (fileless) reports exe /memfd:<name>, not '/'."""
    m = marker()
    code = ("import os\nfd = os.memfd_create('vigil-mfd')\n"
            "os.write(fd, open('/bin/true', 'rb').read())\n"
            f"os.execve(f'/proc/self/fd/{{fd}}', ['{m}'], {{}})")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
    ev = proc.wait_for(lambda e: e.kind == Kind.EXEC and e.args == [m])[0]
    assert ev.exe == "/memfd:vigil-mfd"


def test_exec_vpid_host_and_new_pid_namespace(proc):
    m = marker()
    subprocess.run(["/bin/echo", m], stdout=subprocess.DEVNULL)
    host = proc.wait_for(lambda e: e.kind == Kind.EXEC and e.args == ["/bin/echo", m])[0]
    assert host.vpid == host.pid
    m2 = marker()
    r = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "/bin/sh", "-c",
                        f"exec /bin/echo {m2}"], stdout=subprocess.DEVNULL)
    assert r.returncode == 0
    ns = proc.wait_for(lambda e: e.kind == Kind.EXEC and e.args == ["/bin/echo", m2])[0]
    assert ns.vpid == 1 and ns.pid != 1


@pytest.fixture(scope="module")
def proc_env(start_pipeline, proc):
    # a pipeline whose execs carry 96 bytes of environment (proc.env); the first sends none
    c = start_pipeline({Kind.EXEC}, env_max=96, seed=False)
    yield c
    c.stop()


def test_exec_environment_captured_bounded_and_switched(proc_env, proc):
    m = marker()
    subprocess.run(["env", "-i", "A=1", "B=two words", f"M={m}", "/bin/echo", m],
                   capture_output=True)
    ev = proc_env.wait_for(lambda e: e.kind == Kind.EXEC and e.args == ["/bin/echo", m])[0]
    assert ev.env == ["A=1", "B=two words", f"M={m}"]
    assert ev.proc is not None and ev.proc.env == ev.env
    # the other pipeline (env_max 0) sends the short record: no environment
    plain = proc.wait_for(lambda e: e.kind == Kind.EXEC and e.args == ["/bin/echo", m])[0]
    assert plain.env is None and plain.exe == ev.exe
    assert ev.exe_flags == plain.exe_flags     # the record's flag is not the file's
    # more than 96 bytes: the entries that fit whole, the cut one dropped
    m2 = marker()
    subprocess.run(["env", "-i", "A=1", "LONG=" + "x" * 200, "/bin/echo", m2], capture_output=True)
    ev = proc_env.wait_for(lambda e: e.kind == Kind.EXEC and e.args == ["/bin/echo", m2])[0]
    assert ev.env == ["A=1"]
    # switched off at run time: the short record again
    proc_env.pipeline.filters.set_env_max(0)
    m3 = marker()
    subprocess.run(["env", "-i", "A=1", "/bin/echo", m3], capture_output=True)
    ev = proc_env.wait_for(lambda e: e.kind == Kind.EXEC and e.args == ["/bin/echo", m3])[0]
    assert ev.env is None
