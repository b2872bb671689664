"""Typed events: what the sensors report, after decoding.

One ``Event`` class carries every kind; the fields a kind does not use stay
``None``.  The pipeline attaches ``proc`` (a :class:`vigil.proctable.ProcInfo`)
and ``container`` (a :class:`vigil.container.model.ContainerInfo`) before rules
see the event.

Kinds (``Kind``) come from the registry in vigil.events.kinds.
"""
from __future__ import annotations

import time

from vigil.events.kinds import KIND_BY_NAME, Kind, generic_fields


def boot_offset_ns() -> int:
    """Wall-clock ns at boot: added to a CLOCK_BOOTTIME stamp (the kernel's
    event timestamps, /proc start times) it gives Event.time's clock."""
    return time.time_ns() - time.clock_gettime_ns(time.CLOCK_BOOTTIME)


FIELDS = (
    # common header
    "type", "time", "pid", "tid", "ppid", "uid", "gid", "comm", "cgroup_id",
    # which syscall produced it (openat, accept4, sendmmsg, unlinkat ...)
    "syscall",
    # exec
    "exe", "args", "args_truncated", "cwd", "tty", "loginuid", "cgroup_name",
    "exe_ctime",  # seconds since epoch: when the executable's inode last changed
    "vpid",       # pid in the process's own pid namespace
    "start_time",  # wall-clock ns when the process was created (fork)
    "exe_ino", "exe_ctime_ns", "exe_mtime_ns",  # the executable's inode: number, ctime/mtime ns
    "exe_flags",  # vigil.events.structs EXE_* bits (writable, overlay upper/lower, memfd)
    # exec and credential changes: capability sets (bit masks) after the call, and the
    # session / process-group ids as the process's own pid namespace sees them
    "cap_inheritable", "cap_permitted", "cap_effective", "sid", "vpgid",
    "id_args",    # setgid/setres*id/setpgid ...: the id arguments as passed
    # exit
    "exit_code", "exit_signal",
    # fork
    "child_pid",
    # files: path is absolute; path2 is the second path (rename/link target)
    "path", "path2", "flags", "mode", "ret", "fd",
    # opens: the opened file's own path (when resolved), its device (stat
    # encoding) and inode, whether it was recognised by identity ("file" or
    # "dir": a watched file, or a file in a watched directory), and how it
    # was opened ("io_uring"; None for the open syscalls)
    "realpath", "dev", "ino", "watched", "via",
    # network
    "family", "proto", "saddr", "sport", "daddr", "dport",
    # dns
    "query", "qtype",
    # ptrace / module / dup / setuid extras
    "target_pid", "request", "newfd", "fd_type", "new_uid",
    # io_uring_setup: ring entries
    "entries",
    # prctl (a rename): the names before and after
    "old_name", "new_name",
    # socket / setns / bpf extras (flags and mode above serve unshare, userfaultfd, fchmod)
    "sock_type", "nstype", "cmd",
    # open: the path before normalisation, when it differs (fd.nameraw)
    "path_raw",
    # http (vigil.l7): the request's method and path, the response's status
    # code (0: none, the connection closed), seconds to the response
    "method", "status", "duration", "direction",
)
# kinds read by the generic decoder bring their layouts' member names
FIELDS += tuple(f for f in generic_fields() if f not in FIELDS)


class Event:
    """One decoded event.  ``type`` is the kind label (``exec``, ``open`` ...).

    Fields a kind does not set read as None (class defaults), so building an
    event costs one dict update.  ``proc`` and ``container`` are filled in by
    the pipeline.
    """

    kind = None
    proc = None
    container = None

    def __init__(self, kind: Kind, **fields):
        self.kind = kind
        self.type = kind.label
        if fields:
            self.__dict__.update(fields)

    def to_dict(self, with_context: bool = True) -> dict:
        """Plain dict of the set fields (for JSON, capture files and tests)."""
        d = self.__dict__
        out = {k: d[k] for k in FIELDS if d.get(k) is not None}
        if with_context and self.container is not None:
            out["container"] = self.container.to_dict()
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "Event":
        d = dict(d)
        d.pop("container", None)
        kind = KIND_BY_NAME[d.pop("type")]
        d.pop("kind", None)
        return cls(kind, **{k: v for k, v in d.items() if k in _FIELD_SET})

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        body = ", ".join(f"{k}={v!r}" for k, v in self.to_dict(False).items() if k != "type")
        return f"Event<{self.type}>({body})"


_FIELD_SET = frozenset(FIELDS)
for _f in FIELDS:
    setattr(Event, _f, None)
del _f
