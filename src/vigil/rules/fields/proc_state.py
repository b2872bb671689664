"""proc.* and thread.* fields the kernel reports at exec and whenever they change:
capability sets, session and process group, the process's start time, the
executable's inode.  Values follow libsinsp's definitions (sinsp_filtercheck_thread):
the event's own copy when it carries one (exec, setuid family, capset, setsid,
setpgid), else the process table's (vigil.state.proctable)."""
from __future__ import annotations

from vigil.events import Kind
from vigil.events.structs import EXE_LOWER_LAYER, EXE_UPPER_LAYER, EXE_WRITABLE
from vigil.rules.fields.base import define, safe

# capability bit -> kernel name, bit 0 first (include/uapi/linux/capability.h)
CAP_NAMES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK",
    "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG",
    "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
)


def caps_text(mask):
    """A capability mask as Falco prints it: the names of the set bits in bit order,
    space-separated; '' for the empty set; bits beyond the known names are left out."""
    if mask is None:
        return None
    return " ".join(n for i, n in enumerate(CAP_NAMES) if mask >> i & 1)


_CARRIERS = frozenset((Kind.EXEC, Kind.SETUID, Kind.SETID, Kind.CAPSET, Kind.SESSION))


def _own(attr):
    """attr of the event when it carries it (exec, credential changes), else of its process."""
    def get(ev):
        if ev.kind in _CARRIERS:
            v = getattr(ev, attr)
            if v is not None:
                return v
        p = ev.proc
        return getattr(p, attr) if p is not None else None
    return get


def _cap_field(which, desc):
    get = _own("cap_" + which)
    define("thread.cap_" + which, "str", safe(lambda ev, cx: caps_text(get(ev))), desc=desc)


_cap_field("effective", "The effective capability set of the thread: the kernel's CAP_* names "
           "in bit order, space-separated; empty when none. Read at exec (after it: file "
           "capabilities and setuid-root included) and after setuid-family and capset calls.")
_cap_field("permitted", "The permitted capability set of the thread (same form and sources as "
           "thread.cap_effective).")
_cap_field("inheritable", "The inheritable capability set of the thread (same form and sources "
           "as thread.cap_effective).")

# --- session and process group ---

_sid = _own("sid")
_vpgid = _own("vpgid")


def _vpid(ev):
    if ev.kind is Kind.EXEC and ev.vpid:
        return ev.vpid
    p = ev.proc
    return (p.vpid or None) if p is not None else None


def _leader(ev, cx, attr, value):
    """The leader of the process's session (attr 'sid') or group ('vpgid'), as
    libsinsp finds it: on the host the process whose pid is the id; else (leader
    gone, or inside a pid namespace where the id is virtual) the eldest ancestor
    with the same id, the process itself at the least."""
    p = ev.proc
    if p is None or not value:
        return None
    pt = cx.proctable if cx is not None else None
    in_ns = bool(p.vpid) and p.vpid != p.pid
    if pt is not None and not in_ns:
        lp = pt.get(value)
        if lp is not None:
            return lp
    leader = p
    if pt is not None:
        for a in pt.ancestors(p.pid, 64):
            if getattr(a, attr) != value:
                break
            leader = a
    return leader


def _leader_field(name, attr, get_id, what, desc):
    def fn(ev, cx):
        lp = _leader(ev, cx, attr, get_id(ev))
        if lp is None:
            return None
        return {"comm": lp.comm, "exe": lp.args[0] if lp.args else lp.exe,
                "exe_path": lp.exe}[what] or None
    define(name, "str", safe(fn), desc=desc)


define("proc.sid", "int", safe(lambda ev, cx: _sid(ev)),
       desc="The session id of the process, as seen in its own pid namespace (from the kernel at "
            "exec and setsid; inherited at fork).")
define("proc.vpgid", "int", safe(lambda ev, cx: _vpgid(ev) or None),
       desc="The process group id of the process, as seen in its own pid namespace (from the "
            "kernel at exec and setpgid/setsid; inherited at fork).")
define("proc.is_sid_leader", "bool",
       safe(lambda ev, cx: None if ev.proc is None and ev.kind is not Kind.EXEC
            else _sid(ev) == _vpid(ev)),
       desc="true if the process leads its session: proc.sid == proc.vpid.")
