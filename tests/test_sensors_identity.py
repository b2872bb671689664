"""Opens judged by what they reach (device + inode), io_uring opens, and renames,
against the real kernel: the exact fields of the events."""
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from vigil.events import Kind
from vigil.kernel.filters import OPEN_WANT_ALL, OPEN_WANT_READ, OPEN_WANT_WRITE

sys.path.insert(0, str(Path(__file__).parent / "data" / "e2e"))
from e2e_harness import build_vtool  # noqa: E402


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """A watched file (with a hard link elsewhere), a watched directory (with
    a symlink to it), a file nobody wants, and vtool."""
    d = tmp_path_factory.mktemp("identity")
    (d / "secret").write_text("s")
    (d / "elsewhere").mkdir()
    os.link(d / "secret", d / "elsewhere" / "hl")
    (d / "wdir").mkdir()
    os.symlink(d / "wdir", d / "ln")
    (d / "plain").mkdir()
    (d / "plain" / "f").write_text("p")
    (d / "unwanted").write_text("u")
    return {"d": d, "vtool": build_vtool(d)}


@pytest.fixture(scope="module")
def ident(start_pipeline, tree):
    d = tree["d"]
    prefixes = {str(d / "secret"): OPEN_WANT_ALL, str(d / "wdir") + "/": OPEN_WANT_WRITE,
                str(d / "plain") + "/": OPEN_WANT_READ}
    c = start_pipeline({Kind.OPEN, Kind.IO_URING_SETUP, Kind.PRCTL}, open_prefixes=prefixes)
    yield c
    c.stop()


