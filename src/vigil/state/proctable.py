"""The process table: what vigil knows about every live process.

Seeded from /proc at start so processes older than vigil have exe, cmdline and
parent; kept current by exec/fork/exit events; bounded (least recently used
entries go first) and with ancestry lookup.  Exited processes stay for a grace
period so late events (a child's exit after its parent's) still resolve.
"""
from __future__ import annotations

import os
import time
from collections import OrderedDict
from typing import Iterator, Optional

from vigil.events import Event, Kind, boot_offset_ns
from vigil.events.structs import ENV_LEN, EXE_FROM_MEMFD
from vigil.host_paths import proc_path

EXIT_GRACE_NS = 5 * 1_000_000_000


class ProcInfo:
    """One process.  ``comm`` is the name set at its exec (Falco's proc.name:
    the invoked file's name), inherited over fork and kept when the process
    renames itself (prctl PR_SET_NAME) -- unless to the name it was invoked
    as (argv[0]'s basename: busybox applets); the events carry the current one."""

    __slots__ = ("pid", "ppid", "comm", "exe", "args", "cwd", "uid", "gid", "loginuid",
                 "tty", "start_time", "cgroup_id", "exited_at", "exe_from_memfd", "sid",
                 "container_id", "exe_ctime", "vpid", "vpgid", "cap_inheritable",
                 "cap_permitted", "cap_effective", "exe_ino", "exe_ctime_ns", "exe_mtime_ns",
                 "exe_flags", "env")

    def __init__(self, pid: int, ppid: int = 0, comm: str = "", exe: str = "",
                 args: Optional[list] = None, cwd: str = "", uid: int = 0, gid: int = 0,
                 loginuid: int = -1, tty: str = "", start_time: int = 0, cgroup_id: int = 0,
                 sid: int = 0):
        self.pid = pid
        self.ppid = ppid
        self.comm = comm
        self.exe = exe
        self.args = args if args is not None else []
        self.cwd = cwd
        self.uid = uid
        self.gid = gid
        self.loginuid = loginuid
        self.tty = tty
        self.start_time = start_time
        self.cgroup_id = cgroup_id
        self.exited_at = 0
        self.exe_from_memfd = False
        self.sid = sid
        self.container_id = None
        self.exe_ctime = 0
        self.vpid = 0
        self.vpgid = 0             # process group id in its own pid namespace (0: unknown)
        # capability sets (bit masks); None while unknown
        self.cap_inheritable = self.cap_permitted = self.cap_effective = None
        self.exe_ino = 0
        self.exe_ctime_ns = self.exe_mtime_ns = 0
        self.exe_flags = None      # EXE_* bits from the exec event; None: not seen (from /proc)
        # the environment at exec (["NAME=value", ...]); None: not captured (no rule
        # reads proc.env); ENV_FROM_PROC: started before vigil, read from /proc on demand
        self.env = None

    @property
    def cmdline(self) -> str:
        """Falco's proc.cmdline: the name followed by the arguments."""
        return " ".join([self.comm] + [a for a in self.args[1:]])

    def to_dict(self) -> dict:
        return {s: getattr(self, s) for s in self.__slots__}

    @classmethod
    def from_dict(cls, d: dict) -> "ProcInfo":
        p = cls(d["pid"])
        for s in cls.__slots__:
            if s in d:
                setattr(p, s, d[s])
        return p

    def __repr__(self) -> str:  # pragma: no cover
        return f"ProcInfo(pid={self.pid}, ppid={self.ppid}, comm={self.comm!r}, exe={self.exe!r})"


def _invoked_name(argv0: str) -> str:
    """The comm a process invoked as argv0 has: its basename, 15 bytes."""
    return argv0.rsplit("/", 1)[-1].encode()[:15].decode("utf-8", "ignore")


def _read(path: str) -> Optional[bytes]:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def _tty_name(tty_nr: int) -> str:
    if tty_nr == 0:
        return ""
    major, minor = (tty_nr >> 8) & 0xFFF, (tty_nr & 0xFF) | ((tty_nr >> 12) & 0xFFF00)
    if major == 136:
        return f"pts{minor}"
    if major == 4:
        return f"tty{minor}"
    return f"tty{major}:{minor}"


