"""The default ruleset against the real kernel: one `vigil run` agent (default
rules, JSON on stdout, a private SQLite store) for the whole module, and per
rule a real process doing the behaviour, plus a benign look-alike that must stay
quiet.

Negative checks do not sleep: after the benign action the test triggers a known
alert (a "fence": a symlink to /etc/shadow) and waits for it; the agent handles
events in order, so once the fence is out the benign event has been judged.

Kernel module loading cannot happen here (the kernel has no module support):
that rule is checked by replaying a hand-made capture
(tests/data/captures/kernel_module_load.jsonl).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from conftest import closed_port, run, tcp_listener
from podman_env import BUSYBOX, PODMAN, make_rootfs, tools_missing

ROOT = Path(__file__).resolve().parent.parent
VIGIL = str(Path(sys.executable).parent / "vigil")
RULES_FILE = ROOT / "src" / "vigil" / "rules" / "default" / "vigil_rules.yaml"
CAPTURES = ROOT / "tests" / "data" / "captures"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the agent needs root")


def mark() -> str:
    return "vigiltest" + uuid.uuid4().hex[:10]


# --------------------------------------------------------------- the agent

class AgentRun:
    """A running `vigil run` and the Falco JSON alerts it printed so far."""

    def __init__(self, proc, out: Path, err: Path, store: Path, fence_dir: Path):
        self.proc, self.out, self.err, self.store = proc, out, err, store
        self.fence_dir = fence_dir
        self._alerts: list = []
        self._pos = 0
        self._partial = b""

    def alerts(self) -> list:
        with open(self.out, "rb") as f:
            f.seek(self._pos)
            data = f.read()
        self._pos += len(data)
        data = self._partial + data
        lines = data.split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            if line.strip():
                self._alerts.append(json.loads(line))
        return self._alerts

    def find(self, rule=None, **fields) -> list:
        out = []
        for a in self.alerts():
            if rule is not None and a["rule"] != rule:
                continue
            of = a["output_fields"]
            if all(_match(of.get(k), v) for k, v in fields.items()):
                out.append(a)
        return out

    def wait_for(self, rule=None, timeout: float = 15.0, **fields) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            found = self.find(rule, **fields)
            if found:
                return found[0]
            if self.proc.poll() is not None:
                raise AssertionError(f"agent exited ({self.proc.returncode}):\n{self.err.read_text()}")
            if time.monotonic() >= deadline:
                seen = [(a["rule"], a["output"][:200]) for a in self.alerts()[-15:]]
                raise AssertionError(f"no alert {rule!r} with {fields} within {timeout}s; "
                                     f"last alerts: {seen}")
            time.sleep(0.05)

    def fence(self) -> None:
        """Trigger a known alert and wait for it: everything before it was judged."""
        link = self.fence_dir / mark()
        os.symlink("/etc/shadow", link)
        try:
            self.wait_for("Create link to sensitive file", **{"fs.path.target": str(link)})
        finally:
            link.unlink()

    def assert_quiet(self, rule=None, **fields) -> None:
        self.fence()
        found = self.find(rule, **fields)
        assert not found, f"unexpected alert(s): {[a['output'] for a in found]}"


def _match(have, want) -> bool:
    if callable(want):
        return want(have)
    if isinstance(want, int) and not isinstance(want, bool) and isinstance(have, str):
        return have == str(want)
    return have == want


@pytest.fixture(scope="module")
def agent(bpf_objects, tmp_path_factory):
    d = tmp_path_factory.mktemp("vigil-default-rules")
    out, err, store = d / "alerts.json", d / "agent.err", d / "alerts.db"
    fence_dir = d / "fences"
    fence_dir.mkdir()
    with open(out, "wb") as fo, open(err, "wb") as fe:
        proc = subprocess.Popen([VIGIL, "run", "--output", "json", "--store", str(store)],
                                stdout=fo, stderr=fe, cwd=str(d))
    deadline = time.monotonic() + 60
    while b"running with" not in err.read_bytes():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"agent did not start:\n{err.read_text()}")
        time.sleep(0.05)
    run = AgentRun(proc, out, err, store, fence_dir)
    yield run
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def stored_alerts(agent, rule) -> list:
    r = subprocess.run([VIGIL, "alerts", "--store", str(agent.store), "--json", "--rule", rule,
                        "--limit", "0"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]


def started(cmd, **kw) -> int:
    """Run a command to completion; its pid (the pid the alert carries)."""
    kw.setdefault("stdout", subprocess.DEVNULL)
    kw.setdefault("stderr", subprocess.DEVNULL)
    p = subprocess.Popen(cmd, **kw)
    p.wait(20)
    return p.pid


def py_child(code: str, *argv) -> list:
    """Run python code in a child; returns the ints it prints (its pid first, by convention)."""
    p = run([sys.executable, "-c", "import ctypes, os, socket, sys\n"
             "libc = ctypes.CDLL(None, use_errno=True)\n" + code, *map(str, argv)], text=True)
    assert p.returncode == 0, p.stderr
    return [int(x) for x in p.stdout.split()]


def test_ruleset_validates():
    r = run([VIGIL, "rules", "validate", str(RULES_FILE), "--json"], text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    summary = json.loads(r.stdout)
    assert summary["ok"] and not summary["errors"] and not summary["warnings"]
    assert summary["rules_loaded"] >= 20
    # every open rule names its paths: only these prefixes cross to user space
    assert summary["open_path_prefixes"] == ["/bin/", "/etc/", "/sbin/", "/usr/bin/",
                                             "/usr/local/bin/", "/usr/local/sbin/", "/usr/sbin/",
                                             "/var/log/"]
    assert set(summary["required_kinds"]) == {"connect", "dns", "dup", "exec", "link", "module",
                                              "open", "ptrace", "rename", "symlink", "unlink"}


# --------------------------------------------------------------- files

def test_read_sensitive_file_untrusted(agent, tmp_path):
    pid = started(["cat", "/etc/shadow"])
    a = agent.wait_for("Read sensitive file untrusted", **{"proc.pid": pid})
    assert a["priority"] == "Warning"
    of = a["output_fields"]
    assert of["fd.name"] == "/etc/shadow"
    assert of["proc.cmdline"] == "cat /etc/shadow"
    assert of["user.name"] == "root" and of["container.id"] == "host"
    assert "mitre_credential_access" in a["tags"]
    # store first: the alert is in the SQLite store as well
    assert any(s["output_fields"].get("proc.pid") == pid
               for s in stored_alerts(agent, "Read sensitive file untrusted"))


def test_read_sensitive_file_benign(agent, tmp_path):
    # a trusted reader (an account tool at its own path) and an ordinary file;
    # a link *named* like a trusted reader is no longer trusted (test_evasion)
    chage = "/usr/bin/chage"
    if not os.access(chage, os.X_OK):
        pytest.skip(f"{chage} is not installed")
    p1 = started([chage, "-l", "root"])
    p2 = started(["cat", "/etc/hostname"])
    agent.assert_quiet("Read sensitive file untrusted", **{"proc.pid": lambda v: v in (p1, p2)})


def test_write_below_etc(agent, tmp_path):
    name = f"/etc/{mark()}.conf"
    benign = tmp_path / "x.conf"
    try:
        pid, = py_child("open(sys.argv[2], 'w').write('x')\n"
                        "open(sys.argv[1], 'w').write('x')\nprint(os.getpid())\n", name, benign)
    finally:
        if os.path.exists(name):
            os.unlink(name)
    a = agent.wait_for("Write below etc", **{"fd.name": name})
    assert a["priority"] == "Error"
    assert a["output_fields"]["proc.pid"] == pid
    assert "O_WRONLY" in a["output_fields"]["evt.arg.flags"]
    agent.assert_quiet(**{"fd.name": str(benign)})


def test_write_below_binary_dir(agent, tmp_path):
    m = mark()
    dst = f"/usr/local/bin/{m}"
    staged = f"/usr/local/{m}.tmp"
    try:
        pid = started(["cp", "/bin/true", dst])
        a = agent.wait_for("Write below binary dir", **{"fd.name": dst})
        assert a["priority"] == "Error"
        assert a["output_fields"]["proc.pid"] == pid
        assert a["output_fields"]["proc.cmdline"] == f"cp /bin/true {dst}"
        # moved into place (rename): the target is what counts
        shutil.copy("/bin/true", staged)
        os.rename(staged, dst + "-moved")
        a = agent.wait_for("Write below binary dir", **{"fs.path.target": dst + "-moved"})
        assert a["output_fields"]["evt.type"] in ("rename", "renameat", "renameat2")
        # a package manager may write there
        dpkg = tmp_path / "dpkg"
        os.symlink(shutil.which("cp"), dpkg)
        p2 = started([str(dpkg), "/bin/true", dst + "-pkg"])
    finally:
        for p in (dst, dst + "-moved", dst + "-pkg", staged):
            if os.path.exists(p):
                os.unlink(p)
    agent.assert_quiet("Write below binary dir", **{"proc.pid": p2})


def test_link_to_sensitive_file(agent, tmp_path):
    link = tmp_path / "sym"
    pid = started(["ln", "-s", "/etc/shadow", str(link)])
    a = agent.wait_for("Create link to sensitive file", **{"fs.path.target": str(link)})
    assert a["priority"] == "Warning"
    of = a["output_fields"]
    assert of["fs.path.source"] == "/etc/shadow" and of["proc.pid"] == pid
    assert of["evt.type"] in ("symlink", "symlinkat")
    # a hard link (the attempt counts even where the filesystems differ)
    hard = tmp_path / "hard"
    pid, = py_child("try:\n os.link('/etc/shadow', sys.argv[1])\nexcept OSError:\n pass\n"
                    "print(os.getpid())\n", hard)
    if hard.exists():
        hard.unlink()
    a = agent.wait_for("Create link to sensitive file", **{"proc.pid": pid})
    assert a["output_fields"]["evt.type"] in ("link", "linkat")
    # benign: a link to an ordinary file
    pid = started(["ln", "-s", "/etc/hostname", str(tmp_path / "ok")])
    agent.assert_quiet("Create link to sensitive file", **{"proc.pid": pid})


def test_clear_log_activities(agent):
    d = Path("/var/log") / mark()
    d.mkdir()
    log = d / "app.log"
    try:
        with open(log, "a") as f:      # appending: normal logging
            f.write("line\n")
        quiet = started(["sh", "-c", f"echo more >> {log}"])
        trunc = started(["sh", "-c", f": > {log}"])
        a = agent.wait_for("Clear log activities", **{"proc.pid": trunc})
        assert a["priority"] == "Warning"
        assert a["output_fields"]["fs.path.name"] == str(log)
        assert "O_TRUNC" in a["output_fields"]["evt.arg.flags"]
        # truncate(1) opens without O_TRUNC, then ftruncate()s: seen at its exec
        tr = started(["truncate", "-s", "0", str(log)])
        a = agent.wait_for("Clear log activities", **{"proc.pid": tr})
        assert a["output_fields"]["proc.cmdline"] == f"truncate -s 0 {log}"
        rm = started(["rm", "-f", str(log)])
        a = agent.wait_for("Clear log activities", **{"proc.pid": rm})
        assert a["output_fields"]["evt.type"] in ("unlink", "unlinkat")
        assert a["output_fields"]["fs.path.name"] == str(log)
    finally:
        shutil.rmtree(d, ignore_errors=True)
    agent.assert_quiet("Clear log activities", **{"proc.pid": quiet})


# --------------------------------------------------------------- processes

def test_execution_from_dev_shm(agent, tmp_path):
    m = mark()
    shm = f"/dev/shm/{m}"
    shutil.copy("/bin/true", shm)
    os.chmod(shm, 0o755)
    ok = tmp_path / m
    shutil.copy("/bin/true", ok)
    try:
        pid = started([shm])
        quiet = started([str(ok)])
    except PermissionError:
        pytest.skip("/dev/shm is mounted noexec here")
    finally:
        os.unlink(shm)
    a = agent.wait_for("Execution from /dev/shm", **{"proc.pid": pid})
    assert a["priority"] == "Warning"
    assert a["output_fields"]["proc.exepath"] == shm
    agent.assert_quiet(**{"proc.pid": quiet})


def test_script_from_dev_shm(agent, tmp_path):
    """A script kept in /dev/shm, run directly (its interpreter's binary runs)
    or handed to a shell, is caught; a shell reading a script elsewhere and a
    program merely reading a file in /dev/shm are not."""
    m = mark()
    shm = f"/dev/shm/{m}.sh"
    with open(shm, "w") as f:
        f.write("#!/bin/sh\ntrue\n")
    os.chmod(shm, 0o755)
    ok = tmp_path / f"{m}.sh"
    shutil.copy(shm, ok)
    try:
        try:
            direct = started([shm])
        except PermissionError:
            pytest.skip("/dev/shm is mounted noexec here")
        handed = started(["sh", shm])
        quiet = started(["sh", str(ok)])
        reader = started(["cat", shm])
    finally:
        os.unlink(shm)
    for pid in (direct, handed):
        a = agent.wait_for("Execution from /dev/shm", **{"proc.pid": pid})
        assert shm in a["output_fields"]["proc.cmdline"]
    agent.assert_quiet("Execution from /dev/shm", **{"proc.pid": quiet})
    agent.assert_quiet("Execution from /dev/shm", **{"proc.pid": reader})


def test_fileless_exec_via_memfd(agent):
    code = ("fd = os.memfd_create(sys.argv[1], 0)\n"
            "os.write(fd, open('/bin/true', 'rb').read())\n"
            "quiet = os.memfd_create('unused', 0)\n"     # a memfd never executed
            "pid = os.fork()\n"
            "if pid == 0:\n"
            "    os.execve(f'/proc/self/fd/{fd}', [sys.argv[1]], {})\n"
            "os.waitpid(pid, 0)\nprint(pid)\n")
    child, = py_child(code, mark())
    a = agent.wait_for("Fileless execution via memfd", **{"proc.pid": child})
    assert a["priority"] == "Critical"
    assert "mitre_defense_evasion" in a["tags"]
    # benign: an ordinary exec from disk
    pid = started(["/bin/true"])
    agent.assert_quiet("Fileless execution via memfd", **{"proc.pid": pid})


@pytest.mark.skipif(BUSYBOX is None, reason="busybox (for its nc -e) is not installed")
def test_netcat_remote_code_execution(agent, tmp_path):
    nc = tmp_path / "nc"
    os.symlink(BUSYBOX, nc)
    srv, port = tcp_listener()
    srv.settimeout(10)
    try:
        # busybox's nc takes -e PROG last
        p = subprocess.Popen([str(nc), "127.0.0.1", str(port), "-e", "/bin/true"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        conn, _ = srv.accept()
        conn.close()
        p.wait(10)
    finally:
        srv.close()
    a = agent.wait_for("Netcat remote code execution", **{"proc.pid": p.pid})
    assert a["priority"] == "Critical"
    assert a["output_fields"]["proc.cmdline"] == f"nc 127.0.0.1 {port} -e /bin/true"
    # benign: netcat without a program (a refused connection here)
    quiet = started([str(nc), "-w", "1", "127.0.0.1", str(closed_port())])
    agent.assert_quiet(**{"proc.pid": quiet})


def test_reverse_shell_stdio_to_socket(agent):
    srv, port = tcp_listener()
    srv.settimeout(10)
    m = mark()
    try:
        p = subprocess.Popen([sys.executable, "-c",
                              "import os, socket, sys\n"
                              "s = socket.create_connection(('127.0.0.1', int(sys.argv[1])))\n"
                              "for n in (0, 1, 2):\n    os.dup2(s.fileno(), n)\n"
                              "os.execv('/bin/sh', ['sh', '-c', 'echo ' + sys.argv[2]])\n",
                              str(port), m], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        conn, _ = srv.accept()
        conn.settimeout(10)
        got = b""
        while m.encode() not in got:
            chunk = conn.recv(1024)
            if not chunk:
                break
            got += chunk
        conn.close()
        p.wait(10)
    finally:
        srv.close()
    assert m.encode() in got          # the shell really talked over the socket
    a = agent.wait_for("Redirect stdio to network socket", **{"proc.pid": p.pid})
    assert a["priority"] == "Critical"
    assert a["output_fields"]["fd.name"].endswith(f"->127.0.0.1:{port}")
    assert a["output_fields"]["evt.rawres"] in (0, 1, 2)
    # benign: a pipe onto stdout
    quiet, = py_child("r, w = os.pipe()\nsaved = os.dup(1)\nos.dup2(w, 1)\nos.dup2(saved, 1)\n"
                      "print(os.getpid())\n")
    agent.assert_quiet("Redirect stdio to network socket", **{"proc.pid": quiet})


def test_ptrace_attach(agent):
    target = subprocess.Popen(["/bin/sleep", "30"])
    try:
        pid, = py_child("t = int(sys.argv[1])\n"
                        "libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]\n"
                        "assert libc.ptrace(16, t, None, None) == 0, ctypes.get_errno()\n"
                        "os.waitpid(t, 0)\n"
                        "libc.ptrace(17, t, None, None)\n"
                        "print(os.getpid())\n", target.pid)
    finally:
        target.kill()
        target.wait()
    a = agent.wait_for("PTRACE attached to process", **{"proc.pid": pid})
    assert a["priority"] == "Warning"
    of = a["output_fields"]
    assert of["evt.arg.request"] == "PTRACE_ATTACH"
    assert str(of["evt.arg.pid"]) == str(target.pid)
    # benign: PTRACE_TRACEME (a process asking to be traced by its parent)
    quiet, = py_child("libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]\n"
                      "libc.ptrace(0, 0, None, None)\nprint(os.getpid())\n")
    agent.assert_quiet("PTRACE attached to process", **{"proc.pid": quiet})


def test_bulk_data_removal(agent, tmp_path):
    victim = tmp_path / "secret.txt"
    victim.write_bytes(os.urandom(4096))
    pid = started(["shred", "-u", str(victim)])
    a = agent.wait_for("Bulk data removal", **{"proc.pid": pid})
    assert a["priority"] == "Warning"
    assert a["output_fields"]["proc.cmdline"] == f"shred -u {victim}"
    assert not victim.exists()
    # rm with --no-preserve-root (on a path that does not exist: nothing is removed)
    gone = tmp_path / mark()
    pid = started(["rm", "-rf", "--no-preserve-root", str(gone)])
    agent.wait_for("Bulk data removal", **{"proc.pid": pid})
    # benign: rm -rf of an ordinary directory tree
    tree = tmp_path / "tree" / "a" / "b"
    tree.mkdir(parents=True)
    quiet = started(["rm", "-rf", str(tmp_path / "tree")])
    agent.assert_quiet("Bulk data removal", **{"proc.pid": quiet})


def test_search_private_keys(agent, tmp_path):
    (tmp_path / "notes.txt").write_text("hello\n")
    pid = started(["grep", "-r", "id_rsa", str(tmp_path)])
    a = agent.wait_for("Search for private keys or passwords", **{"proc.pid": pid})
    assert a["priority"] == "Warning"
    assert a["output_fields"]["proc.cmdline"] == f"grep -r id_rsa {tmp_path}"
    pid = started(["find", str(tmp_path), "-name", "*.pem"])
    agent.wait_for("Search for private keys or passwords", **{"proc.pid": pid})
    quiet = started(["grep", "-r", "hello", str(tmp_path)])
    agent.assert_quiet("Search for private keys or passwords", **{"proc.pid": quiet})


# --------------------------------------------------------------- network

# TEST-NET-2 (RFC 5737): never routed on the internet.  A non-blocking connect
# there is a real outbound attempt (EINPROGRESS, or ENETUNREACH without a route)
# that reaches nobody.
TEST_NET = "198.51.100.7"


def nb_connect(host, port) -> int:
    pid, = py_child("s = socket.socket()\ns.setblocking(False)\n"
                    "s.connect_ex((sys.argv[1], int(sys.argv[2])))\ns.close()\n"
                    "print(os.getpid())\n", host, port)
    return pid


def test_outbound_connection_disallowed_port(agent):
    pid = nb_connect(TEST_NET, 80)
    a = agent.wait_for("Outbound connection to disallowed port", **{"proc.pid": pid})
    assert a["priority"] == "Notice"
    assert a["output_fields"]["fd.sport"] == 80
    assert a["output_fields"]["fd.name"].endswith(f"->{TEST_NET}:80")
    # benign: an allowed port, and port 80 on loopback (not outbound)
    q1 = nb_connect(TEST_NET, 8080)
    q2 = nb_connect("127.0.0.1", 80)
    agent.assert_quiet(**{"proc.pid": lambda v: v in (q1, q2)})


def test_crypto_miner_port(agent):
    pid = nb_connect(TEST_NET, 3333)
    a = agent.wait_for("Detect crypto miners using the Stratum protocol", **{"proc.pid": pid})
    assert a["priority"] == "Critical"
    assert a["output_fields"]["fd.name"].endswith(f"->{TEST_NET}:3333")


def dns_packet(name: str) -> bytes:
    q = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return struct.pack(">HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + q + struct.pack(">HH", 1, 1)


def test_crypto_miner_dns(agent):
    # a local responder on 53 when the port is free (the query is sent either way)
    resp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        resp.bind(("127.0.0.1", 53))
    except OSError:
        resp.close()
        resp = None
    code = ("u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            "u.sendto(bytes.fromhex(sys.argv[1]), ('127.0.0.1', 53))\nprint(os.getpid())\n")
    try:
        pid, = py_child(code, dns_packet("pool.minexmr.com").hex())
        quiet, = py_child(code, dns_packet("2.debian.pool.ntp.org").hex())
        if resp is not None:
            resp.settimeout(5)
            assert b"minexmr" in resp.recv(512)
    finally:
        if resp is not None:
            resp.close()
    a = agent.wait_for("Detect crypto miners using the Stratum protocol", **{"proc.pid": pid})
    assert a["output_fields"]["dns.query"] == "pool.minexmr.com"
    assert a["output_fields"]["evt.type"] in ("sendto", "sendmsg", "sendmmsg")
    agent.assert_quiet(**{"proc.pid": quiet})


# --------------------------------------------------------------- kernel modules (replay)

def test_kernel_module_load_replay():
    """No module support on this kernel: init_module/finit_module cannot be made
    to happen, so a hand-made capture stands in for the live events."""
    r = run([VIGIL, "replay", str(CAPTURES / "kernel_module_load.jsonl"), "--output", "json"],
            text=True)
    assert r.returncode == 0, r.stderr
    alerts = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
    assert [a["rule"] for a in alerts] == ["Linux kernel module loaded"] * 2
    assert all(a["priority"] == "Error" for a in alerts)
    cont, host = (a["output_fields"] for a in alerts)
    assert cont["evt.type"] == "finit_module"
    assert cont["evt.arg.name"] == "/tmp/vigil-test-rootkit.ko"
    assert (cont["container.id"], cont["k8s.pod.name"], cont["k8s.ns.name"]) == \
        ("5e1f0c0ffee0", "web-1", "shop")
    assert cont["container.image"] == "registry.example/tools:1.0"
    assert host["evt.type"] == "init_module" and host["container.id"] == "host"
    # modprobe started by a kworker (the kernel asking for a module) is not reported
    assert not any("modprobe" in a["output_fields"]["proc.cmdline"] for a in alerts)


# --------------------------------------------------------------- containers

def _podman_skip():
    why = tools_missing()
    if why:
        return why
    if not os.path.exists("/usr/bin/python3"):
        return "/usr/bin/python3 (bind-mounted into the container) is missing"
    return None


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory):
    why = _podman_skip()
    if why:
        pytest.skip(why)
    # host /usr is bind-mounted read-only for a python inside (UDP DNS with sendto)
    return make_rootfs(tmp_path_factory.mktemp("rootfs"),
                       ("sh", "cat", "ls", "nc", "wget", "chmod", "cp", "mkdir", "sleep", "true",
                        "apt", "apk"),
                       dirs=("usr", "run"), links={"lib": "usr/lib", "lib64": "usr/lib64"})


@pytest.fixture(scope="module")
def container_run(agent, rootfs):
    """One container doing every container behaviour in turn; returns its name and
    the markers its commands carry."""
    name = "vigil-rules-" + uuid.uuid4().hex[:8]
    m = mark()
    dns = ("import socket, sys; u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
           f"u.sendto(bytes.fromhex('{dns_packet('kubernetes.default.svc.cluster.local').hex()}'), "
           "('127.0.0.1', 53))")
    script = "; ".join([
        "cat /etc/hostname >/dev/null",                # image binary: no drop alert
        f"ls /tmp/{m}-image >/dev/null 2>&1",
        "sleep 1",                                      # exe ctime has 1 s resolution
        f"mkdir /tmp/{m}", f"cp /bin/busybox /tmp/{m}/ls", f"/tmp/{m}/ls /tmp/{m}-dropped >/dev/null 2>&1",
        f"apt --version {m} >/dev/null 2>&1",
        "nc 10.96.0.1 443 2>/dev/null",
        "nc 169.254.169.254 80 2>/dev/null",
        "nc 10.96.0.1 8080 2>/dev/null",              # look-alikes: API address, other port;
        "nc 169.254.10.10 8080 2>/dev/null",          # another link-local address
        f"/usr/bin/python3 -c \"{dns}\"",
        "true",
    ])
    cmd = [PODMAN, "run", "--rm", "--name", name, "--network", "none",
           "--label", "io.kubernetes.pod.name=web-1", "--label", "io.kubernetes.pod.namespace=vigil-test",
           "-v", "/usr:/usr:ro", "--rootfs", str(rootfs), "/bin/sh", "-c", script]
    r = run(cmd, timeout=120, text=True)
    assert r.returncode == 0, r.stderr
    return {"name": name, "m": m, "script": script}


def _container_fields(of, name):
    assert of["container.name"] == name
    assert len(of["container.id"]) == 12 and of["container.id"] != "host"
    assert of["k8s.pod.name"] == "web-1" and of["k8s.ns.name"] == "vigil-test"


def test_shell_in_container(agent, container_run):
    name = container_run["name"]
    a = agent.wait_for("Shell spawned in a container", **{"container.name": name})
    assert a["priority"] == "Notice"
    assert set(a["tags"]) >= {"container", "shell", "mitre_execution", "T1059"}
    of = a["output_fields"]
    _container_fields(of, name)
    assert of["proc.name"] == "sh" and container_run["m"] in of["proc.cmdline"]
    assert any(s["output_fields"].get("container.name") == name
               for s in stored_alerts(agent, "Shell spawned in a container"))
    # benign: a shell on the host
    pid = started(["sh", "-c", "true"])
    agent.assert_quiet("Shell spawned in a container", **{"proc.pid": pid})


def test_drop_and_execute_in_container(agent, container_run):
    name, m = container_run["name"], container_run["m"]
    a = agent.wait_for("Drop and execute new binary in container", **{"container.name": name})
    assert a["priority"] == "Critical"
    of = a["output_fields"]
    _container_fields(of, name)
    assert of["proc.exepath"] == f"/tmp/{m}/ls"
    assert of["proc.cmdline"] == f"ls /tmp/{m}-dropped"
    # benign: the image's own binaries (cat, ls) ran too
    agent.wait_for("Package management process launched in container", **{"container.name": name})
    bad = agent.find("Drop and execute new binary in container", **{"container.name": name})
    assert len(bad) == 1, [b["output"] for b in bad]


def test_package_manager_in_container(agent, container_run):
    name, m = container_run["name"], container_run["m"]
    a = agent.wait_for("Package management process launched in container", **{"container.name": name})
    assert a["priority"] == "Error"
    _container_fields(a["output_fields"], name)
    assert a["output_fields"]["proc.cmdline"] == f"apt --version {m}"
    # benign: a package manager on the host
    pid = started(["dpkg", "--version"]) if shutil.which("dpkg") else None
    if pid:
        agent.assert_quiet(**{"proc.pid": pid})


def test_k8s_api_contact_from_container(agent, container_run):
    name = container_run["name"]
    a = agent.wait_for("Contact K8S API server from container", **{"container.name": name,
                                                                   "evt.type": "connect"})
    assert a["priority"] == "Notice"
    _container_fields(a["output_fields"], name)
    assert a["output_fields"]["fd.name"].endswith("->10.96.0.1:443")
    a = agent.wait_for("Contact K8S API server from container",
                       **{"container.name": name, "dns.query": "kubernetes.default.svc.cluster.local"})
    assert a["output_fields"]["proc.cmdline"].startswith("python3 -c")
    # benign: the same lookup from the host
    pid, = py_child("u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                    "u.sendto(bytes.fromhex(sys.argv[1]), ('127.0.0.1', 53))\nprint(os.getpid())\n",
                    dns_packet("kubernetes.default.svc.cluster.local").hex())
    agent.assert_quiet(**{"proc.pid": pid})


def test_cloud_metadata_contact_from_container(agent, container_run):
    name = container_run["name"]
    a = agent.wait_for("Contact cloud metadata service from container", **{"container.name": name})
    assert a["priority"] == "Warning"
    _container_fields(a["output_fields"], name)
    assert a["output_fields"]["fd.name"].endswith("->169.254.169.254:80")
    assert a["output_fields"]["proc.cmdline"] == "nc 169.254.169.254 80"
    # benign look-alikes in the same container: no alert of any rule (the DNS
    # query that ran after them has been judged)
    agent.wait_for("Contact K8S API server from container",
                   **{"container.name": name, "dns.query": "kubernetes.default.svc.cluster.local"})
    for cmd in ("nc 10.96.0.1 8080", "nc 169.254.10.10 8080"):
        assert not agent.find(**{"container.name": name, "proc.cmdline": cmd}), cmd
