"""Host paths from wherever the agent runs.

On a plain host every path is what it says.  In a container (the DaemonSet),
the node's filesystems are mounted below one directory named by
``VIGIL_HOST_ROOT`` (e.g. ``/host``: host ``/proc`` at ``/host/proc``, the
runtimes' sockets and state dirs at ``/host/run/...``, ``/host/var/lib/...``);
every host path vigil reads goes through :func:`host_path`.
"""
from __future__ import annotations

import os

ENV = "VIGIL_HOST_ROOT"


def host_root() -> str:
    """The directory the host's filesystem is mounted at ("" on the host itself)."""
    root = os.environ.get(ENV, "").rstrip("/")
    return root


def host_path(path: str) -> str:
    """``path`` (absolute, as the host sees it) as this process can open it."""
    root = host_root()
    if not root or not path.startswith("/"):
        return path
    return root + path


def proc_path(*parts) -> str:
    """The host's procfs (``/proc`` or ``$VIGIL_HOST_ROOT/proc``), joined with ``parts``."""
    return os.path.join(host_path("/proc"), *(str(p) for p in parts))


__all__ = ["ENV", "host_root", "host_path", "proc_path"]
