"""KernelFilters: what the kernel is asked to filter lives with the pipeline
and is written to every SensorManager it starts (again after a restart)."""
from __future__ import annotations

import os
import struct

import pytest

from vigil.events import Kind
from vigil.kernel.filters import KernelFilters
from vigil.pipeline import Pipeline

CGID = 0xC0FFEE


@pytest.fixture
def pipe(bpf_objects):
    f = KernelFilters({Kind.EXEC}, open_prefixes=["/nonexistent-vigil/"], scope="host",
                      ignore_comms=["vigil-nope"], ringbuf_size=1 << 20)
    p = Pipeline(f, seed=False)
    p.start()
    yield p
    p.stop()


def _maps(p) -> dict:
    m = p.sensors.maps
    return {"cgroups": {struct.unpack("<Q", k)[0]: v for k, v in m["cgroup_scope"].items()},
            "prefixes": len(list(m["open_prefixes"].keys())),
            "comms": [k.rstrip(b"\0") for k in m["ignore_comms"].keys()],
            "pids": {struct.unpack("<I", k)[0] for k in m["ignore_pids"].keys()}}


def test_filters_survive_a_sensor_restart(pipe):
    f = pipe.filters
    assert pipe.kernel_kinds() >= {Kind.EXEC, Kind.FORK, Kind.EXIT}
    f.set_cgroup_scope(CGID, False)
    f.set_cgroup_scope(CGID + 1, False)
    f.set_cgroup_scope(CGID + 1, None)
    before = _maps(pipe)
    assert before["cgroups"] == {CGID: b"\x00"}
    assert before["prefixes"] == 1 and before["comms"] == [b"vigil-nope"]
    assert os.getpid() in before["pids"]
    # a kind without a program loaded: the sensors must restart, then hold the same filters
    assert f.set_kinds({Kind.EXEC, Kind.OPEN}) is True
    old = pipe.sensors
    pipe.restart_sensors()
    assert pipe.sensors is not old and f.sensors is pipe.sensors
    assert Kind.OPEN in f.active_kinds()
    assert _maps(pipe) == before
    # a kind already loaded is switched at once, no restart
    assert f.set_kinds({Kind.OPEN}) is False
    assert pipe.sensors.kinds == {Kind.OPEN} | pipe.needed_kinds()


def test_open_prefix_change_reaches_running_sensors(pipe):
    f = pipe.filters
    f.set_kinds({Kind.EXEC, Kind.OPEN})
    pipe.restart_sensors()
    f.set_open_prefixes(["/a/", "/b/"])
    assert _maps(pipe)["prefixes"] == 2
    f.set_open_prefixes(None)
    assert _maps(pipe)["prefixes"] == 0
    pipe.stop()
    assert f.sensors is None
    f.set_cgroup_scope(CGID, False)       # stopped: remembered for the next start
    assert f.cgroup_scope == {CGID: False}
