"""`vigil trace` as a user runs it (a subprocess against the real kernel):
views, --json keys, filters, signals, and one clear error line for each way
the machine can be unfit."""
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid

import pytest

from conftest import VIGIL

ECHO = os.path.realpath("/bin/echo")


class Trace:
    """A running `vigil trace ...` whose stdout lines are collected in a thread."""

    def __init__(self, *args, env=None):
        e = dict(os.environ)
        e.update(env or {})
        self.p = subprocess.Popen([VIGIL, "trace", *args], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, env=e)
        self.lines = []
        self.err = ""
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self):
        for line in self.p.stdout:
            self.lines.append(line.rstrip("\n"))

    def json(self):
        out = []
        for line in list(self.lines):
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    def until(self, action, pred, timeout=10.0, interval=0.2):
        """Repeat action until a line (parsed as JSON when it is) matches pred."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.p.poll() is not None:
                break
            action()
            time.sleep(interval)
            hits = [j for j in self.json() if pred(j)]
            if hits:
                return hits
        self.stop()
        raise AssertionError(f"no matching line; rc={self.p.returncode} stderr={self.err!r} "
                             f"lines={self.lines[:20]!r}")

    def stop(self, sig=signal.SIGINT, timeout=5.0):
        """Signal it and return (exit code, seconds it took to exit)."""
        t0 = time.monotonic()
        if self.p.poll() is None:
            self.p.send_signal(sig)
        try:
            rc = self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            rc = self.p.wait()
        took = time.monotonic() - t0
        self._t.join(2)
        self.err = self.p.stderr.read()
        self.p.stderr.close()
        return rc, took

    def wait(self, timeout=15):
        rc = self.p.wait(timeout)
        self._t.join(2)
        self.err = self.p.stderr.read()
        self.p.stderr.close()
        return rc


@pytest.fixture
def trace(bpf_objects):
    started = []

    def _start(*args, env=None):
        t = Trace(*args, env=env)
        started.append(t)
        return t

    yield _start
    for t in started:
        if t.p.poll() is None:
            t.stop(signal.SIGKILL)


def mk():
    return "marker-" + uuid.uuid4().hex[:10]


def run_quiet(cmd, **kw):
    return subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)


# --- views ---

@pytest.mark.parametrize("duration", ["3", "3s"])   # --duration reads like vigil.yaml's
def test_exec_json_duration(trace, tmp_path, duration):
    m = mk()
    t = trace("exec", "--json", "--duration", duration)
    t0 = time.monotonic()
    hits = t.until(lambda: run_quiet([ECHO, m, "a b"], cwd=str(tmp_path)),
                   lambda j: j.get("args") == [ECHO, m, "a b"], timeout=3)
    assert t.wait() == 0
    assert time.monotonic() - t0 < 6
    j = hits[0]
    assert {"type", "time", "pid", "ppid", "uid", "comm", "exe", "args", "cwd",
            "cgroup_id"} <= set(j)
    assert j["type"] == "exec"
    assert (j["comm"], j["exe"], j["cwd"], j["uid"]) == ("echo", ECHO, str(tmp_path), 0)
    assert j["ppid"] == os.getpid()
    assert isinstance(j["pid"], int) and isinstance(j["cgroup_id"], int)
    assert j["args_truncated"] is False
    # every line is JSON, no header in --json mode
    assert all(line.startswith("{") for line in t.lines)


def test_exec_columns_header(trace):
    m = mk()
    t = trace("exec")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any(m in line for line in t.lines):
        run_quiet(["/bin/echo", m])
        time.sleep(0.2)
    rc, took = t.stop(signal.SIGINT)
    assert rc == 0
    header = t.lines[0].split()
    assert header == ["TIME", "UID", "PCOMM", "PID", "PPID", "RET", "CWD", "ARGS"]   # RET: issue 9
    rows = [line for line in t.lines if m in line]
    assert rows
    cols = rows[0].split()
    assert cols[1:3] == ["0", "echo"]
    assert cols[-2:] == ["/bin/echo", m]
    assert len([line for line in t.lines if line.split()[:1] == ["TIME"]]) == 1


def test_exec_args_max(trace):
    m = mk()
    t = trace("exec", "--json", "--args-max", "32")
    hits = t.until(lambda: run_quiet(["/bin/echo", m, "x" * 40]),
                   lambda j: j.get("args", [None])[:2] == ["/bin/echo", m])
    t.stop()
    assert hits[0]["args_truncated"] is True
    assert "\0".join(hits[0]["args"]) == ("/bin/echo\0" + m + "\0" + "x" * 40)[:31]


def test_filter_comm(trace):
    m = mk()
    t = trace("exec", "--json", "--comm", "echo")

    def act():
        run_quiet(["/bin/true", m])
        run_quiet(["/bin/echo", m])
    t.until(act, lambda j: j.get("args") == ["/bin/echo", m])
    t.stop()
    mine = [j for j in t.json() if m in j.get("args", [])]
    assert mine and all(j["comm"] == "echo" for j in mine)
    assert {j["comm"] for j in t.json()} == {"echo"}


@pytest.mark.parametrize("loop_body, grandchild", [
    ('/bin/echo "$x"', False),                 # the echo is the shell's child
    ('/bin/sh -c "/bin/echo $x"', True),       # the echo is a grandchild
])
def test_filter_pid_includes_descendants(trace, loop_body, grandchild):
    m = mk()
    shell = subprocess.Popen(["/bin/sh", "-c", f"while read x; do {loop_body}; done"],
                             stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        t = trace("exec", "--json", "--pid", str(shell.pid))

        def act():
            shell.stdin.write(m + "\n")
            shell.stdin.flush()
            run_quiet(["/bin/echo", "outside-" + m])
        hits = t.until(act, lambda j: j.get("args") == ["/bin/echo", m])
        t.stop()
        if grandchild:
            assert hits[0]["ppid"] != shell.pid
        else:
            assert hits[0]["ppid"] == shell.pid
            assert all(j["pid"] == shell.pid or j["ppid"] == shell.pid for j in t.json())
        assert not any("outside-" + m in j.get("args", []) for j in t.json())
    finally:
        shell.stdin.close()
        shell.wait(5)


def test_filter_uid(trace):
    m = mk()
    t = trace("exec", "--json", "--uid", "65534")

    def act():
        run_quiet(["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups",
                   "/bin/echo", m, "nobody"])
        run_quiet(["/bin/echo", m, "root"])
    hits = t.until(act, lambda j: j.get("args") == ["/bin/echo", m, "nobody"])
    t.stop()
    assert hits[0]["uid"] == 65534
    assert all(j["uid"] == 65534 for j in t.json())


def test_open_json(trace, tmp_path):
    f = tmp_path / (mk() + ".txt")
    f.write_text("x")
    t = trace("open", "--json")
    hits = t.until(lambda: run_quiet(["/bin/cat", f.name], cwd=str(tmp_path)),
                   lambda j: j.get("path") == str(f))
    # every open on the node is printed: under load the ring holds a backlog
    # that is still printed after the signal, so allow it more time
    rc, _ = t.stop(timeout=20)
    assert rc == 0
    j = hits[0]
    assert j["type"] == "open" and j["comm"] == "cat"
    assert j["flags"] & 3 == os.O_RDONLY
    assert j["ret"] >= 0
    assert j["syscall"] == "openat"


def test_open_prefix_option(trace, tmp_path):
    inside = tmp_path / "in" / (mk() + ".txt")
    inside.parent.mkdir()
    inside.write_text("")
    outside = tmp_path / (mk() + ".txt")
    outside.write_text("")
    t = trace("open", "--json", "--open-prefix", str(inside.parent))

    def act():
        run_quiet(["/bin/cat", str(outside), str(inside)])
    t.until(act, lambda j: j.get("path") == str(inside))
    t.stop()
    paths = {j["path"] for j in t.json()}
    assert str(outside) not in paths
    assert [p for p in paths if not p.startswith(str(inside.parent))] == []


def test_connect_json(trace):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    port = srv.getsockname()[1]
    code = ("import socket,sys; c=socket.create_connection(('127.0.0.1', int(sys.argv[1]))); "
            "print(c.getsockname()[1])")
    sports = []

    def act():
        p = subprocess.run([sys.executable, "-c", code, str(port)], capture_output=True, text=True)
        sports.append(int(p.stdout))
        srv.accept()[0].close()
    try:
        t = trace("connect", "--json")
        hits = t.until(act, lambda j: j.get("dport") == port)
        t.stop()
    finally:
        srv.close()
    j = hits[0]
    assert (j["type"], j["family"], j["proto"], j["daddr"], j["dport"], j["ret"]) == \
        ("connect", "AF_INET", "tcp", "127.0.0.1", port, 0)
    assert j["saddr"] == "127.0.0.1" and j["sport"] in sports
    assert {"family", "saddr", "sport", "daddr", "dport", "ret"} <= set(j)


def test_dns_json_custom_port(trace):
    resp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    resp.bind(("127.0.0.1", 0))
    port = resp.getsockname()[1]
    name = mk() + ".example"
    q = struct.pack(">HHHHHH", 7, 0x0100, 1, 0, 0, 0)
    for label in name.split("."):
        q += bytes([len(label)]) + label.encode()
    q += b"\0" + struct.pack(">HH", 28, 1)
    code = "import socket,sys; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(bytes.fromhex(sys.argv[1]), ('127.0.0.1', int(sys.argv[2])))"
    try:
        t = trace("dns", "--dns-port", str(port), "--json")
        hits = t.until(lambda: run_quiet([sys.executable, "-c", code, q.hex(), str(port)]),
                       lambda j: j.get("query") == name)
        t.stop()
    finally:
        resp.close()
    j = hits[0]
    assert (j["type"], j["qtype"], j["daddr"], j["dport"], j["syscall"]) == \
        ("dns", "AAAA", "127.0.0.1", port, "sendto")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_promptly(trace, sig):
    m = mk()
    t = trace("exec", "--json")
    t.until(lambda: run_quiet(["/bin/echo", m]), lambda j: j.get("args") == ["/bin/echo", m])
    rc, took = t.stop(sig)
    assert rc == 0
    assert took < 2.0
    assert "Traceback" not in t.err


def test_vigil_helpers_not_reported(trace):
    """The CLI ignores itself and what it starts; its output has no vigil pid."""
    m = mk()
    t = trace("exec", "--json")
    t.until(lambda: run_quiet(["/bin/echo", m]), lambda j: j.get("args") == ["/bin/echo", m])
    t.stop()
    assert all(j["pid"] != t.p.pid and j["ppid"] != t.p.pid for j in t.json())


# --- unfit machine: exit code 2 and exactly one `vigil: error:` line ---

def _one_error(r, *needles):
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert len(lines) == 1, lines
    assert lines[0].startswith("vigil: error: ")
    for n in needles:
        assert n in lines[0], lines[0]
    assert r.stdout == ""
    return lines[0]


def _vigil(*args, env=None, **kw):
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([VIGIL, "trace", *args], capture_output=True, text=True, env=e,
                          timeout=30, **kw)


def test_not_root():
    r = subprocess.run(["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups",
                        VIGIL, "trace", "exec", "--duration", "1"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    line = _one_error(r, "root")
    assert "sudo" in line


def test_btf_missing(bpf_objects):
    _one_error(_vigil("exec", "--duration", "1", env={"VIGIL_BTF": "/nonexistent"}),
               "BTF", "/nonexistent")


def test_libbpf_missing(bpf_objects):
    _one_error(_vigil("exec", "--duration", "1", env={"VIGIL_LIBBPF": "libnotthere.so"}),
               "libnotthere.so", "libbpf")


def test_bpf_dir_empty(bpf_objects, tmp_path):
    _one_error(_vigil("exec", "--duration", "1", env={"VIGIL_BPF_DIR": str(tmp_path)}),
               "make bpf", str(tmp_path))


def test_tracefs_path_cannot_be_created(bpf_objects):
    # only matters when tracefs is not where we point: /proc refuses new dirs
    _one_error(_vigil("exec", "--duration", "1", env={"VIGIL_TRACEFS": "/proc/vigil-tracefs"}),
               "tracefs", "/proc/vigil-tracefs")


def _in_private_mount_ns(script: str, env=None, timeout=40):
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                          capture_output=True, text=True, env=e, timeout=timeout)


TRACEFS_SCRIPT = """
umount /sys/kernel/tracing 2>/dev/null || umount -l /sys/kernel/tracing || exit 9
test -e /sys/kernel/tracing/events && exit 8
"$VIGIL" trace open --json --duration 3 --open-prefix "$(dirname "$MARK")" > "$OUT" &
i=0; while [ $i -lt 18 ]; do /bin/cat "$MARK" >/dev/null; sleep 0.15; i=$((i+1)); done
wait $! || exit 7
grep -q " $TFS tracefs " /proc/self/mounts || exit 6
"""


@pytest.mark.parametrize("where", ["default", "custom"])
def test_tracefs_unmounted_is_mounted_again(bpf_objects, tmp_path, where):
    mark = tmp_path / (mk() + ".txt")
    mark.write_text("")
    out = tmp_path / "out.json"
    env = {"VIGIL": VIGIL, "OUT": str(out), "MARK": str(mark),
           "TFS": "/sys/kernel/tracing"}
    if where == "custom":
        env["VIGIL_TRACEFS"] = env["TFS"] = str(tmp_path / "tfs")
    r = _in_private_mount_ns(TRACEFS_SCRIPT, env=env)
    assert r.returncode == 0, (r.returncode, r.stderr)
    assert "error" not in r.stderr and "WARNING" not in r.stderr, r.stderr
    evs = [json.loads(line) for line in out.read_text().splitlines()]
    assert any(e["path"] == str(mark) and e["comm"] == "cat" for e in evs)
    # the host's tracefs was never touched
    assert os.path.isdir("/sys/kernel/tracing/events")


def test_view_without_any_sensor_is_an_error(bpf_objects, tmp_path):
    """Only the proc object present: `trace open` has nothing to attach, which is
    an error rather than a silent empty trace."""
    import shutil
    shutil.copy(bpf_objects / "proc.bpf.o", tmp_path / "proc.bpf.o")
    r = _vigil("open", "--duration", "1", env={"VIGIL_BPF_DIR": str(tmp_path)})
    assert r.returncode == 2
    errors = [line for line in r.stderr.splitlines() if line.startswith("vigil: error:")]
    assert errors == ["vigil: error: no sensor for 'open' could be attached on this kernel "
                      "(see the warnings above)"]
    assert "file.bpf.o missing" in r.stderr
    # the exec view works from the same directory
    r = _vigil("exec", "--duration", "0.5", env={"VIGIL_BPF_DIR": str(tmp_path)})
    assert r.returncode == 0, r.stderr


# --- columns as BCC users expect (issue 9) ---

def _text_until(t, action, needle, timeout=10.0):
    """Repeat action until a text row contains needle; the rows that do."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and t.p.poll() is None:
        action()
        time.sleep(0.2)
        rows = [line for line in list(t.lines) if needle in line]
        if rows:
            return rows
    t.stop()
    raise AssertionError(f"no row with {needle!r}; stderr={t.err!r} lines={t.lines[:20]!r}")


