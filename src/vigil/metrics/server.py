"""The HTTP endpoint: ``/metrics`` (Prometheus text format, from a
``prometheus_client`` registry whose collectors read counters and kernel maps
when scraped), ``/healthz`` (the process answers) and ``/readyz`` (200 once
``ready()`` says so: sensors attached and rules loaded).

A port that cannot be had is a warning: the agent keeps protecting without
its metrics (:func:`start_server` returns None).
"""
from __future__ import annotations

import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Optional

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

log = logging.getLogger("vigil.metrics")

DEFAULT_ADDRESS = "127.0.0.1:9476"


def parse_address(addr: str) -> tuple:
    """``host:port``, ``[v6]:port`` or ``:port`` (every address) -> (host, port).
    Raises ValueError with what is wrong."""
    if not isinstance(addr, str) or ":" not in addr:
        raise ValueError(f"expected HOST:PORT (e.g. {DEFAULT_ADDRESS}), got {addr!r}")
    host, _, port = addr.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"an IPv6 address goes in brackets ([::1]:9476), got {addr!r}")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected a port 1..65535 after the colon, got {addr!r}")
    return host, int(port)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class MetricsServer:
    def __init__(self, registry, ready: Callable[[], bool], address: str = DEFAULT_ADDRESS):
        self.registry = registry
        # more paths: path -> fn() -> (body bytes, content type), e.g. /l7/processes
        self.routes: dict = {}
        self.ready = ready
        self.host, self.port = parse_address(address)
        self.httpd: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None
        self.scrapes = 0

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def start(self) -> "MetricsServer":
        """Bind and serve from a thread; raises OSError when the port cannot be had."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        server = self
        _Server.address_family = family

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):            # noqa: N802 (http.server's name)
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    server.scrapes += 1
                    try:
                        body, code, ctype = generate_latest(server.registry), 200, \
                            CONTENT_TYPE_LATEST
                    except Exception as e:       # a collector failed: say so, keep serving
                        log.warning("metrics scrape failed: %s", e)
                        body, code, ctype = f"scrape failed: {e}\n".encode(), 500, "text/plain"
                elif path == "/healthz":
                    body, code, ctype = b"ok\n", 200, "text/plain"
                elif path == "/readyz":
                    ok = bool(server.ready())
                    body = b"ready\n" if ok else b"not ready: sensors or rules not loaded yet\n"
                    code, ctype = (200 if ok else 503), "text/plain"
                elif path in server.routes:
                    try:
                        (body, ctype), code = server.routes[path](), 200
                    except Exception as e:
                        log.warning("%s failed: %s", path, e)
                        body, code, ctype = f"failed: {e}\n".encode(), 500, "text/plain"
                else:
                    known = ", ".join(["/metrics", "/healthz", "/readyz"] + sorted(server.routes))
                    body, code, ctype = f"not found: {known}\n".encode(), 404, "text/plain"
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, fmt, *args):
                log.debug("%s %s", self.address_string(), fmt % args)

        self.httpd = _Server((self.host, self.port), Handler)
        self.port = self.httpd.server_address[1]      # port 0: the one the kernel chose
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="vigil-metrics",
                                        kwargs={"poll_interval": 0.25}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None


def start_server(registry, ready, address: str) -> Optional[MetricsServer]:
    """A started server, or None (with one warning) when the address cannot be bound."""
    srv = MetricsServer(registry, ready, address)
    try:
        return srv.start()
    except OSError as e:
        log.warning("metrics endpoint disabled: cannot listen on %s: %s (the agent keeps "
                    "running without /metrics; set metrics.address or --metrics)",
                    address, e.strerror or e)
        return None


__all__ = ["MetricsServer", "parse_address", "start_server", "DEFAULT_ADDRESS"]
