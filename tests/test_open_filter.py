"""Open filter by path prefix AND open mode: rule analysis, map entries, kernel."""
import os
import shutil
import subprocess
import sys
import textwrap
import uuid

import pytest

from vigil.events import Kind
from vigil.rules.kernel_filter import OPEN_ANY, OPEN_READ, OPEN_WRITE, minimize_open_filter
from vigil.rules.engine import RuleEngine
from vigil.kernel.sensors import open_filter_entries

R, W, RW = OPEN_READ, OPEN_WRITE, OPEN_ANY

# Falco's own macros, written the Falco way
FALCO_MACROS = """
- macro: open_write
  condition: (evt.type in (open,openat,openat2) and evt.is_open_write=true and fd.typechar='f' and fd.num>=0)
- macro: open_read
  condition: (evt.type in (open,openat,openat2) and evt.is_open_read=true and fd.typechar='f' and fd.num>=0)
- macro: open_directory
  condition: (evt.type in (open,openat,openat2) and evt.is_open_read=true and fd.typechar='d' and fd.num>=0)
- macro: etc_dir
  condition: (fd.name startswith /etc/)
- list: sensitive_file_names
  items: [/etc/shadow, /etc/sudoers, /etc/pam.conf, /etc/security/pwquality.conf]
- macro: sensitive_files
  condition: >
    ((fd.name startswith /etc and fd.name in (sensitive_file_names))
     or fd.directory in (/etc/sudoers.d, /etc/pam.d))
- macro: access_log_files
  condition: (fd.directory in (/var/log, /var/log/nginx))
"""


def engine(*conds):
    rules = "".join(textwrap.dedent(f"""
        - rule: R{i}
          desc: d
          condition: {c!r}
          output: o
          priority: WARNING
        """) for i, c in enumerate(conds))
    return RuleEngine.from_text(FALCO_MACROS + rules, "t.yaml")