def _columns(header: str, row: str) -> dict:
    """A row cut at the header's column starts (the last column takes the rest)."""
    names = header.split()
    starts = [header.index(n + " ") if n != names[-1] else header.rindex(n) for n in names]
    ends = starts[1:] + [None]
    return {n: row[s:e].strip() for n, s, e in zip(names, starts, ends)}


def test_exec_rows_stay_one_line_and_columns_hold(trace, tmp_path):
    """An argv with a newline and a tab is escaped; a CWD longer than its column
    is cut from the left behind an ellipsis, so ARGS stays in its place; RET is 0."""
    m = mk()
    deep = tmp_path / ("d" * 40) / "and-deeper"
    deep.mkdir(parents=True)
    t = trace("exec")
    rows = _text_until(t, lambda: run_quiet(["/bin/echo", f"{m}\nsecond\tline"], cwd=str(deep)), m)
    t.stop()
    header = t.lines[0]
    assert header.split() == ["TIME", "UID", "PCOMM", "PID", "PPID", "RET", "CWD", "ARGS"]
    row = rows[0]
    assert row.endswith(f"/bin/echo {m}\\nsecond\\tline")
    assert not any(line.startswith("second") for line in t.lines)
    c = _columns(header, row)
    assert c["RET"] == "0" and c["PCOMM"] == "echo"
    assert c["CWD"] == "\u2026" + str(deep)[-23:] and len(c["CWD"]) == 24
    assert c["ARGS"] == f"/bin/echo {m}\\nsecond\\tline"


