"""Real servers and clients for the L7 tests and benchmarks, on loopback: an
HTTP/1.1 keep-alive server with known statuses and a slow endpoint (Python,
plain or over TLS), its keep-alive client, redis-server, a private PostgreSQL cluster (initdb as
the postgres user under a temp dir), and L7Pipeline: the l7 sensor and the
pairing tracker in this process (its own pid is not watched, so clients and
servers are child processes)."""
from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

HTTP_SERVER = textwrap.dedent('''
    import sys, time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        def log_message(self, *a):
            pass
        def _answer(self):
            n = int(self.headers.get("Content-Length") or 0)
            if n:
                self.rfile.read(n)
            parts = self.path.split("/")
            if parts[1] == "drop":          # close without answering
                self.close_connection = True
                return
            code = 200
            if parts[1] == "status":
                code = int(parts[2])
            elif parts[1] == "slow":
                time.sleep(int(parts[2]) / 1000)
            body = b"ok\\n"
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        do_GET = do_POST = do_PUT = do_DELETE = _answer

    s = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H)
    if len(sys.argv) > 2:           # certificate and key files: over TLS
        import ssl
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(sys.argv[2], sys.argv[3])
        s.socket = ctx.wrap_socket(s.socket, server_side=True)
    print(s.server_address[1], flush=True)     # listening
    s.serve_forever()
''')

HTTP_CLIENT = textwrap.dedent('''
    import http.client, json, sys
    port, src, plan = int(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(src, 0))
    for method, path in plan:
        if path == "/drop":
            try:
                c.request(method, path)
                c.getresponse()
            except (http.client.HTTPException, OSError):
                c.close()
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=10,
                                               source_address=(src, 0))
            continue
        c.request(method, path, body=b"x" if method in ("POST", "PUT") else None)
        r = c.getresponse()
        r.read()
    c.close()
''')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, host: str = "127.0.0.1", timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {host}:{port}")


class HttpServer:
    """HTTP_SERVER on a free port: plain, or over TLS with cert = (certificate
    file, key file)."""

    def __init__(self, cert=None):
        args = [sys.executable, "-c", HTTP_SERVER, "0"] + (list(cert) if cert else [])
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        self.port = int(self.proc.stdout.readline())
        self.pid = self.proc.pid

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def http_client(port: int, plan: list, src: str = "127.0.0.1") -> int:
    """Run the keep-alive client over plan [(method, path)]; its pid."""
    p = http_client_proc(port, plan, src)
    assert p.wait(60) == 0
    return p.pid


def http_client_proc(port: int, plan: list, src: str = "127.0.0.1"):
    import json
    return subprocess.Popen([sys.executable, "-c", HTTP_CLIENT, str(port), src, json.dumps(plan)])


class RedisServer:
    def __init__(self):
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="vigil-redis-")
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir, "--protected-mode", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)
        self.pid = self.proc.pid

    def stop(self):
        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def pg_bin(name: str) -> str:
    for d in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (d / name).exists():
            return str(d / name)
    return ""


class Postgres:
    """A private cluster (trust auth, loopback, a free port) run as postgres."""

    def __init__(self):
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="vigil-pg-"))
        pw = pwd.getpwnam("postgres")
        os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        self.data = self.dir / "data"

        def as_pg():
            os.setgid(pw.pw_gid)
            os.setuid(pw.pw_uid)

        subprocess.run([pg_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
                        "--no-sync"], check=True, preexec_fn=as_pg, cwd=self.dir,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.proc = subprocess.Popen(
            [pg_bin("postgres"), "-D", str(self.data), "-p", str(self.port), "-k", str(self.dir),
             "-c", "listen_addresses=127.0.0.1", "-c", "ssl=off", "-c", "fsync=off"],
            preexec_fn=as_pg, cwd=self.dir, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        wait_port(self.port, timeout=60)
        self.pid = self.proc.pid

    def psql(self, sql: str, check: bool = False):
        env = dict(os.environ, PGSSLMODE="disable", PGGSSENCMODE="disable",
                   PGCONNECT_TIMEOUT="10")
        return subprocess.run(["psql", "-X", "-q", "-h", "127.0.0.1", "-p", str(self.port), "-U",
                               "postgres", "-d", "postgres", "-f", "-"], input=sql, text=True,
                              env=env, capture_output=True, check=check, timeout=60)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class L7Pipeline:
    """The l7 sensor (every protocol unless told) and the tracker in this
    process; the completed requests are collected in ``requests``.  seed: the
    process table from /proc; tls_libraries: KernelFilters.l7_tls_libraries
    (0: no TLS probes) unless None; filter_args: KernelFilters' own."""

    def __init__(self, protocols=("http", "redis", "postgres"), max_connections=16384,
                 seed=False, tls_libraries=None, **filter_args):
        from vigil.events import Kind
        from vigil.kernel.filters import KernelFilters
        from vigil.l7.tracker import L7Tracker, protocol_bits
        from vigil.pipeline import Pipeline
        self.tracker = L7Tracker(max_connections)
        self.requests: list = []
        self.tracker.sinks.append(self.requests.append)
        f = KernelFilters({Kind.L7}, l7_protocols=protocol_bits(protocols),
                          **{"l7_ringbuf_size": 1 << 23, "l7_connections": 65536, **filter_args})
        if tls_libraries is not None:
            f.l7_tls_libraries = tls_libraries
        self.pipeline = Pipeline(f, seed=seed)
        self.pipeline.ring_handlers["l7_events"] = self.tracker.on_raw
        self.pipeline.start()
        self._lock = threading.Lock()

    def take(self, pred, want: int = 0, timeout: float = 10.0) -> list:
        """Drain the rings; the collected requests pred accepts (removed),
        waiting up to timeout for at least want of them."""
        deadline = time.monotonic() + timeout
        while True:
            self.pipeline.drain(settle=0.05)
            got = [r for r in self.requests if pred(r)]
            if len(got) >= want or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        self.requests[:] = [r for r in self.requests if not pred(r)]
        return got

    def stop(self):
        self.pipeline.stop()