def read_proc(pid: int) -> Optional[ProcInfo]:
    """Read one process from /proc; None when it is gone or unreadable."""
    stat = _read(proc_path(pid, "stat"))
    if stat is None:
        return None
    try:
        rp = stat.rindex(b")")
        comm = stat[stat.index(b"(") + 1:rp].decode(errors="replace")
        rest = stat[rp + 2:].split()
        ppid = int(rest[1])
        sid = int(rest[3])
        tty_nr = int(rest[4])
        start_ticks = int(rest[19])
    except (ValueError, IndexError):
        return None
    cmd = _read(proc_path(pid, "cmdline")) or b""
    args = [a.decode(errors="replace") for a in cmd.split(b"\0")[:-1]] if cmd else []
    try:
        exe = os.readlink(proc_path(pid, "exe"))
    except OSError:
        exe = ""
    try:
        cwd = os.readlink(proc_path(pid, "cwd"))
    except OSError:
        cwd = ""
    uid = gid = vpid = vpgid = 0
    caps = {}
    status = _read(proc_path(pid, "status")) or b""
    for line in status.split(b"\n"):
        if line.startswith(b"Uid:"):
            uid = int(line.split()[1])
        elif line.startswith(b"Gid:"):
            gid = int(line.split()[1])
        elif line.startswith(b"NSpid:"):
            vpid = int(line.split()[-1])
        elif line.startswith(b"NSpgid:"):
            vpgid = int(line.split()[-1])
        elif line.startswith(b"NSsid:"):
            sid = int(line.split()[-1])    # as its own pid namespace sees it
        elif line.startswith((b"CapInh:", b"CapPrm:", b"CapEff:")):
            caps[line[:6]] = int(line.split()[1], 16)
    lu = _read(proc_path(pid, "loginuid"))
    loginuid = -1
    if lu:
        try:
            loginuid = int(lu)
            if loginuid == 0xFFFFFFFF:
                loginuid = -1
        except ValueError:
            pass
    p = ProcInfo(pid, ppid, comm, exe, args, cwd, uid, gid, loginuid, _tty_name(tty_nr),
                 _boot_ticks_to_wall_ns(start_ticks), 0, sid)
    p.vpid = vpid
    p.vpgid = vpgid
    p.env = ENV_FROM_PROC
    p.cap_inheritable = caps.get(b"CapInh")
    p.cap_permitted = caps.get(b"CapPrm")
    p.cap_effective = caps.get(b"CapEff")
    if exe.startswith("/memfd:"):
        p.exe_from_memfd = True
    try:
        st = os.stat(proc_path(pid, "exe"))
        p.exe_ctime = int(st.st_ctime)
        p.exe_ctime_ns, p.exe_mtime_ns, p.exe_ino = st.st_ctime_ns, st.st_mtime_ns, st.st_ino
    except OSError:
        pass
    return p


_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _boot_ticks_to_wall_ns(ticks: int) -> int:
    return boot_offset_ns() + ticks * 1_000_000_000 // _CLK_TCK


ENV_FROM_PROC = "from /proc"   # ProcInfo.env of a process seen before its exec was
ENV_MAX = ENV_LEN               # bytes of an environment read from /proc, as the kernel sends


def proc_env(p: ProcInfo) -> Optional[list]:
    """The environment of ``p`` as Falco's proc.env sees it (["NAME=value", ...]),
    or None when vigil does not know it.  A process that was running before
    vigil has it read from /proc/<pid>/environ once (at most ENV_MAX bytes)."""
    env = p.env
    if env is ENV_FROM_PROC:
        raw = None
        try:
            with open(proc_path(p.pid, "environ"), "rb") as f:
                raw = f.read(ENV_MAX + 1)
        except OSError:
            pass
        env = None
        if raw is not None:
            cut = len(raw) > ENV_MAX
            parts = raw[:ENV_MAX].split(b"\0")
            if cut or parts[-1] == b"":
                parts.pop()   # the final NUL, or a cut last entry
            env = [x.decode("utf-8", "replace") for x in parts]
        p.env = env
    return env


