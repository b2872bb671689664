"""File sensors against the real kernel: open family and filesystem changes."""
import ctypes
import errno
import os
import subprocess
import sys
import uuid

import pytest

from vigil.events import Kind

FS_KINDS = {Kind.UNLINK, Kind.RENAME, Kind.LINK, Kind.SYMLINK, Kind.MKDIR, Kind.CHMOD}


@pytest.fixture(scope="module")
def files(start_pipeline):
    c = start_pipeline({Kind.OPEN} | FS_KINDS)
    yield c
    c.stop()


@pytest.fixture
def workdir(tmp_path):
    d = tmp_path / ("w-" + uuid.uuid4().hex[:8])
    d.mkdir()
    return d


def child(code: str, cwd) -> int:
    """Run python code in a child process; returns its pid."""
    p = subprocess.run([sys.executable, "-c", code], cwd=str(cwd), capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    return int(p.stdout.strip().splitlines()[-1])


PRELUDE = "import os, ctypes, sys\nlibc = ctypes.CDLL(None, use_errno=True)\n"


def opens(c, path, pid=None, count=1):
    return c.wait_for(lambda e: e.kind == Kind.OPEN and e.path == path
                      and (pid is None or e.pid == pid), count=count)


def test_relative_open_made_absolute(files, workdir):
    (workdir / "known.txt").write_text("hi")
    p = subprocess.run(["/bin/cat", "known.txt"], cwd=str(workdir), capture_output=True)
    assert p.stdout == b"hi"
    ev = opens(files, str(workdir / "known.txt"))
    assert len(ev) == 1
    ev = ev[0]
    assert ev.comm == "cat"
    assert ev.syscall == "openat"
    assert ev.flags & 0o3 == os.O_RDONLY
    assert ev.ret >= 3 and ev.fd == ev.ret
    assert ev.proc is not None and ev.proc.exe == os.path.realpath("/bin/cat")


def test_openat_with_dirfd(files, workdir):
    sub = workdir / "sub"
    sub.mkdir()
    (sub / "name").write_text("x")
    pid = child(PRELUDE + f"d = os.open({str(sub)!r}, os.O_RDONLY | os.O_DIRECTORY)\n"
                "os.chdir('/')\n"
                "fd = os.open('name', os.O_RDONLY, dir_fd=d)\n"
                "print(os.getpid())\n", "/")
    ev = opens(files, str(sub / "name"), pid)
    assert len(ev) == 1
    assert ev[0].syscall == "openat"
    assert ev[0].fd is not None and ev[0].fd >= 0
    assert ev[0].flags & 0o3 == os.O_RDONLY


def test_failed_open_enoent(files, workdir):
    pid = child(PRELUDE + "try:\n  os.open('missing.txt', os.O_RDONLY)\nexcept FileNotFoundError:\n"
                "  pass\nprint(os.getpid())\n", workdir)
    ev = opens(files, str(workdir / "missing.txt"), pid)[0]
    assert ev.ret == -errno.ENOENT == -2
    assert ev.fd is None


def test_creat_flags_and_mode(files, workdir):
    pid = child(PRELUDE + "fd = os.open('new.txt', os.O_CREAT | os.O_WRONLY, 0o640)\n"
                "print(os.getpid())\n", workdir)
    ev = opens(files, str(workdir / "new.txt"), pid)[0]
    assert ev.flags & (os.O_CREAT | os.O_WRONLY | os.O_ACCMODE) == os.O_CREAT | os.O_WRONLY
    assert ev.mode == 0o640
    assert ev.ret >= 0
    assert ev.syscall == "openat"


def test_creat_syscall(files, workdir):
    # creat(2) itself, not glibc's wrapper (which may use openat)
    pid = child(PRELUDE + "libc.syscall.restype = ctypes.c_long\n"
                "fd = libc.syscall(85, b'made.txt', 0o600)\n"
                "assert fd >= 0, ctypes.get_errno()\nprint(os.getpid())\n", workdir)
    ev = opens(files, str(workdir / "made.txt"), pid)[0]
    assert ev.syscall == "creat"
    assert ev.flags == os.O_CREAT | os.O_WRONLY | os.O_TRUNC
    assert ev.mode == 0o600
    assert ev.ret >= 0


def test_open_syscall(files, workdir):
    (workdir / "o.txt").write_text("")
    pid = child(PRELUDE + "libc.syscall.restype = ctypes.c_long\n"
                "fd = libc.syscall(2, b'o.txt', os.O_RDWR, 0)\n"
                "assert fd >= 0\nprint(os.getpid())\n", workdir)
    ev = opens(files, str(workdir / "o.txt"), pid)[0]
    assert ev.syscall == "open"
    assert ev.flags & os.O_ACCMODE == os.O_RDWR


def test_openat2(files, workdir):
    (workdir / "two.txt").write_text("")
    code = PRELUDE + (
        "class How(ctypes.Structure):\n"
        "    _fields_ = [('flags', ctypes.c_uint64), ('mode', ctypes.c_uint64), ('resolve', ctypes.c_uint64)]\n"
        "how = How(os.O_RDONLY, 0, 0)\n"
        "libc.syscall.restype = ctypes.c_long\n"
        "fd = libc.syscall(437, -100, b'two.txt', ctypes.byref(how), ctypes.sizeof(how))\n"
        "assert fd >= 0, ctypes.get_errno()\nprint(os.getpid())\n")
    pid = child(code, workdir)
    ev = opens(files, str(workdir / "two.txt"), pid)[0]
    assert ev.syscall == "openat2"
    assert ev.ret >= 0


def test_dotdot_normalized(files, workdir):
    (workdir / "a").mkdir()
    (workdir / "t.txt").write_text("")
    pid = child(PRELUDE + "os.open('a/../t.txt', os.O_RDONLY)\nos.open('./a/.././/t.txt', os.O_RDONLY)\n"
                f"os.open({str(workdir)!r} + '/a/../t.txt', os.O_RDONLY)\n"
                "print(os.getpid())\n", workdir)
    ev = opens(files, str(workdir / "t.txt"), pid, count=3)
    assert len(ev) == 3


def test_root_cwd_relative(files, workdir):
    # base dir "/" must not produce "//name"
    name = os.path.relpath(str(workdir / "r.txt"), "/")
    (workdir / "r.txt").write_text("")
    pid = child(PRELUDE + f"os.open({name!r}, os.O_RDONLY)\nprint(os.getpid())\n", "/")
    assert opens(files, str(workdir / "r.txt"), pid)


# --- filesystem changes ---

def fsop(c, kind, pid):
    return c.wait_for(lambda e: e.kind == kind and e.pid == pid)


def test_unlink_and_rmdir(files, workdir):
    (workdir / "gone").write_text("")
    (workdir / "d").mkdir()
    pid = child(PRELUDE + "os.unlink('gone')\nos.rmdir('d')\nprint(os.getpid())\n", workdir)
    evs = files.wait_for(lambda e: e.kind == Kind.UNLINK and e.pid == pid, count=2)
    got = {(e.syscall, e.path, e.ret) for e in evs}
    # glibc may use unlink/rmdir or unlinkat
    paths = {p for _, p, _ in got}
    assert paths == {str(workdir / "gone"), str(workdir / "d")}
    assert all(r == 0 for _, _, r in got)
    assert all(e.path2 is None for e in evs)


def test_unlinkat_removedir_flag(files, workdir):
    (workdir / "dd").mkdir()
    pid = child(PRELUDE + f"d = os.open({str(workdir)!r}, os.O_RDONLY)\nos.chdir('/')\n"
                "os.rmdir('dd', dir_fd=d)\nprint(os.getpid())\n", "/")
    ev = fsop(files, Kind.UNLINK, pid)[0]
    assert ev.syscall == "unlinkat"
    assert ev.path == str(workdir / "dd")
    assert ev.flags == 0x200  # AT_REMOVEDIR


def test_rename(files, workdir):
    (workdir / "old").write_text("")
    pid = child(PRELUDE + "os.rename('old', 'new')\nprint(os.getpid())\n", workdir)
    ev = fsop(files, Kind.RENAME, pid)[0]
    assert ev.path == str(workdir / "old")
    assert ev.path2 == str(workdir / "new")
    assert ev.ret == 0
    assert ev.syscall in ("rename", "renameat", "renameat2")


def test_failed_rename(files, workdir):
    pid = child(PRELUDE + "try:\n  os.rename('nope', 'x')\nexcept OSError:\n  pass\n"
                "print(os.getpid())\n", workdir)
    ev = fsop(files, Kind.RENAME, pid)[0]
    assert ev.ret == -errno.ENOENT
    assert (ev.path, ev.path2) == (str(workdir / "nope"), str(workdir / "x"))


def test_symlink(files, workdir):
    pid = child(PRELUDE + "os.symlink('../target/x', 'lnk')\nprint(os.getpid())\n", workdir)
    ev = fsop(files, Kind.SYMLINK, pid)[0]
    assert ev.path == "../target/x"   # the target, as written
    assert ev.path2 == str(workdir / "lnk")
    assert ev.ret == 0


def test_hardlink(files, workdir):
    (workdir / "src").write_text("")
    pid = child(PRELUDE + "os.link('src', 'dst')\nprint(os.getpid())\n", workdir)
    ev = fsop(files, Kind.LINK, pid)[0]
    assert (ev.path, ev.path2, ev.ret) == (str(workdir / "src"), str(workdir / "dst"), 0)
    assert ev.syscall in ("link", "linkat")


def test_mkdir(files, workdir):
    pid = child(PRELUDE + "os.mkdir('nd', 0o750)\nprint(os.getpid())\n", workdir)
    ev = fsop(files, Kind.MKDIR, pid)[0]
    assert (ev.path, ev.mode, ev.ret) == (str(workdir / "nd"), 0o750, 0)
    assert ev.path2 is None


def test_chmod(files, workdir):
    (workdir / "f").write_text("")
    pid = child(PRELUDE + "os.chmod('f', 0o4755)\nprint(os.getpid())\n", workdir)
    ev = fsop(files, Kind.CHMOD, pid)[0]
    assert (ev.path, ev.mode, ev.ret) == (str(workdir / "f"), 0o4755, 0)
    assert ev.syscall in ("chmod", "fchmodat")


def test_fsops_at_variants_with_dirfd(files, workdir):
    sub = workdir / "s"
    sub.mkdir()
    (sub / "a").write_text("")
    code = PRELUDE + (f"d = os.open({str(sub)!r}, os.O_RDONLY)\nos.chdir('/')\n"
                      "os.rename('a', 'b', src_dir_fd=d, dst_dir_fd=d)\n"
                      "os.mkdir('m', dir_fd=d)\n"
                      "os.link('b', 'c', src_dir_fd=d, dst_dir_fd=d)\n"
                      "os.symlink('b', 'l', dir_fd=d)\n"
                      "os.chmod('b', 0o600, dir_fd=d)\n"
                      "os.unlink('c', dir_fd=d)\n"
                      "print(os.getpid())\n")
    pid = child(code, "/")
    s = str(sub)
    assert (fsop(files, Kind.RENAME, pid)[0].path, fsop(files, Kind.RENAME, pid)[0].path2) == \
        (s + "/a", s + "/b")
    assert fsop(files, Kind.MKDIR, pid)[0].path == s + "/m"
    ln = fsop(files, Kind.LINK, pid)[0]
    assert (ln.path, ln.path2) == (s + "/b", s + "/c")
    sy = fsop(files, Kind.SYMLINK, pid)[0]
    assert (sy.path, sy.path2) == ("b", s + "/l")
    assert fsop(files, Kind.CHMOD, pid)[0].path == s + "/b"
    assert fsop(files, Kind.UNLINK, pid)[0].path == s + "/c"


# --- in-kernel prefix filter (own pipeline, so the module one stays unfiltered) ---

@pytest.fixture(scope="module")
def filtered(start_pipeline, files):
    c = start_pipeline({Kind.OPEN}, seed=False)
    yield c
    c.stop()


def test_open_prefix_filter(filtered, files, tmp_path):
    tag = uuid.uuid4().hex[:8]
    base = f"/tmp/vigil-x{tag}"
    inside = base + "/in.txt"
    other = str(tmp_path / "out.txt")
    os.makedirs(base, exist_ok=True)
    try:
        filtered.sensors.set_open_prefixes([base])
        filtered.clear()
        before = filtered.sensors.stats().get("open", {"sent": 0})["sent"]
        pid = child(PRELUDE + f"open({inside!r}, 'w').close()\nopen({other!r}, 'w').close()\n"
                    f"os.chdir({base!r})\nopen('rel.txt', 'w').close()\n"
                    f"open('../vigil-x{tag}/../vigil-x{tag}/in.txt').close()\n"
                    "open('/etc/hostname').close()\n"
                    "print(os.getpid())\n", "/")
        evs = filtered.wait_for(lambda e: e.kind == Kind.OPEN and e.pid == pid, count=3)
        filtered.settle(0.1)
        evs = filtered.find(lambda e: e.kind == Kind.OPEN and e.pid == pid)
        paths = [e.path for e in evs]
        # the path with '..' goes up unfiltered and is normalized in user space
        assert paths == [inside, base + "/rel.txt", inside]
        # the unfiltered pipeline saw everything
        assert opens(files, other, pid)
        assert opens(files, "/etc/hostname", pid)
        st = filtered.sensors.stats()
        # other processes' opens with '..' pass the filter too: at least ours
        assert st["open"]["sent"] - before >= 3
        assert st["open"]["dropped"] == 0
        # back to no filter
        filtered.sensors.set_open_prefixes(None)
        pid = child(PRELUDE + f"open({other!r}).close()\nprint(os.getpid())\n", "/")
        assert opens(filtered, other, pid)
    finally:
        filtered.sensors.set_open_prefixes(None)
        for f in os.listdir(base):
            os.unlink(os.path.join(base, f))
        os.rmdir(base)


def test_kernel_stats_count_sent(files, workdir):
    before = files.sensors.stats()
    (workdir / "s1").mkdir()
    os.rmdir(workdir / "s1")  # our own pid: ignored, not counted
    pid = child(PRELUDE + "os.mkdir('s2')\nprint(os.getpid())\n", workdir)
    fsop(files, Kind.MKDIR, pid)
    after = files.sensors.stats()
    # other processes on the node may mkdir too; ours (ignored pid) must not count
    assert after["mkdir"]["sent"] - before.get("mkdir", {"sent": 0})["sent"] >= 1
    assert after["mkdir"]["dropped"] == 0
    assert after["open"]["sent"] > 0
    assert set(after) <= {k.label for k in Kind}


def test_no_events_from_own_pid_even_during_start(files, workdir):
    """Attaching reads tracepoint ids from tracefs: those opens are ours too."""
    open(workdir / "mine.txt", "w").close()
    pid = child(PRELUDE + "print(os.getpid())\n", workdir)
    files.wait_for(lambda e: e.pid == pid)
    files.settle(0.1)
    assert files.find(lambda e: e.pid == os.getpid()) == []


def test_configure_hook_filters_from_the_first_event(bpf_objects, tmp_path):
    """SensorManager.start(configure=...) sets filters before anything is
    attached: not one event from outside the prefix gets through, even from
    other processes during the start."""
    from vigil.kernel.ringbuf import RingBuffer
    from vigil.kernel.sensors import SensorManager
    from vigil.events.structs import EvOpen

    base = f"/tmp/vigil-cfg{uuid.uuid4().hex[:6]}"
    seen = {}

    def configure(m):
        seen["links"] = len(m.links)
        m.set_open_prefixes([base])

    m = SensorManager({Kind.OPEN}, ringbuf_size=1 << 20).start(configure=configure)
    ring = RingBuffer(m.maps["events"].fd, 1 << 20)
    try:
        assert seen == {"links": 0}
        os.makedirs(base)
        subprocess.run(["/bin/cat", "/etc/hostname", base + "/nope"], capture_output=True)
        raws = []

        def keep(r):   # an open without its realpath is sent short (OPEN_SHORT_SIZE)
            raws.append(EvOpen.from_buffer_copy(bytes(r).ljust(ctypes.sizeof(EvOpen), b"\0")))
        ring.poll(keep, 0.2)
        ring.consume(keep)
        paths = [r.path.decode() for r in raws if r.h.kind == int(Kind.OPEN)]
        assert base + "/nope" in paths
        assert [p for p in paths if not p.startswith(base) and ".." not in p] == []
    finally:
        ring.close()
        m.stop()
        os.rmdir(base)