def test_open_flags_spelled_by_name_in_both_views(trace, tmp_path):
    f = tmp_path / (mk() + ".txt")
    f.write_text("x")
    t_open = trace("open", "--comm", "cat")
    t_all = trace("all", "--comm", "cat")
    rows = _text_until(t_open, lambda: run_quiet(["/bin/cat", str(f)]), str(f))
    all_rows = _text_until(t_all, lambda: run_quiet(["/bin/cat", str(f)]), str(f))
    t_open.stop()
    t_all.stop()
    c = _columns(t_open.lines[0], rows[0])
    assert c["FLAGS"] == "O_RDONLY" and c["PATH"] == str(f) and c["ERR"] == "0"
    opens = [r for r in all_rows if " open " in r]
    assert opens and f"openat {f} flags=O_RDONLY ret=" in opens[0]


def test_connect_rows_have_the_uid(trace):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    port = srv.getsockname()[1]
    code = f"import socket; socket.create_connection(('127.0.0.1', {port})).close()"

    def act():
        run_quiet(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                   sys.executable, "-c", code])
        srv.settimeout(2)
        try:
            srv.accept()[0].close()
        except OSError:
            pass
    try:
        t = trace("connect")
        rows = _text_until(t, act, f"127.0.0.1:{port}")
        t.stop()
    finally:
        srv.close()
    header = t.lines[0]
    assert header.split() == ["TIME", "UID", "PID", "COMM", "PROTO", "SADDR", "DADDR", "RET"]
    c = _columns(header, rows[0])
    assert c["UID"] == "65534" and c["DADDR"] == f"127.0.0.1:{port}" and c["RET"] == "0"


