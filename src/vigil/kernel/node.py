"""Facts about this node that decide what vigil can do, read without loading
anything: kernel, BTF, lockdown, capabilities held, cgroup mode, tracefs, bpffs
and the syscall tracepoints the sensors use."""
from __future__ import annotations

import ctypes
import ctypes.util
import os

from vigil.kernel.environment import BTF_PATH, tracefs_path
from vigil.state.containers.cgroupfs import find_v2_mount

# capability numbers (linux/capability.h) vigil cares about
CAPS = {"CAP_DAC_READ_SEARCH": 2, "CAP_KILL": 5, "CAP_NET_ADMIN": 12, "CAP_SYS_PTRACE": 19,
        "CAP_SYS_ADMIN": 21, "CAP_SYS_RESOURCE": 24, "CAP_PERFMON": 38, "CAP_BPF": 39}
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def effective_caps() -> int:
    """This process's effective capability set (capget(2)) as one bit mask."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    hdr = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    if libc.capget(ctypes.byref(hdr), data) != 0:
        raise OSError(ctypes.get_errno(), "capget")
    return data[0].effective | (data[1].effective << 32)


def caps_held() -> dict:
    """{CAP_NAME: held} for the capabilities in CAPS."""
    eff = effective_caps()
    return {name: bool(eff >> bit & 1) for name, bit in CAPS.items()}


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def mounts(mountinfo: str = "/proc/self/mountinfo") -> dict:
    """{mount point: filesystem type} from mountinfo."""
    out = {}
    for line in _read(mountinfo).splitlines():
        left, sep, right = line.partition(" - ")
        fields = left.split()
        if sep and len(fields) >= 5:
            out[fields[4]] = right.split(" ", 1)[0]
    return out


def cgroup_mode(mnt: dict) -> str:
    """unified (cgroup v2 only), hybrid (v1 controllers beside a v2 hierarchy) or legacy."""
    v2 = find_v2_mount()
    v1 = any(t == "cgroup" for t in mnt.values())
    if v2 and not v1:
        return "unified"
    if v2:
        return "hybrid"
    return "legacy" if v1 else "none"


def lockdown() -> str:
    """The kernel lockdown mode ("none", "integrity", "confidentiality"; "" = unknown)."""
    text = _read("/sys/kernel/security/lockdown")
    if "[" in text:
        return text.split("[", 1)[1].split("]", 1)[0]
    return text


def tracepoint_exists(tracefs: str, category: str, event: str) -> bool:
    return os.path.isdir(os.path.join(tracefs, "events", category, event))


def facts() -> dict:
    """Everything above, as plain data."""
    mnt = mounts()
    tracefs = tracefs_path()
    btf = os.environ.get("VIGIL_BTF", BTF_PATH)
    return {
        "kernel": os.uname().release,
        "btf": {"path": btf, "present": os.path.exists(btf),
                "bytes": os.path.getsize(btf) if os.path.exists(btf) else 0},
        "lockdown": lockdown(),
        "root": os.geteuid() == 0,
        "capabilities": caps_held(),
        "cgroup": {"mode": cgroup_mode(mnt), "v2_mount": find_v2_mount()},
        "tracefs": {"path": tracefs,
                    "mounted": os.path.isdir(os.path.join(tracefs, "events"))},
        "bpffs": {"path": "/sys/fs/bpf", "mounted": mnt.get("/sys/fs/bpf") == "bpf"},
    }


__all__ = ["CAPS", "caps_held", "effective_caps", "mounts", "cgroup_mode", "lockdown",
           "tracepoint_exists", "facts"]