# what a forked child has of its parent until it execs or changes them
_INHERITED = ("sid", "vpgid", "cap_inheritable", "cap_permitted", "cap_effective", "exe_flags",
              "exe_ino", "exe_ctime_ns", "exe_mtime_ns", "env")
_CRED_KINDS = frozenset((Kind.SETUID, Kind.SETID, Kind.CAPSET, Kind.SESSION))


class ProcessTable:
    """pid -> ProcInfo, LRU-bounded."""

    def __init__(self, max_size: int = 32768):
        self.max_size = max_size
        self._procs: "OrderedDict[int, ProcInfo]" = OrderedDict()
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._procs)

    def __contains__(self, pid: int) -> bool:
        return pid in self._procs

    def __iter__(self) -> Iterator[ProcInfo]:
        return iter(list(self._procs.values()))

    def seed_from_proc(self) -> int:
        n = 0
        for name in os.listdir(proc_path()):
            if name.isdigit():
                p = read_proc(int(name))
                if p is not None:
                    self.put(p)
                    n += 1
        return n

    def put(self, p: ProcInfo) -> None:
        procs = self._procs
        procs[p.pid] = p
        procs.move_to_end(p.pid)
        while len(procs) > self.max_size:
            procs.popitem(last=False)
            self.evictions += 1

    def get(self, pid: int) -> Optional[ProcInfo]:
        p = self._procs.get(pid)
        if p is not None:
            self._procs.move_to_end(pid)
        return p

    def lookup_or_read(self, pid: int) -> Optional[ProcInfo]:
        """Known entry, else try /proc (a process we missed), else None."""
        p = self.get(pid)
        if p is None and pid > 0:
            p = read_proc(pid)
            if p is not None:
                self.put(p)
        return p

    def ancestors(self, pid: int, depth: int = 16) -> list:
        """Parent chain of pid: [parent, grandparent, ...] up to depth entries."""
        out = []
        p = self._procs.get(pid)
        seen = {pid}
        while p is not None and len(out) < depth:
            ppid = p.ppid
            if ppid <= 0 or ppid in seen:
                break
            seen.add(ppid)
            p = self._procs.get(ppid)
            if p is None:
                break
            out.append(p)
        return out

    def ancestor(self, pid: int, n: int) -> Optional[ProcInfo]:
        """n=0 is the process itself, 1 its parent, 2 the grandparent ..."""
        if n == 0:
            return self._procs.get(pid)
        chain = self.ancestors(pid, n)
        return chain[n - 1] if len(chain) >= n else None

    def update(self, ev: Event) -> ProcInfo:
        """Apply one event; returns the ProcInfo of the acting process (ev.proc)."""
        kind = ev.kind
        pid = ev.pid
        if kind == Kind.EXEC:
            p = self._procs.get(pid)
            if p is None:
                p = ProcInfo(pid, ev.ppid)
                p.start_time = ev.time
            if ev.start_time:
                p.start_time = ev.start_time     # the kernel's: when it was forked
            p.ppid = ev.ppid
            p.comm = ev.comm
            p.exe = ev.exe or ""
            p.args = ev.args or []
            p.cwd = ev.cwd or p.cwd
            p.uid, p.gid = ev.uid, ev.gid
            p.loginuid = ev.loginuid if ev.loginuid is not None else -1
            p.tty = ev.tty or ""
            p.cgroup_id = ev.cgroup_id
            p.exe_from_memfd = bool(ev.exe and ev.exe.startswith("/memfd:"))
            p.exe_ctime = ev.exe_ctime or 0
            p.vpid = ev.vpid or 0
            if ev.exe_flags is not None:
                p.exe_flags = ev.exe_flags
                p.exe_from_memfd = bool(ev.exe_flags & EXE_FROM_MEMFD) or p.exe_from_memfd
            p.exe_ino = ev.exe_ino or 0
            p.exe_ctime_ns, p.exe_mtime_ns = ev.exe_ctime_ns or 0, ev.exe_mtime_ns or 0
            p.env = ev.env
            self._ids(p, ev)
            p.exited_at = 0
            self.put(p)
            return p
        if kind == Kind.FORK:
            parent = self.lookup_or_read(pid)
            child = ProcInfo(ev.child_pid, pid)
            if parent is not None:
                child.comm, child.exe, child.args = parent.comm, parent.exe, list(parent.args)
                child.cwd, child.loginuid, child.tty = parent.cwd, parent.loginuid, parent.tty
                child.sid = parent.sid
                child.exe_from_memfd = parent.exe_from_memfd
                child.exe_ctime = parent.exe_ctime
                for a in _INHERITED:
                    setattr(child, a, getattr(parent, a))
                if parent.vpid and parent.vpid == parent.pid:
                    child.vpid = ev.child_pid      # a host process's child: same namespace
            child.uid, child.gid = ev.uid, ev.gid
            # the exec-time name is inherited (the fork event's comm is the
            # parent's current one, which it may have chosen)
            if parent is None or not child.comm:
                child.comm = ev.comm or child.comm
            child.start_time = ev.time
            child.cgroup_id = ev.cgroup_id
            self.put(child)
            return parent if parent is not None else child
        p = self._procs.get(pid)
        if p is None:
            p = read_proc(pid)
            if p is None:
                p = ProcInfo(pid, ev.ppid or 0, ev.comm or "", uid=ev.uid or 0, gid=ev.gid or 0)
            p.cgroup_id = ev.cgroup_id or 0
            self.put(p)
        else:
            # the LRU order follows exec/fork only (cheap on the hot path); an
            # evicted process that shows up again is re-read from /proc
            if ev.ppid and p.ppid != ev.ppid:
                p.ppid = ev.ppid  # reparented
            if ev.uid is not None:
                p.uid, p.gid = ev.uid, ev.gid
            comm = ev.comm
            if comm and comm != p.comm and p.args and comm == _invoked_name(p.args[0]):
                # renamed to the name it was invoked as: a multi-call binary
                # (busybox runs its applets through /proc/self/exe, then
                # names itself after argv[0]); any other name is ignored
                p.comm = comm
        if kind == Kind.EXIT:
            p.exited_at = ev.time or time.time_ns()
        elif kind in _CRED_KINDS and ev.cap_effective is not None:
            self._ids(p, ev)
            if kind == Kind.SESSION and ev.syscall == "setpgid" and ev.ret == 0:
                self._setpgid_other(p, ev)
        return p

    @staticmethod
    def _ids(p: ProcInfo, ev: Event) -> None:
        """The capability sets and session / group ids an exec or credential event carries."""
        if ev.cap_effective is None:
            return
        p.cap_inheritable, p.cap_permitted = ev.cap_inheritable, ev.cap_permitted
        p.cap_effective = ev.cap_effective
        p.sid, p.vpgid = ev.sid or 0, ev.vpgid or 0

    def _setpgid_other(self, caller: ProcInfo, ev: Event) -> None:
        """setpgid(pid, pgid) on another process (a shell putting a job in its own
        group): pid and pgid are ids in the caller's pid namespace; the target is
        the caller's child with that vpid (or pid on the host)."""
        target, pgid = (ev.id_args or [0, 0])[:2]
        if target in (0, caller.vpid or caller.pid):
            return          # the caller itself: its ids are already in the event
        for p in self._procs.values():
            if p.ppid == caller.pid and (p.vpid or p.pid) == target and not p.exited_at:
                p.vpgid = pgid or target
                return

    def reap(self, now_ns: Optional[int] = None) -> int:
        """Drop entries that exited more than the grace period ago."""
        now_ns = now_ns or time.time_ns()
        dead = [pid for pid, p in self._procs.items()
                if p.exited_at and now_ns - p.exited_at > EXIT_GRACE_NS]
        for pid in dead:
            del self._procs[pid]
        return len(dead)

    def snapshot(self) -> list:
        return [p.to_dict() for p in self._procs.values()]

    def load_snapshot(self, rows: list) -> None:
        for d in rows:
            self.put(ProcInfo.from_dict(d))