def test_failed_exec_row_live(trace, tmp_path):
    """A failed execve is a row of the exec view, with the errno name under RET
    (execsnoop's -x), and its argv; the successful one next to it shows 0."""
    m = mk()
    missing = tmp_path / f"no-such-{m}"
    code = ("import os, sys\ntry:\n    os.execv(sys.argv[1], [sys.argv[1], sys.argv[2]])\n"
            "except OSError:\n    os.execv('/bin/true', ['/bin/true', sys.argv[2]])\n")
    t = trace("exec")
    # the trace may attach between one round's failed exec and its /bin/true: repeat the
    # round until a failed row is there (its /bin/true row follows it)
    _text_until(t, lambda: run_quiet([sys.executable, "-c", code, str(missing), m]),
                f"{missing} {m}")
    _text_until(t, lambda: None, f"/bin/true {m}")
    rows = [line for line in t.lines if m in line]
    t.stop()
    header = t.lines[0]
    cols = [_columns(header, r) for r in rows]
    failed = [c for c in cols if c["ARGS"] == f"{missing} {m}"]
    ok = [c for c in cols if c["ARGS"] == f"/bin/true {m}"]
    assert failed and failed[0]["RET"] == "ENOENT", rows
    assert ok and ok[0]["RET"] == "0"


