"""Shared fixtures for the kernel-facing tests (sensors, trace CLI, lifecycle).

Nothing here runs unless a test asks for it, so tests that do not touch the
kernel are not affected.

* ``bpf_objects`` (session): the BPF objects are built (``make bpf`` once if
  any is missing or older than its source) and we are root.
* ``btfs`` (session): ``{sensor: btf_structs(its object)}``, read with bpftool
  (skips without it): the C side test_structs and test_kinds compare with.
* ``no_leftover_threads``: fails a test that leaves threads running (5 s grace);
  modules opt in with ``pytestmark = pytest.mark.usefixtures("no_leftover_threads")``.
* ``start_pipeline`` (session): a factory ``start_pipeline(kinds, **kw)`` that
  starts a live :class:`vigil.pipeline.Pipeline` and returns a
  :class:`Collector`.  The pipeline ignores our own pid in the kernel (not our
  children, unless ``ignore_children=True``: they are the tests' workloads); everything it
  started is stopped at the end of the session, or earlier by
  ``collector.stop()``.  Module-scoped fixtures build on it so one started
  pipeline serves a whole test module.

Plain helpers, imported as ``from conftest import ...``: ``VIGIL``, ``run``,
``tcp_listener``, ``closed_port`` and ``btf_structs`` (an object's BTF structs and enums).
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

# the agents tests start serve no metrics unless a test asks (by --metrics or
# metrics.address): tests run side by side, and one port is one agent's
os.environ.setdefault("VIGIL_METRICS_ADDRESS", "")

ROOT = Path(__file__).resolve().parent.parent
BPF_SRC = ROOT / "src" / "vigil" / "kernel" / "bpf"
BPF_BUILD = BPF_SRC / "build"
# every kernel/bpf/<sensor>.bpf.c is a sensor (as the Makefile builds them)
SENSOR_NAMES = tuple(sorted(p.name[:-len(".bpf.c")] for p in BPF_SRC.glob("*.bpf.c")))
VIGIL = str(Path(sys.executable).parent / "vigil")


def _objects_stale() -> bool:
    headers = sorted(BPF_SRC.glob("*.h"))
    probes = BPF_BUILD / "probes.o"       # vigil doctor's hook probes
    if not probes.exists() or (BPF_SRC / "probes" / "probes.bpf.c").stat().st_mtime > \
            probes.stat().st_mtime:
        return True
    for s in SENSOR_NAMES:
        obj = BPF_BUILD / f"{s}.bpf.o"
        if not obj.exists():
            return True
        deps = [BPF_SRC / f"{s}.bpf.c"] + headers
        if any(d.stat().st_mtime > obj.stat().st_mtime for d in deps):
            return True
    return False


@pytest.fixture(scope="session")
def bpf_objects() -> Path:
    if os.geteuid() != 0:
        pytest.skip("kernel tests need root")
    if _objects_stale():
        r = subprocess.run(["make", "-C", str(ROOT), "bpf"], capture_output=True, text=True)
        if r.returncode != 0:
            pytest.fail(f"make bpf failed:\n{r.stdout}\n{r.stderr}")
    return BPF_BUILD


def btf_structs(obj_path) -> dict:
    """{struct name: BTF STRUCT entry}, {enum name: {member: value}} and an id
    index, from bpftool's JSON."""
    r = subprocess.run(["bpftool", "btf", "dump", "file", str(obj_path), "-j"],
                       capture_output=True, text=True, check=True)
    types = json.loads(r.stdout)["types"]
    by_id = {t["id"]: t for t in types}
    named = {t["name"]: t for t in types if t.get("kind") == "STRUCT" and t.get("name")}
    enums = {t["name"]: {v["name"]: v["val"] for v in t["values"]}
             for t in types if t.get("kind") in ("ENUM", "ENUM64") and t.get("name")}
    return {"by_id": by_id, "structs": named, "enums": enums}


@pytest.fixture(scope="session")
def btfs(bpf_objects):
    if shutil.which("bpftool") is None:
        pytest.skip("bpftool not installed")
    return {s: btf_structs(bpf_objects / f"{s}.bpf.o") for s in SENSOR_NAMES}


class Collector:
    """A started pipeline plus the events it handed to its handler."""

    def __init__(self, pipeline):
        self.pipeline = pipeline
        self.events = []
        pipeline.add_handler(self.events.append)

    @property
    def sensors(self):
        return self.pipeline.sensors

    def drain(self) -> int:
        return self.pipeline.drain(settle=0)

    def clear(self) -> None:
        self.drain()
        self.events.clear()

    def find(self, pred) -> list:
        return [e for e in self.events if pred(e)]

    def wait_for(self, pred, count: int = 1, timeout: float = 3.0) -> list:
        """Drain until at least `count` collected events match `pred` (or fail)."""
        deadline = time.monotonic() + timeout
        while True:
            self.drain()
            found = self.find(pred)
            if len(found) >= count:
                return found
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"expected {count} matching event(s) within {timeout}s, got {len(found)}")
            time.sleep(0.02)

    def settle(self, quiet: float = 0.15, limit: float = 1.0) -> None:
        """Drain until nothing new arrived for `quiet` seconds (at most `limit`
        seconds: other processes on the node may never be quiet)."""
        last = -1
        deadline = time.monotonic() + limit
        while last != len(self.events) and time.monotonic() < deadline:
            last = len(self.events)
            time.sleep(quiet)
            self.drain()

    def stop(self) -> None:
        self.pipeline.stop()


@pytest.fixture
def no_leftover_threads():
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 5
    while True:
        extra = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        if not extra or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert not extra, f"threads left running: {extra}"


@pytest.fixture(scope="session")
def start_pipeline(bpf_objects):
    from vigil.kernel.filters import KernelFilters
    from vigil.pipeline import Pipeline

    started = []

    def _start(kinds, **kw) -> Collector:
        """kw: KernelFilters settings and Pipeline options alike."""
        kw.setdefault("ringbuf_size", 4 * 1024 * 1024)
        opts = {k: kw.pop(k) for k in ("proctable", "containers", "seed", "ignore_children")
                if k in kw}
        handlers = kw.pop("ring_handlers", {})      # {ring map name: fn} (the L7 tracker's)
        p = Pipeline(KernelFilters(kinds, **kw), **opts)
        p.ring_handlers.update(handlers)
        p.start()
        started.append(p)
        return Collector(p)

    yield _start
    for p in started:
        p.stop()


def tcp_listener():
    """A TCP socket listening on 127.0.0.1 at a free port: (socket, port)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    return srv, srv.getsockname()[1]


def closed_port() -> int:
    """A 127.0.0.1 TCP port nobody listens on (bound once, then closed)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def run(cmd, **kw) -> subprocess.CompletedProcess:
    """Run a command to completion, capturing its output."""
    kw.setdefault("capture_output", True)
    kw.setdefault("timeout", 20)
    return subprocess.run(cmd, **kw)