define("proc.is_vpgid_leader", "bool",
       safe(lambda ev, cx: None if ev.proc is None and ev.kind is not Kind.EXEC
            else _vpgid(ev) == _vpid(ev)),
       desc="true if the process leads its process group: proc.vpgid == proc.vpid. A command "
            "typed at an interactive shell leads its own group; children a script spawns do not.")
for _name, _what, _d in (("proc.sname", "comm", "name"), ("proc.sid.exe", "exe", "first argument"),
                         ("proc.sid.exepath", "exe_path", "executable path")):
    _leader_field(_name, "sid", _sid, _what,
                  f"The {_d} of the session leader: the process whose pid is proc.sid, or the "
                  "eldest ancestor with the same session id.")
for _name, _what, _d in (("proc.vpgid.name", "comm", "name"),
                         ("proc.vpgid.exe", "exe", "first argument"),
                         ("proc.vpgid.exepath", "exe_path", "executable path")):
    _leader_field(_name, "vpgid", _vpgid, _what,
                  f"The {_d} of the process group leader: the process whose pid is proc.vpgid, "
                  "or the eldest ancestor with the same process group id.")

# --- start time and the executable ---


def _start(ev):
    if ev.kind is Kind.EXEC and ev.start_time:
        return ev.start_time
    p = ev.proc
    return (p.start_time or None) if p is not None else None


def _duration(ev, cx):
    s = _start(ev)
    return None if s is None else ev.time - s


define("proc.duration", "int", safe(_duration),
       desc="Nanoseconds since the process was created (forked) until this event; an exec does "
            "not reset it.")
_exe_ino = _own("exe_ino")
_ctime = _own("exe_ctime_ns")
_mtime = _own("exe_mtime_ns")
define("proc.exe_ino", "int", safe(lambda ev, cx: _exe_ino(ev) or None),
       desc="The inode number of the executable file.")
define("proc.exe_ino.ctime", "abstime", safe(lambda ev, cx: _ctime(ev) or None),
       desc="Last status change time (inode ctime) of the executable file, ns since the epoch.")
define("proc.exe_ino.mtime", "abstime", safe(lambda ev, cx: _mtime(ev) or None),
       desc="Last modification time (inode mtime) of the executable file, ns since the epoch.")


def _ctime_to_start(ev, cx):
    c, s = _ctime(ev), _start(ev)
    if not c or not s:
        return None
    return (s - c) or None


define("proc.exe_ino.ctime_duration_proc_start", "abstime", safe(_ctime_to_start),
       desc="Nanoseconds from the executable file's last status change (ctime) to the start "
            "of the process running it.")

_flags = _own("exe_flags")


def exe_flag(ev, bit):
    """True/False when the kernel reported the executable's flags, None when not."""
    f = _flags(ev)
    return None if f is None else bool(f & bit)


def exe_overlay(ev):
    """'upper', 'lower' or '' (not on overlayfs); None when the kernel did not say."""
    f = _flags(ev)
    if f is None:
        return None
    return "upper" if f & EXE_UPPER_LAYER else "lower" if f & EXE_LOWER_LAYER else ""


define("proc.is_exe_writable", "bool", safe(lambda ev, cx: bool(exe_flag(ev, EXE_WRITABLE))),
       desc="true if the executable file is writable by the user running it (its owner, group or "
            "other write bit for the process's fsuid/fsgid, or CAP_DAC_OVERRIDE).")


def _parent_start(ev, cx):
    pt = cx.proctable if cx is not None else None
    ppid = ev.ppid or (ev.proc.ppid if ev.proc is not None else 0)
    pp = pt.get(ppid) if pt is not None and ppid else None
    return (pp.start_time or None) if pp is not None else None


define("proc.ppid.duration", "int",
       safe(lambda ev, cx: (lambda s: None if s is None else ev.time - s)(_parent_start(ev, cx))),
       desc="Nanoseconds since the parent process was created until this event.")
define("proc.ppid.ts", "int", safe(_parent_start),
       desc="When the parent process was created, ns since the epoch.")