def test_failed_exec_ret_through_the_printer():
    """The exec view's rows for a failed exec (kind execfail) and a successful
    one, fed to the printer: RET is the errno name or 0, argv escaped; the
    `all` view and --json say the same."""
    import io
    from vigil.cli.trace_views import TracePrinter
    from vigil.events import Event, Kind
    common = dict(time=time.time_ns(), pid=42, tid=42, ppid=1, uid=1000, gid=1000, comm="sh")
    failed = Event(Kind.EXECFAIL, path="/nonexistent/x", args=["/nonexistent/x", "a\nb"],
                   ret=-2, syscall="execve", args_truncated=False, **common)
    ok = Event(Kind.EXEC, args=["/bin/true"], exe="/bin/true", cwd="/tmp", **common)
    out = io.StringIO()
    p = TracePrinter("exec", out=out)
    p(failed)
    p(ok)
    header, r1, r2 = out.getvalue().splitlines()
    assert _columns(header, r1)["RET"] == "ENOENT"
    assert _columns(header, r1)["ARGS"] == "/nonexistent/x a\\nb"
    assert _columns(header, r2)["RET"] == "0" and _columns(header, r2)["CWD"] == "/tmp"
    out = io.StringIO()
    p = TracePrinter("all", out=out)
    p(failed)
    p(ok)
    _, r1, r2 = out.getvalue().splitlines()
    assert r1.endswith("/nonexistent/x /nonexistent/x a\\nb ret=ENOENT")
    assert r2.endswith("/bin/true /bin/true")
    out = io.StringIO()
    TracePrinter("exec", as_json=True, out=out)(failed)
    j = json.loads(out.getvalue())
    assert j["type"] == "execfail" and j["ret"] == -2 and j["args"] == ["/nonexistent/x", "a\nb"]