@pytest.mark.parametrize("conds, want", [
    # write only
    (["open_write and etc_dir"], {"/etc/": W}),
    (["evt.type = openat and evt.is_open_write = true and fd.name startswith /etc/"], {"/etc/": W}),
    (["evt.type = openat and evt.is_open_read = false and fd.name startswith /etc/"], {"/etc/": W}),
    (["evt.type = openat and not evt.is_open_read = true and fd.name startswith /etc/"], {"/etc/": W}),
    (["evt.type = openat and evt.is_open_write != false and fd.name startswith /etc/"], {"/etc/": W}),
    (["evt.type = creat and fd.name startswith /tmp/"], {"/tmp/": W}),
    (["evt.type = openat and fd.name startswith /var/log/ and evt.arg.flags contains O_TRUNC"],
     {"/var/log/": W}),
    (["open_write and access_log_files and evt.arg.flags contains \"O_TRUNC\""],
     {"/var/log/": W}),
    (["evt.type = openat and fd.name startswith /x/ and evt.arg.flags contains O_CREAT"], {"/x/": W}),
    (["evt.type = openat and fd.name startswith /x/ and evt.arg.flags contains O_WRONLY"], {"/x/": W}),
    (["evt.type = openat and fd.name startswith /x/ and evt.arg.flags = 'O_WRONLY|O_CREAT'"],
     {"/x/": W}),
    # read only
    (["open_read and sensitive_files"],
     {"/etc/pam.conf": R, "/etc/pam.d/": R, "/etc/security/pwquality.conf": R, "/etc/shadow": R,
      "/etc/sudoers": R}),
    (["evt.type = openat and evt.is_open_write = false and fd.name = /etc/shadow"], {"/etc/shadow": R}),
    (["evt.type = openat and fd.name startswith /x/ and evt.arg.flags contains O_RDONLY"], {"/x/": R}),
    (["open_directory and fd.name startswith /proc/"], {"/proc/": R}),
    # unknown: both
    (["evt.type = openat and fd.name startswith /etc/"], {"/etc/": RW}),
    (["evt.type = openat and fd.name startswith /x/ and evt.arg.flags contains O_APPEND"], {"/x/": RW}),
    (["evt.type = openat and fd.name startswith /x/ and evt.arg.flags contains O_RDWR"], {"/x/": RW}),
    (["evt.type = openat and fd.name startswith /x/ and evt.arg.flags in ('O_WRONLY|O_CREAT', O_RDONLY)"],
     {"/x/": RW}),
    (["evt.type = openat and fd.name startswith /x/ and not evt.arg.flags contains O_TRUNC"], {"/x/": RW}),
    (["evt.type = openat and fd.name startswith /x/ and evt.is_open_write exists"], {"/x/": RW}),
    (["open_write and fd.name startswith /x/", "evt.type = openat and fd.name startswith /x/"],
     {"/x/": RW}),
    # both, per prefix, within a rule and over rules
    (["(open_write and etc_dir) or (open_read and fd.name = /etc/shadow)"],
     {"/etc/": W, "/etc/shadow": RW}),
    (["open_write and etc_dir", "open_read and fd.name = /etc/shadow"],
     {"/etc/": W, "/etc/shadow": RW}),
    (["open_read and fd.name startswith /etc/", "open_write and fd.name startswith /etc/ssh/"],
     {"/etc/": R, "/etc/ssh/": RW}),
    # a longer prefix answering like its covering one is dropped
    (["evt.type = openat and fd.name startswith /etc/", "open_read and fd.name = /etc/shadow"],
     {"/etc/": RW}),
    (["open_write and etc_dir", "open_write and fd.name startswith /etc/cni/"], {"/etc/": W}),
    # any path, one mode ("" covers every path)
    (["open_write"], {"": W}),
    (["open_write or (open_read and fd.name = /etc/shadow)"], {"": W, "/etc/shadow": RW}),
    # no open rule
    (["evt.type = execve"], {}),
    (["open_write and fd.name in ()"], {}),
])
def test_open_path_filter(conds, want):
    assert engine(*conds).open_path_filter() == want


@pytest.mark.parametrize("conds", [
    ["evt.type = openat"],
    ["evt.type = openat and not fd.name startswith /proc"],
    ["open_write or evt.is_open_read = true"],
    ["open_write and etc_dir", "evt.type = openat and fd.name startswith /"],
    ["evt.type = openat and (fd.name startswith /etc or proc.name = x)"],
])
def test_open_path_filter_everything(conds):
    eng = engine(*conds)
    assert eng.open_path_filter() is None
    assert eng.open_path_prefixes() is None


def test_read_and_write_required_is_one_mode():
    """An open that is a read and a write (O_RDWR) carries both bits in the
    kernel: either bit finds it."""
    f = engine("open_read and open_write and fd.name startswith /x/").open_path_filter()
    assert list(f) == ["/x/"] and f["/x/"] in (R, W)


def test_disabled_rules_do_not_count():
    eng = engine("open_write and etc_dir", "evt.type = openat and fd.name startswith /etc/")
    assert eng.open_path_filter() == {"/etc/": RW}
    eng.set_enabled("R1", False)
    assert eng.open_path_filter() == {"/etc/": W}


def test_exceptions_keep_the_mode():
    eng = RuleEngine.from_text(FALCO_MACROS + textwrap.dedent("""
        - rule: Write below etc
          desc: d
          condition: open_write and etc_dir and not proc.name in (dpkg)
          output: o
          priority: ERROR
          exceptions:
            - name: proc_and_directory
              fields: [proc.name, fd.directory]
              comps: [=, =]
              values:
                - [calico-node, /etc/cni/net.d]
        """), "t.yaml")
    assert eng.open_path_filter() == {"/etc/": W}


