"""Helpers for the end-to-end agent tests (tests/test_agent_*.py, tests/test_cli_*.py).

A real ``vigil`` subprocess writes stdout/stderr to files; the tests poll those
files with deadlines instead of sleeping.  HTTP receivers run on 127.0.0.1 in a
thread.  Nothing here needs the kernel by itself.
"""
from __future__ import annotations

import http.server
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Optional

VIGIL = str(Path(sys.executable).parent / "vigil")
RFC3339_NS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$")
# Falco's JSON alert, plus the stable alert id Falcosidekick's payload calls "uuid"
FALCO_KEYS = {"time", "rule", "priority", "source", "hostname", "output", "output_fields", "tags",
              "uuid"}


def wait_until(pred: Callable, timeout: float = 5.0, interval: float = 0.05, what: str = ""):
    """Poll pred() until it returns something truthy; return it or fail."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or pred}")
        time.sleep(interval)


def vigil(*args, timeout: float = 30, **kw) -> subprocess.CompletedProcess:
    """Run a vigil command to completion."""
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    return subprocess.run([VIGIL, *map(str, args)], timeout=timeout, **kw)


def bpf_link_ids(pid: int) -> set:
    """Ids of the BPF links a process holds open (from /proc/PID/fdinfo)."""
    ids = set()
    d = f"/proc/{pid}/fdinfo"
    try:
        names = os.listdir(d)
    except OSError:
        return ids
    for n in names:
        try:
            with open(os.path.join(d, n)) as f:
                text = f.read()
        except OSError:
            continue
        m = re.search(r"^link_id:\s*(\d+)", text, re.M)
        if m:
            ids.add(int(m.group(1)))
    return ids


def system_link_ids() -> set:
    out = subprocess.run(["bpftool", "-j", "link", "list"], capture_output=True, text=True,
                         timeout=10)
    if out.returncode != 0:
        raise AssertionError(f"bpftool link list failed: {out.stderr}")
    return {l["id"] for l in json.loads(out.stdout or "[]")}


class AgentProc:
    """A running ``vigil run`` (or ``vigil capture``) with its output in files."""

    def __init__(self, args: list, workdir: Path, name: str = "agent", ready: str = "vigil: ",
                 env: Optional[dict] = None):
        self.workdir = Path(workdir)
        self.out_path = self.workdir / f"{name}.stdout"
        self.err_path = self.workdir / f"{name}.stderr"
        self._out = open(self.out_path, "wb")
        self._err = open(self.err_path, "wb")
        self.args = [VIGIL, *map(str, args)]
        self.proc = subprocess.Popen(self.args, stdout=self._out, stderr=self._err,
                                     stdin=subprocess.DEVNULL, env=env)
        self.rc: Optional[int] = None
        self.stop_seconds: Optional[float] = None
        try:
            wait_until(lambda: ready in self.stderr() or self.proc.poll() is not None,
                       timeout=30, what=f"{name} to start")
        except AssertionError:
            self.kill()
            raise
        if self.proc.poll() is not None:
            self._close_files()
            raise AssertionError(f"{name} exited with {self.proc.returncode}:\n{self.stderr()}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def json_lines(self) -> list:
        out = []
        for line in self.stdout().splitlines():
            line = line.strip()
            if line:
                out.append(json.loads(line))
        return out

    def alerts(self, rule: Optional[str] = None) -> list:
        return [a for a in self.json_lines() if rule is None or a.get("rule") == rule]

    def wait_alerts(self, rule: str, count: int = 1, timeout: float = 5.0,
                    pred: Optional[Callable] = None) -> list:
        def got():
            found = [a for a in self.alerts(rule) if pred is None or pred(a)]
            return found if len(found) >= count else None
        return wait_until(got, timeout, what=f"{count} alert(s) of {rule!r}; stderr:\n"
                          f"{self.stderr()[-2000:]}")

    def wait_stderr(self, text: str, timeout: float = 5.0, start: int = 0) -> str:
        return wait_until(lambda: text in self.stderr()[start:] and self.stderr(), timeout,
                          what=f"{text!r} on stderr")

    def send(self, sig) -> None:
        self.proc.send_signal(sig)

    def stop(self, sig=signal.SIGTERM, timeout: float = 10.0) -> int:
        """Signal and wait; records the exit code and how long the exit took."""
        if self.proc.poll() is None:
            t0 = time.monotonic()
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError(f"agent did not exit within {timeout}s of {sig!r}")
            self.stop_seconds = time.monotonic() - t0
        self.rc = self.proc.returncode
        self._close_files()
        return self.rc

    def wait(self, timeout: float = 30.0) -> int:
        self.rc = self.proc.wait(timeout)
        self._close_files()
        return self.rc

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._close_files()

    def _close_files(self) -> None:
        for f in (self._out, self._err):
            if not f.closed:
                f.close()


# --- HTTP receivers --------------------------------------------------------------

class Receiver:
    """An HTTP server on 127.0.0.1 that records the JSON bodies POSTed to it.

    ``Receiver(start=False)`` reserves the port (bound, not listening: a
    connection is refused) until ``start()``."""

    def __init__(self, start: bool = True, status: int = 200, host: str = "127.0.0.1"):
        self.bodies: list = []
        self.paths: list = []
        self.headers: list = []
        self.status = status
        self._lock = threading.Lock()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        self.server = None
        self.thread = None
        if start:
            self.start()

    def start(self) -> None:
        rec = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n)
                with rec._lock:
                    rec.paths.append(self.path)
                    rec.headers.append(dict(self.headers))
                    rec.bodies.append(json.loads(body))
                self.send_response(rec.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        srv = http.server.ThreadingHTTPServer(self.sock.getsockname()[:2], Handler,
                                              bind_and_activate=False)
        srv.socket.close()
        srv.socket = self.sock
        srv.server_activate()           # listen() on the reserved port
        self.server = srv
        self.thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def received(self, rule: Optional[str] = None) -> list:
        with self._lock:
            return [b for b in self.bodies if rule is None or b.get("rule") == rule]

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
        else:
            self.sock.close()


def write_rules(path: Path, rules: list) -> Path:
    """Write Falco rules (list of dicts or raw YAML text) to path."""
    import yaml
    path.write_text(rules if isinstance(rules, str) else yaml.safe_dump(rules, sort_keys=False))
    return path


def write_config(path: Path, cfg: dict) -> Path:
    import yaml
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def rule(name: str, condition: str, output: str, priority: str = "WARNING", tags=()) -> dict:
    return {"rule": name, "desc": name, "condition": condition, "output": output,
            "priority": priority, "tags": list(tags)}


def store_alerts(db, *args) -> list:
    """``vigil alerts --store DB --json ARGS`` as parsed alerts (fails on a non-zero exit)."""
    r = vigil("alerts", "--store", db, "--json", *args)
    assert r.returncode == 0, r.stderr
    return [json.loads(l) for l in r.stdout.splitlines() if l.strip()]


def count_of(alert: dict) -> int:
    return int(alert["output_fields"].get("vigil.repeat_count", 1))


ROOT = Path(__file__).resolve().parents[3]


def require_kernel() -> None:
    """Skip unless root; build the BPF objects if needed (make is idempotent)."""
    import pytest
    if os.geteuid() != 0:
        pytest.skip("agent end-to-end tests need root")
    r = subprocess.run(["make", "-s", "-C", str(ROOT), "bpf"], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.fail(f"make bpf failed:\n{r.stdout}\n{r.stderr}")


# --- attacker workloads (tests/test_evasion.py, tests/test_flood.py) ----------------

VTOOL_SRC = Path(__file__).with_name("vtool.c")
# run a command as the unprivileged user nobody (uid/gid 65534, no groups)
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def build_vtool(outdir: Path, name: str = "vtool") -> Path:
    """Compile tests/data/e2e/vtool.c (readers and load generators) into outdir
    with clang (installed for the BPF objects anyway)."""
    import pytest
    exe = Path(outdir) / name
    r = subprocess.run(["clang", "-O2", "-Wall", "-pthread", "-o", str(exe), str(VTOOL_SRC)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.fail(f"clang vtool.c failed:\n{r.stderr}")
    return exe


def agent_stats(stderr: str) -> Optional[dict]:
    """The statistics `vigil run -v` prints on exit (its last `vigil: {...}` line)."""
    for line in reversed(stderr.splitlines()):
        if line.startswith("vigil: {"):
            try:
                return json.loads(line[len("vigil: "):])
            except ValueError:
                return None
    return None
