"""Checks of the machine before any BPF is loaded, each failing with one line
that says what to do."""
from __future__ import annotations

import os
import subprocess

BTF_PATH = "/sys/kernel/btf/vmlinux"


class EnvironmentProblem(RuntimeError):
    """The node cannot run vigil as it is; str() says what to do."""


def tracefs_path() -> str:
    return os.environ.get("VIGIL_TRACEFS", "/sys/kernel/tracing")


def check_root() -> None:
    if os.geteuid() != 0:
        raise EnvironmentProblem(
            "vigil needs root (CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN) to load eBPF programs; "
            "run it with sudo or as root")


def check_btf() -> None:
    path = os.environ.get("VIGIL_BTF", BTF_PATH)
    if not os.path.exists(path):
        raise EnvironmentProblem(
            f"kernel BTF not found at {path}; vigil needs a kernel built with "
            "CONFIG_DEBUG_INFO_BTF=y (5.8 or newer)")


def ensure_tracefs() -> str:
    """Mount tracefs when it is missing (syscall tracepoints need it)."""
    path = tracefs_path()
    if os.path.isdir(os.path.join(path, "events")):
        return path
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise EnvironmentProblem(
            f"tracefs is not mounted and {path} cannot be created ({e.strerror}); "
            f"mount it: mount -t tracefs nodev {path}") from None
    r = subprocess.run(["mount", "-t", "tracefs", "nodev", path], capture_output=True, text=True)
    if r.returncode != 0 or not os.path.isdir(os.path.join(path, "events")):
        msg = (r.stderr or "").strip().splitlines()
        raise EnvironmentProblem(
            f"tracefs is not mounted at {path} and mounting it failed"
            f"{' (' + msg[-1] + ')' if msg else ''}; mount it: mount -t tracefs nodev {path}")
    return path


def check_all() -> str:
    check_root()
    check_btf()
    from vigil.kernel import libbpf
    try:
        libbpf.lib()
    except libbpf.LibbpfMissing as e:
        raise EnvironmentProblem(str(e)) from None
    return ensure_tracefs()