def vtool(tree, *args) -> int:
    p = subprocess.Popen([str(tree["vtool"]), *map(str, args)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    _, err = p.communicate(timeout=20)
    assert p.returncode == 0, err
    return p.pid


def py_child(code: str) -> int:
    p = subprocess.run([sys.executable, "-c", code + "\nprint(os.getpid())"], capture_output=True,
                       text=True)
    assert p.returncode == 0, p.stderr
    return int(p.stdout.split()[-1])


def opens_of(c, pid, count=1):
    return c.wait_for(lambda e: e.kind == Kind.OPEN and e.pid == pid, count=count)


def test_hardlink_is_known_by_identity(ident, tree):
    d = tree["d"]
    st = os.stat(d / "secret")
    pid = vtool(tree, "open", d / "elsewhere" / "hl")
    (e,) = opens_of(ident, pid)
    assert e.path == str(d / "elsewhere" / "hl")           # fd.name: the path as given
    assert e.realpath == str(d / "secret")                 # the rules' path for that inode
    assert (e.dev, e.ino) == (st.st_dev, st.st_ino)
    assert e.watched == "file"
    assert e.via is None and e.syscall == "openat"


def test_file_in_watched_dir_through_a_symlink(ident, tree):
    d = tree["d"]
    name = "new-" + uuid.uuid4().hex[:8]
    pid = py_child(f"import os\nos.close(os.open({str(d / 'ln' / name)!r}, "
                   "os.O_WRONLY | os.O_CREAT, 0o600))")
    (e,) = opens_of(ident, pid)
    assert e.path == str(d / "ln" / name)
    assert e.watched == "dir"
    assert e.realpath == str(d / "wdir" / name)
    st = os.stat(d / "wdir" / name)
    assert (e.dev, e.ino) == (st.st_dev, st.st_ino)


def test_watched_dir_wants_only_its_modes(ident, tree):
    d = tree["d"]
    (d / "wdir" / "r").write_text("x")
    pid = vtool(tree, "open", d / "ln" / "r")         # a read: the directory wants writes
    marker = vtool(tree, "open", d / "secret")
    opens_of(ident, marker)
    assert not ident.find(lambda e: e.kind == Kind.OPEN and e.pid == pid)


@pytest.fixture
def no_identity(ident):
    """watched_inodes emptied (the tests drain, the pipeline does not tick):
    only the path filter judges."""
    ident.sensors.set_watched_inodes({})
    yield ident
    ident.sensors.set_watched_inodes(ident.pipeline.filters.watched.scan())


SPELLINGS = ["{p}/f", "{p}//f", "{p}/./f", "{p}/../plain/f", "{p}/../plain//./f"]


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_spellings_judged_on_the_resolved_path(no_identity, tree, spelling):
    p = str(tree["d"] / "plain")
    given = spelling.format(p=p)
    pid = vtool(tree, "open", given)
    (e,) = opens_of(no_identity, pid)
    assert e.path == p + "/f"                              # normalised as Falco's fd.name
    assert e.watched is None
    if given != p + "/f":
        assert e.realpath == p + "/f"                      # the kernel resolved it


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_spellings_of_a_watched_file(ident, tree, spelling):
    p = str(tree["d"] / "plain")
    pid = vtool(tree, "open", spelling.format(p=p))
    (e,) = opens_of(ident, pid)
    assert e.path == e.realpath == p + "/f"
    assert e.watched == "file"                             # the tree's files are watched


def test_odd_spelling_of_an_unwanted_file_is_dropped(no_identity, tree):
    d = tree["d"]
    pid = vtool(tree, "open", f"{d}//./unwanted")
    up = vtool(tree, "open", f"{d}/plain/../unwanted")
    marker = vtool(tree, "open", d / "plain" / "f")
    opens_of(no_identity, marker)
    assert not no_identity.find(lambda e: e.kind == Kind.OPEN and e.pid in (pid, up))


def test_long_path_is_never_dropped(no_identity, tree):
    p = str(tree["d"] / "plain")
    given = p + "/" + "./" * 200 + "f"
    assert len(given) > 256
    pid = vtool(tree, "open", given)
    (e,) = opens_of(no_identity, pid)
    assert e.path == p + "/f" and e.realpath == p + "/f"


def test_io_uring_open(ident, tree):
    d = tree["d"]
    st = os.stat(d / "secret")
    for mode, sc in (("uring-openat", "openat"), ("uring-openat2", "openat2")):
        pid = vtool(tree, mode, d / "elsewhere" / "hl")
        (e,) = opens_of(ident, pid)
        assert e.via == "io_uring" and e.syscall == sc
        assert e.tid == pid and e.comm == "vtool"          # the submitter
        assert e.path == str(d / "elsewhere" / "hl")
        assert e.realpath == str(d / "secret") and e.watched == "file"
        assert (e.dev, e.ino) == (st.st_dev, st.st_ino)
        assert e.ret >= 0 and e.fd == e.ret
        (s,) = ident.wait_for(lambda x: x.kind == Kind.IO_URING_SETUP and x.pid == pid)
        assert s.entries == 4 and s.fd >= 3 and s.syscall == "io_uring_setup"


def test_open_by_handle_at(ident, tree):
    d = tree["d"]
    pid = vtool(tree, "handle", d / "secret", d)
    (e,) = opens_of(ident, pid)
    assert e.syscall == "open_by_handle_at"
    # no path given: named by the file (any of its links), and by identity
    assert e.realpath == str(d / "secret")
    assert e.path in (str(d / "secret"), str(d / "elsewhere" / "hl"))
    assert e.ino == os.stat(d / "secret").st_ino


def test_rename_is_an_event_and_proc_name_stays(ident, tree):
    d = tree["d"]
    pid = vtool(tree, "prctl", "sshd", d / "secret")
    (r,) = ident.wait_for(lambda x: x.kind == Kind.PRCTL and x.pid == pid)
    assert (r.old_name, r.new_name, r.target_pid) == ("vtool", "sshd", pid)
    (e,) = opens_of(ident, pid)
    assert e.comm == "sshd"                                # what the kernel says now
    assert e.proc.comm == "vtool"                          # the exec-time name (proc.name)


def test_watched_bits_cover_every_watched_inode(ident):
    """The kernel skips the watched_inodes lookup when a file's Bloom bit is
    clear: every watched key's bit (the Python hash, maps.h's watch_hash)
    must be set, and emptying the set clears them."""
    import struct
    from vigil.kernel.watched import watch_hash
    entries = ident.pipeline.filters.watched.entries
    assert entries
    raw = ident.sensors.maps["watched_bits"].lookup(struct.pack("<I", 0))
    for kdev, ino in entries:
        h = watch_hash(kdev, ino)
        assert raw[h >> 3] >> (h & 7) & 1, (kdev, ino)
    assert sum(bin(b).count("1") for b in raw) <= len(entries)
    try:
        ident.sensors.set_watched_inodes({})
        assert not any(ident.sensors.maps["watched_bits"].lookup(struct.pack("<I", 0)))
    finally:
        ident.sensors.set_watched_inodes(ident.pipeline.filters.watched.scan())
