"""Which container runtimes this node has, by their API sockets and state
directories (as the host sees them, through :func:`vigil.host_paths.host_path`):
where the container metadata sources will find something."""
from __future__ import annotations

import os
import shutil
import stat

from vigil.host_paths import host_path
from vigil.state.containers.metadata_bundle import CONTAINERD_TASK_DIRS
from vigil.state.containers.metadata_docker import DOCKER_SOCKETS
from vigil.state.containers.metadata_storage import STORAGE_FILES

SOCKETS = {
    "containerd": ("/run/containerd/containerd.sock", "/run/k3s/containerd/containerd.sock"),
    "cri-o": ("/run/crio/crio.sock", "/var/run/crio/crio.sock"),
    "docker": (DOCKER_SOCKETS[0],),
    "podman": (DOCKER_SOCKETS[1],),
}
STATE = {
    "containerd": CONTAINERD_TASK_DIRS,
    "cri-o": ("/run/containers/storage",),
    "podman": tuple(os.path.dirname(os.path.dirname(f)) for f in STORAGE_FILES[:1]),
}


def _is_socket(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False


def runtimes_found() -> list:
    """[{runtime, sockets: [...], state: [...], cli}] for each runtime with anything here
    (paths as the host names them)."""
    out = []
    for rt in ("containerd", "cri-o", "docker", "podman"):
        socks = [p for p in SOCKETS.get(rt, ()) if _is_socket(host_path(p))]
        dirs = [p for p in STATE.get(rt, ()) if os.path.isdir(host_path(p))]
        cli = shutil.which(rt) if rt in ("podman", "docker") else None
        if socks or dirs or cli:
            out.append({"runtime": rt, "sockets": socks, "state": dirs, "cli": cli or ""})
    return out


__all__ = ["SOCKETS", "STATE", "runtimes_found"]
