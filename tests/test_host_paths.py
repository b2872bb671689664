"""VIGIL_HOST_ROOT: the host's /proc and the runtimes' sockets and state are read
below it (as the DaemonSet mounts them at /host), and nowhere else."""
from __future__ import annotations

import json
import os
import subprocess

import pytest

from vigil.host_paths import host_path, proc_path
from vigil.state.containers.metadata_bundle import BundleSource
from vigil.state.containers.metadata_docker import api_sockets
from vigil.state.containers.metadata_storage import StorageSource
from vigil.state.proctable import ProcessTable, read_proc


@pytest.fixture
def host_root(tmp_path, monkeypatch):
    """A host root whose proc is a private procfs mount (as /host/proc in the pod)."""
    if os.geteuid() != 0:
        pytest.skip("needs root (mount)")
    (tmp_path / "proc").mkdir()
    subprocess.run(["mount", "-t", "proc", "proc", str(tmp_path / "proc")], check=True)
    monkeypatch.setenv("VIGIL_HOST_ROOT", str(tmp_path) + "/")
    yield tmp_path
    subprocess.run(["umount", "-l", str(tmp_path / "proc")], check=False)


def test_paths_without_a_host_root(monkeypatch):
    monkeypatch.delenv("VIGIL_HOST_ROOT", raising=False)
    assert host_path("/run/containerd") == "/run/containerd"
    assert proc_path(1, "cgroup") == "/proc/1/cgroup"


def test_proc_and_runtime_state_below_the_host_root(host_root):
    assert proc_path(os.getpid(), "stat") == f"{host_root}/proc/{os.getpid()}/stat"
    me = read_proc(os.getpid())
    assert me is not None and me.pid == os.getpid()
    t = ProcessTable()
    assert t.seed_from_proc() > 1 and os.getpid() in t
    # podman's containers.json and a bundle, as the host has them, found below the root
    cid = "ab" * 32
    store = host_root / "var/lib/containers/storage/overlay-containers"
    (store / cid / "userdata").mkdir(parents=True)
    (store / "containers.json").write_text(json.dumps([{"id": cid, "names": ["web"]}]))
    (store / cid / "userdata" / "config.json").write_text(json.dumps(
        {"annotations": {"io.container.manager": "libpod"}}))
    assert StorageSource().files[0] == str(store / "containers.json")
    assert BundleSource().find(cid) == ("podman", str(store / cid / "userdata" / "config.json"))
    assert f"{host_root}/var/run/docker.sock" in api_sockets({})
