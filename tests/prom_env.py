"""A real Prometheus server (Debian's `prometheus`) for the metrics tests, and
a `vigil run` serving metrics for it to scrape, both on loopback.

``Prometheus(targets)`` writes a config (scrape_interval 1s) and a storage
directory in a temp dir, starts the server on a free port and answers PromQL
through its HTTP query API (``query``, ``value``, ``wait_for``).
``VigilAgent(args)`` runs `vigil run --metrics 127.0.0.1:PORT ...` and keeps its
stderr; ``ready_codes`` are the /readyz answers seen while it started.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import requests

from conftest import VIGIL

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Prometheus:
    def __init__(self, targets, interval: str = "1s", rules_files=()):
        self.dir = Path(tempfile.mkdtemp(prefix="vigil-prom-"))
        self.port = free_port()
        cfg = self.dir / "prometheus.yml"
        rules = "".join(f"  - {f}\n" for f in rules_files)
        cfg.write_text(
            f"global:\n  scrape_interval: {interval}\n  evaluation_interval: {interval}\n"
            + (f"rule_files:\n{rules}" if rules else "")
            + "scrape_configs:\n  - job_name: vigil\n    static_configs:\n"
            f"      - targets: [{', '.join(repr(t) for t in targets)}]\n")
        self.log = open(self.dir / "prometheus.log", "w")
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={cfg}", f"--storage.tsdb.path={self.dir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(self.url + "/-/ready", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"prometheus did not start: {(self.dir / 'prometheus.log').read_text()}")

    def query(self, expr: str) -> list:
        """The instant vector (or scalar, as a one-element list) of a PromQL query."""
        r = requests.get(self.url + "/api/v1/query", params={"query": expr}, timeout=10)
        body = r.json()
        if body.get("status") != "success":
            raise AssertionError(f"query {expr!r} failed: {body}")
        data = body["data"]
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return data["result"]

    def value(self, expr: str):
        """The single number a query gives (sum it in PromQL); None for no data."""
        res = self.query(expr)
        if not res:
            return None
        assert len(res) == 1, f"{expr!r} gave {len(res)} series: {res}"
        return float(res[0]["value"][1])

    def wait_for(self, expr: str, check, timeout: float = 20.0):
        """Poll until check(value) holds; returns the last value."""
        deadline = time.monotonic() + timeout
        v = None
        while time.monotonic() < deadline:
            v = self.value(expr)
            if v is not None and check(v):
                return v
            time.sleep(0.5)
        return v

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class VigilAgent:
    """`vigil run` with metrics on a free loopback port (``args`` added)."""

    def __init__(self, args=(), port: int = None, wait_ready: bool = True, env=None):
        self.port = port or free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.err = tempfile.TemporaryFile(mode="w+")
        self.out = tempfile.TemporaryFile(mode="w+")
        e = dict(os.environ, **(env or {}))
        e.pop("VIGIL_METRICS_ADDRESS", None)
        self.proc = subprocess.Popen([VIGIL, "run", "--no-store", "--metrics", self.address,
                                      *args], stdout=self.out, stderr=self.err,
                                     text=True, env=e)
        self.ready_codes: list = []
        if wait_ready:
            self.wait_ready()

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vigil exited {self.proc.returncode}: {self.stderr()}")
            try:
                code = requests.get(self.url + "/readyz", timeout=1).status_code
            except requests.RequestException:
                code = None
            if code is not None and (not self.ready_codes or self.ready_codes[-1] != code):
                self.ready_codes.append(code)
            if code == 200:
                return
            time.sleep(0.02)
        raise RuntimeError(f"vigil not ready in {timeout}s: {self.stderr()}")

    def metrics_text(self) -> str:
        return requests.get(self.url + "/metrics", timeout=10).text

    def stdout(self) -> str:
        self.out.seek(0)
        return self.out.read()

    def stderr(self) -> str:
        self.err.seek(0)
        return self.err.read()

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(2)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.stderr()
