"""The kernel-facing smoke suite (``make test-kernels``): what a node's kernel decides.

Not collected by plain ``make test`` (``norecursedirs`` in pyproject.toml lists
``kernels``); run it on this host with

    .venv/bin/python -m pytest -q -p no:cacheprovider tests/kernels

or on Debian's kernels in a VM with ``make test-kernels`` (tests/kernels/matrix.py;
docs/KERNELS.md).  The fixtures of tests/conftest.py (``start_pipeline``, ``run`` ...)
are shared.

Every test names the feature it proves with ``@pytest.mark.feature("...")``; the
matrix is made of those features, one row per kernel:

* **works**: every test of the feature passed;
* **degraded**: a test skipped (``pytest.skip(why)``: the kernel lacks what the
  feature needs, said precisely) or called ``matrix.degrade(feature, why)`` (it
  works, but with less: e.g. a program the kernel refused, named with its reason);
* **FAILED**: a test failed (a bug, on this kernel).

``matrix.note(feature, text)`` adds what serves the feature here (``tp/syscalls/...``).
When ``VIGIL_KERNELS_OUT`` names a file, the session writes its results there as
JSON (the VM shares the host's file system: that is how results come back).
"""
from __future__ import annotations

import importlib.util
import json
import os
import time
from pathlib import Path

import pytest

# the plain helpers of tests/conftest.py, for `from conftest import ...` in this directory
# (this file takes the module name conftest here)
_spec = importlib.util.spec_from_file_location("vigil_tests_helpers",
                                               Path(__file__).resolve().parent.parent / "conftest.py")
_helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_helpers)
VIGIL, run, tcp_listener, closed_port = (_helpers.VIGIL, _helpers.run, _helpers.tcp_listener,
                                         _helpers.closed_port)


def pytest_configure(config):
    config.addinivalue_line("markers", "feature(name): the matrix feature a kernel test proves")


class KernelMatrix:
    """Per-feature results of one session on one kernel."""

    def __init__(self):
        self.features = {}       # name -> {"status", "why": [], "notes": [], "tests": {}}
        self.started = time.monotonic()

    def _row(self, feature: str) -> dict:
        return self.features.setdefault(
            feature, {"status": "works", "why": [], "notes": [], "tests": {}})

    def note(self, feature: str, text: str) -> None:
        row = self._row(feature)
        if text not in row["notes"]:
            row["notes"].append(text)

    def degrade(self, feature: str, why: str) -> None:
        row = self._row(feature)
        if row["status"] == "works":
            row["status"] = "degraded"
        if why not in row["why"]:
            row["why"].append(why)

    def outcome(self, feature: str, test: str, outcome: str, text: str) -> None:
        row = self._row(feature)
        row["tests"][test] = outcome
        if outcome == "failed":
            row["status"] = "FAILED"
            row["why"].append(f"{test}: {text}")
        elif outcome == "skipped":
            self.degrade(feature, text)

    def as_dict(self) -> dict:
        u = os.uname()
        return {"uname_r": u.release, "uname_v": u.version,
                "suite_seconds": round(time.monotonic() - self.started, 1),
                "bpf_dir": os.environ.get("VIGIL_BPF_DIR", ""),
                "features": self.features}


_MATRIX = KernelMatrix()


@pytest.fixture(scope="session")
def matrix() -> KernelMatrix:
    return _MATRIX


@pytest.fixture(scope="session")
def everything(start_pipeline):
    """One pipeline with every sensing kind (the enforcement kinds are the Enforcer's), shared
    by the sensor and event modules: loading every object is the slow part under TCG."""
    from vigil.events import Kind
    from vigil.events.kinds import ENFORCE_KINDS
    from vigil.l7.tracker import L7Tracker, protocol_bits
    tracker = L7Tracker(1024)
    requests: list = []
    tracker.sinks.append(requests.append)
    c = start_pipeline(frozenset(k for k in Kind if k not in ENFORCE_KINDS),
                       l7_protocols=protocol_bits(("http", "redis", "postgres")),
                       ring_handlers={"l7_events": tracker.on_raw})
    c.l7_requests = requests            # the completed L7 exchanges (vigil.l7.record.L7Request)
    from vigil.l7.events import HttpEvents
    tracker.sinks.append(HttpEvents(c.pipeline.process))     # and the http kind's events
    yield c
    c.stop()


def _feature(item):
    m = item.get_closest_marker("feature")
    return m.args[0] if m and m.args else None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    feature = _feature(item)
    if feature is None:
        return
    if rep.when == "call" or (rep.when == "setup" and not rep.passed):
        if rep.skipped:
            text = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
            text = text.removeprefix("Skipped: ")
            _MATRIX.outcome(feature, item.name, "skipped", text)
        elif rep.failed:
            msg = str(rep.longrepr.reprcrash.message) if hasattr(rep.longrepr, "reprcrash") \
                else str(rep.longrepr)
            _MATRIX.outcome(feature, item.name, "failed", msg.splitlines()[0][:300] if msg else "")
        else:
            _MATRIX.outcome(feature, item.name, "passed", "")


def _write(exitstatus=None) -> None:
    out = os.environ.get("VIGIL_KERNELS_OUT")
    if not out:
        return
    data = _MATRIX.as_dict()
    data["exitstatus"] = exitstatus          # None: still running (or stopped: a VM timeout)
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
    os.replace(tmp, out)


def pytest_runtest_logfinish(nodeid, location):
    _write()             # after every test: a VM stopped by its timeout still reports


def pytest_sessionfinish(session, exitstatus):
    _write(int(exitstatus))