def test_filter_prefixes_agree_with_open_path_prefixes():
    conds = ["open_write and etc_dir", "open_read and sensitive_files",
             "evt.type = openat and fd.directory in (/root/.aws, /var/run/secrets)",
             "open_write and access_log_files and evt.arg.flags contains O_TRUNC"]
    eng = engine(*conds)
    prefixes = eng.open_path_prefixes()
    flt = eng.open_path_filter()
    assert all(any(k.startswith(p) for p in prefixes) for k in flt)
    assert all(p in flt for p in prefixes)


def test_default_rules_reads_only_sensitive_files():
    path = os.path.join(os.path.dirname(__file__), "..", "src", "vigil", "rules", "default",
                        "vigil_rules.yaml")
    eng = RuleEngine.from_files([path])
    flt = eng.open_path_filter()
    prefixes = eng.open_path_prefixes()
    # every directory the rules watch is watched for writes only ...
    assert {p: flt[p] for p in prefixes} == {p: W for p in prefixes}
    # ... and reads reach user space only for the sensitive files
    reads = sorted(k for k, m in flt.items() if m & R)
    assert "/etc/shadow" in reads and "/etc/sudoers" in reads
    assert all(k.startswith("/etc/") and k != "/etc/" for k in reads)
    assert all(flt[k] == RW for k in reads)


def test_minimize_open_filter():
    assert minimize_open_filter({"/a": R, "/a/b": W, "/a/b/c": R, "/a/bc": R, "/d": 0}) == \
        {"/a": R, "/a/b": RW}
    assert minimize_open_filter({"": W, "/etc/shadow": R, "/x": W}) == {"": W, "/etc/shadow": RW}


# ---------------------------------------------------------------- map entries

def test_map_entries_from_list_and_dict():
    assert open_filter_entries(["/etc/", "/etc/ssh", "/bin"]) == {b"/bin": 3, b"/etc/": 3}
    assert open_filter_entries({"/etc/": 2, "/etc/shadow": 1, "/x": 0}) == \
        {b"/etc/": 2, b"/etc/shadow": 3}
    assert open_filter_entries({"": 2, "/r/": 1}) == {b"": 2, b"/r/": 3}


def test_map_entries_cut_to_what_the_kernel_compares():
    from vigil.events.structs import PREFIX_LEN
    long_a = "/" + "a" * 200
    long_b = "/" + "a" * 150 + "/b"
    e = open_filter_entries({long_a: 1, long_b: 2})
    # the kernel key holds PREFIX_LEN - 1 path bytes: both cut to the same prefix
    assert e == {("/" + "a" * (PREFIX_LEN - 2)).encode(): 3}


# ---------------------------------------------------------------- real kernel

@pytest.fixture(scope="module")
def opens_pipe(start_pipeline):
    c = start_pipeline({Kind.OPEN}, seed=False)
    yield c
    c.stop()


@pytest.fixture
def tree():
    base = f"/tmp/vigil-of-{uuid.uuid4().hex[:10]}"
    for d in ("w", "r"):
        os.makedirs(f"{base}/{d}")
        for f in ("a", "b", "c"):
            with open(f"{base}/{d}/{f}", "w") as fh:
                fh.write("x")
    yield base
    shutil.rmtree(base, ignore_errors=True)


CHILD = """
import os, sys
base = sys.argv[1]
def op(path, flags):
    os.close(os.open(path, flags, 0o644))
for d in ("w", "r"):
    p = f"{base}/{d}"
    op(p + "/a", os.O_RDONLY)                                  # read
    op(p + "/new", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)      # write
    op(p + "/b", os.O_RDWR)                                     # both
    op(p + "/c", os.O_WRONLY | os.O_APPEND)                     # write
    op(p + "/c", os.O_RDONLY | os.O_TRUNC)                      # a read that writes
    op(p + "/rc", os.O_RDONLY | os.O_CREAT)                     # a read that creates
    op(f"{p}/../{d}/a", os.O_RDONLY)    # '..': judged on the file it reaches (a read of {d}/a)
op(base + "/done", os.O_WRONLY | os.O_CREAT)
print(os.getpid())
"""


