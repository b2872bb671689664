"""What the kernel is asked to send up, kept in one place.

A :class:`KernelFilters` holds the event kinds, the open path prefixes (and
the files they name, watched by identity: vigil.kernel.watched), the kinds
whose failed results no rule wants (``ok_only``), the per-process event
budget, the host/containers scope, the per-cgroup scope overrides, the
ignored pids and process names and the DNS ports -- and the load-time
settings of the sensors (the two ring buffer sizes, argv bytes per exec).  It writes all of it to the
current :class:`~vigil.kernel.sensors.SensorManager` when the sensors start
(and again when they are restarted for new kinds), and writes a change at
once while they run.  The pipeline owns it; the agent changes the filters
through it and never reaches for the sensors.

The open filter's mode bits and map entries are defined here too: the one
Python definition of the bits (enum open_want in kernel/bpf/events.h; the
rules compiler's OPEN_READ / OPEN_WRITE / OPEN_ANY are these values).
"""
from __future__ import annotations

from typing import Iterable, Optional

from vigil.events import Kind
from vigil.events.structs import PREFIX_LEN

DEFAULT_RINGBUF = 16 * 1024 * 1024
DEFAULT_RINGBUF_HI = 4 * 1024 * 1024     # the high-priority ring

# enum open_want in kernel/bpf/events.h (tests/test_kinds.py checks the two agree):
# what an open_prefixes entry wants below its prefix.
OPEN_WANT_READ = 1     # O_RDONLY / O_RDWR opens
OPEN_WANT_WRITE = 2    # O_WRONLY / O_RDWR opens, and any with O_CREAT or O_TRUNC
OPEN_WANT_ALL = OPEN_WANT_READ | OPEN_WANT_WRITE


def open_filter_entries(prefixes) -> dict:
    """open_prefixes map entries (key bytes -> mask) for a prefix list or
    prefix -> mask dict.  The trie answers with the longest matching prefix
    only, so each entry carries the modes of the prefixes covering it.  The
    kernel compares at most PREFIX_LEN - 1 bytes of a path: longer prefixes
    are cut (which only widens them)."""
    items = prefixes.items() if isinstance(prefixes, dict) else \
        ((p, OPEN_WANT_ALL) for p in prefixes)
    own = {}
    for p, mask in items:
        mask = int(mask) & OPEN_WANT_ALL
        if not mask:
            continue
        b = (p.encode() if isinstance(p, str) else bytes(p))[:PREFIX_LEN - 1]
        own[b] = own.get(b, 0) | mask
    out = {}
    stack = []     # covering prefixes of the current one, with their masks
    for b in sorted(own):
        while stack and not b.startswith(stack[-1][0]):
            stack.pop()
        mask = own[b] | (stack[-1][1] if stack else 0)
        if stack and mask == stack[-1][1]:
            continue   # the covering entry answers the same
        stack.append((b, mask))
        out[b] = mask
    return out