def run_child(base):
    p = subprocess.run([sys.executable, "-c", CHILD, base], capture_output=True, text=True, timeout=20)
    assert p.returncode == 0, p.stderr
    return int(p.stdout.strip().splitlines()[-1])


def collect(c, base, pid):
    c.wait_for(lambda e: e.kind == Kind.OPEN and e.pid == pid and e.path == base + "/done", timeout=5)
    c.settle(0.1)
    return [e.path[len(base):] + ":" + oct(e.flags & 0o3) + ("T" if e.flags & os.O_TRUNC else "")
            + ("C" if e.flags & os.O_CREAT else "")
            for e in c.find(lambda e: e.kind == Kind.OPEN and e.pid == pid)]


def test_kernel_filters_by_prefix_and_mode(opens_pipe, tree):
    c = opens_pipe
    try:
        c.sensors.set_open_prefixes({tree + "/w/": 2, tree + "/r/": 1, tree + "/done": 2})
        c.clear()
        pid = run_child(tree)
        got = collect(c, tree, pid)
        assert got == [
            "/w/new:0o1TC", "/w/b:0o2", "/w/c:0o1", "/w/c:0o0T", "/w/rc:0o0C",
            "/r/a:0o0", "/r/b:0o2", "/r/c:0o0T", "/r/rc:0o0C",
            "/r/a:0o0",
            "/done:0o1C",
        ]
    finally:
        c.sensors.set_open_prefixes(None)


def test_kernel_list_still_wants_every_mode(opens_pipe, tree):
    c = opens_pipe
    try:
        c.sensors.set_open_prefixes([tree + "/r/", tree + "/done"])
        c.clear()
        pid = run_child(tree)
        got = collect(c, tree, pid)
        assert [g for g in got if g.startswith("/r/")] == [
            "/r/a:0o0", "/r/new:0o1TC", "/r/b:0o2", "/r/c:0o1", "/r/c:0o0T", "/r/rc:0o0C",
            "/r/a:0o0"]
        # the '..' one reaches /w/a, which is not wanted: the kernel resolved it
        assert [g for g in got if g.startswith("/w/")] == []
    finally:
        c.sensors.set_open_prefixes(None)


def test_kernel_empty_prefix_covers_every_path(opens_pipe, tree):
    """{"": 2}: writes anywhere, and (here) reads below one prefix."""
    c = opens_pipe
    try:
        c.sensors.set_open_prefixes({"": 2, tree + "/r/": 1})
        c.clear()
        pid = run_child(tree)
        got = collect(c, tree, pid)
        assert [g for g in got if g.startswith("/w/")] == [
            "/w/new:0o1TC", "/w/b:0o2", "/w/c:0o1", "/w/c:0o0T", "/w/rc:0o0C"]
        assert [g for g in got if g.startswith("/r/")] == [
            "/r/a:0o0", "/r/new:0o1TC", "/r/b:0o2", "/r/c:0o1", "/r/c:0o0T", "/r/rc:0o0C",
            "/r/a:0o0"]
        # a read elsewhere stays in the kernel
        p = subprocess.run(["/bin/cat", tree + "/w/a"], capture_output=True)
        assert p.returncode == 0
        c.settle(0.1)
        assert not c.find(lambda e: e.kind == Kind.OPEN and e.path == tree + "/w/a" and e.comm == "cat")
    finally:
        c.sensors.set_open_prefixes(None)


def test_filter_change_keeps_wanted_entries(opens_pipe, tree):
    """Changing the filter updates entries in place (no empty map in between)
    and removes the stale ones."""
    c = opens_pipe
    m = c.sensors.maps["open_prefixes"]
    try:
        c.sensors.set_open_prefixes({tree + "/w/": 2, tree + "/r/": 1})
        assert len(list(m.keys())) == 2
        c.sensors.set_open_prefixes({tree + "/w/": 3})
        assert [v for _, v in m.items()] == [b"\x03"]
        c.sensors.set_open_prefixes(None)
        assert list(m.keys()) == []
    finally:
        c.sensors.set_open_prefixes(None)


# ---------------------------------------------------------------- soundness

def _kernel_sends(entries, path, flags):
    """What file.bpf.c does with the entries set_open_prefixes() writes."""
    if ".." in path:
        return True
    key = path.encode()[:127]
    best = None
    for b in entries:
        if key.startswith(b) and (best is None or len(b) > len(best)):
            best = b
    mask = entries[best] if best is not None else 0
    acc = flags & 3
    need = (R if acc != os.O_WRONLY else 0) | \
        (W if acc != os.O_RDONLY or flags & (os.O_CREAT | os.O_TRUNC) else 0)
    return bool(mask & need)


_LEAVES = [
    "fd.name startswith /etc/", "fd.name startswith /etc/ssh/", "fd.name = /etc/shadow",
    "fd.directory = /var/log", "fd.name pmatch (/usr/bin, /etc)", "fd.name glob '/home/*/.ssh/*'",
    "fd.name endswith .key", "evt.is_open_read = true", "evt.is_open_write = true",
    "evt.is_open_read = false", "evt.is_open_write != true", "evt.arg.flags contains O_TRUNC",
    "evt.arg.flags contains O_CREAT", "evt.arg.flags contains O_RDONLY", "evt.arg.flags contains O_RDWR",
    "evt.arg.flags contains O_WRONLY", "evt.arg.flags in ('O_WRONLY|O_CREAT|O_TRUNC', 'O_RDWR')",
    "evt.type = creat", "evt.type in (open, openat)", "proc.name = cat", "open_write", "open_read",
]
_PATHS = ["/etc/shadow", "/etc/passwd", "/etc/ssh/sshd_config", "/var/log/syslog", "/usr/bin/ls",
          "/home/u/.ssh/id.key", "/tmp/x", "/etcx"]
_FLAGS = [os.O_RDONLY, os.O_WRONLY, os.O_RDWR, os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
          os.O_RDONLY | os.O_TRUNC, os.O_RDONLY | os.O_CREAT, os.O_WRONLY | os.O_APPEND, 3]


def _conditions():
    from hypothesis import strategies as st
    leaf = st.sampled_from(_LEAVES)
    return st.recursive(leaf, lambda c: st.one_of(
        st.tuples(c, c).map(lambda t: f"({t[0]} and {t[1]})"),
        st.tuples(c, c).map(lambda t: f"({t[0]} or {t[1]})"),
        c.map(lambda x: f"not {x}")), max_leaves=6)


def test_filter_lets_through_every_open_a_rule_matches():
    """Property: any open a rule matches passes the kernel filter built from
    open_path_filter() (the analysis only over-approximates)."""
    hypothesis = pytest.importorskip("hypothesis")
    from hypothesis import strategies as st
    from vigil.events import Event

    @hypothesis.settings(max_examples=int(os.environ.get("VIGIL_FUZZ_EXAMPLES", "300")), deadline=None)
    @hypothesis.given(st.lists(_conditions(), min_size=1, max_size=3))
    def check(conds):
        eng = engine(*[f"evt.type in (open, openat, openat2, creat) and {c}" for c in conds])
        flt = eng.open_path_filter()
        entries = None if flt is None else open_filter_entries(flt)
        for path in _PATHS:
            for flags in _FLAGS:
                for sc in ("openat", "creat"):
                    f = flags if sc == "openat" else os.O_WRONLY | os.O_CREAT | os.O_TRUNC
                    ev = Event(Kind.OPEN, time=1, pid=200, tid=200, ppid=1, uid=0, gid=0, comm="cat",
                               syscall=sc, path=path, flags=f, ret=3)
                    if eng.evaluate(ev) and entries is not None:
                        assert _kernel_sends(entries, path, f), (conds, flt, path, oct(f), sc)
    check()