class KernelFilters:
    def __init__(self, kinds: Iterable[Kind] = (), *, open_prefixes=None, scope: str = "all",
                 dns_ports=(53,), ignore_comms=(), ringbuf_size: int = DEFAULT_RINGBUF,
                 args_max: int = 4096, ringbuf_hi_size: int = DEFAULT_RINGBUF_HI,
                 ok_only: Iterable[Kind] = (), budget: tuple = (0, 0),
                 l7_protocols: int = 0, l7_ringbuf_size: int = 0, l7_connections: int = 0):
        self.kinds = set(kinds)          # what the user (or the rules) wants
        self.always: set = set()         # kinds the pipeline itself needs (set by it)
        # None (every open), a list of path prefixes, or a dict prefix -> modes
        # wanted (1 reads, 2 writes, 3 both), as RuleEngine.open_path_filter() gives it
        self.open_prefixes = open_prefixes
        self.scope = scope
        self.dns_ports = tuple(dns_ports)
        self.ignore_comms = tuple(ignore_comms)
        self.ringbuf_size = ringbuf_size
        self.ringbuf_hi_size = ringbuf_hi_size
        self.args_max = args_max
        # kinds whose failed results (ret < 0) no rule can match: dropped in the kernel
        self.ok_only = frozenset(ok_only)
        # (events/s, burst) each process may send on the bulk ring; rate 0 = no budget
        self.budget = tuple(budget)
        # L7 (vigil.l7): enum l7_proto bits detected, its ring and connection table
        # (0: the sensor manager's minimum, L7 off)
        self.l7_protocols = l7_protocols
        self.l7_ringbuf_size = l7_ringbuf_size
        self.l7_connections = l7_connections
        self.ignore_pids: dict = {}      # pid -> inherit
        self.cgroup_scope: dict = {}     # cgroup id -> in scope (True/False)
        self.sensors = None              # the SensorManager they are applied to
        from vigil.kernel.watched import WatchedFiles
        self.watched = WatchedFiles()    # the files the open prefixes name, by identity
        self.watched.set_prefixes(open_prefixes)

    # --- the sensors they apply to ---

    def kernel_kinds(self) -> set:
        return self.kinds | self.always

    def apply(self, sensors) -> None:
        """Write every filter to ``sensors`` (SensorManager.start's configure=,
        before anything is attached) and follow them from now on."""
        for pid, inherit in self.ignore_pids.items():
            sensors.ignore_pid(pid, inherit=inherit)
        for c in self.ignore_comms:
            sensors.ignore_comm(c)
        if self.open_prefixes is not None:
            sensors.set_open_prefixes(self.open_prefixes)
        if self.watched.prefixes:
            sensors.set_watched_inodes(self.watched.scan())
        if self.scope != "all":
            sensors.set_scope(self.scope)
        if self.ok_only:
            sensors.set_ok_only(self.ok_only)
        if self.budget[0]:
            sensors.set_budget(*self.budget)
        for cgid, inside in self.cgroup_scope.items():
            sensors.set_cgroup_scope(cgid, inside)
        sensors.set_dns_ports(self.dns_ports)
        if self.l7_protocols:
            sensors.set_l7_protocols(self.l7_protocols)
        self.sensors = sensors

    def detach(self) -> None:
        self.sensors = None

    def active_kinds(self) -> set:
        """Kinds the current sensors have a program attached for."""
        return self.sensors.active_kinds() if self.sensors is not None else set()

    # --- changes (written at once to running sensors) ---

    def set_kinds(self, kinds: Iterable[Kind]) -> bool:
        """New wanted kinds.  True when the sensors must be restarted (a new
        kind has no program loaded); else the kernel is told at once."""
        old = self.kernel_kinds()
        self.kinds = set(kinds)
        if self.sensors is None:
            return False
        if self.kernel_kinds() - old - self.sensors.active_kinds():
            return True
        self.sensors.set_kinds(self.kernel_kinds())
        return False

    def set_l7_protocols(self, bits: int) -> None:
        """The L7 protocols detected (enum l7_proto bits), at once."""
        self.l7_protocols = bits
        if self.sensors is not None:
            self.sensors.set_l7_protocols(bits)

    def set_open_prefixes(self, prefixes) -> None:
        self.open_prefixes = prefixes
        self.watched.set_prefixes(prefixes)
        if self.sensors is not None:
            self.sensors.set_open_prefixes(prefixes)
            self.sensors.set_watched_inodes(self.watched.scan())

    def tick(self, now: float) -> None:
        """Periodic upkeep (the pipeline's event loop): re-stat the watched
        files when due, so a replaced file is known by its new inode."""
        if self.sensors is not None and self.watched.due(now):
            self.sensors.set_watched_inodes(self.watched.scan(now))

    def set_ok_only(self, kinds: Iterable[Kind]) -> None:
        self.ok_only = frozenset(kinds)
        if self.sensors is not None:
            self.sensors.set_ok_only(self.ok_only)

    def set_cgroup_scope(self, cgroup_id: int, in_scope: Optional[bool]) -> None:
        """Per-cgroup override: True/False, or None to remove it."""
        if in_scope is None:
            self.cgroup_scope.pop(cgroup_id, None)
        else:
            self.cgroup_scope[cgroup_id] = bool(in_scope)
        if self.sensors is not None:
            self.sensors.set_cgroup_scope(cgroup_id, in_scope)

    def ignore_pid(self, pid: int, inherit: bool = False) -> None:
        """Drop a process's events; with inherit, those of its new children too."""
        self.ignore_pids[pid] = inherit
        if self.sensors is not None:
            self.sensors.ignore_pid(pid, inherit=inherit)


__all__ = ["KernelFilters"]
