"""cgroup id -> ContainerInfo, on the hot path.

``ContainerResolver.resolve(ev)`` is called for every event.  A cached cgroup id
is one dict lookup.  On a miss the cgroup's path comes from (cheapest first) the
cgroup_mkdir events already seen, ``/proc/<pid>/cgroup`` (checked against the id
by one stat), the exec event's ``cgroup_name`` leaf, and at last a rate-limited
walk of the v2 hierarchy.  Host cgroups resolve to the shared ``HOST`` object;
a container resolves at once to what its path says (id, runtime, pod uid, QoS)
with ``complete=False`` while a worker thread fetches the rest.  Pipelines that
want full metadata can hold an event a bounded time: ``wait_for`` (blocking) or
``EventHold`` (non-blocking, keeps event order).

Expected events (``vigil.events``): ``cgroup_mkdir`` / ``cgroup_rmdir`` carry the
*new/removed* cgroup's v2 id in ``cgroup_id`` and its path in ``path``; every
event carries ``cgroup_id`` and ``pid``; exec events carry ``cgroup_name``.
"""
from __future__ import annotations

import heapq
import itertools
import logging
import queue
import threading
import time
from collections import deque
from typing import Callable, Optional

from vigil.events import Kind
from vigil.state.containers.cgroup import CgroupIdentity, parse_path, CONTAINER_KIND, HOST_KIND, POD_KIND
from vigil.state.containers.cgroupfs import CgroupFS, read_proc_cgroup
from vigil.state.containers.metadata import MetadataFetcher, apply
from vigil.state.containers.model import HOST, UNKNOWN, ContainerInfo

log = logging.getLogger(__name__)

DEFAULT_GRACE = 30.0          # seconds a removed cgroup still resolves
DEFAULT_HOLD = 0.05           # seconds a pipeline may hold an event for metadata
UNKNOWN_TTL = 1.0             # seconds an unplaceable cgroup id stays negatively cached
RETRY_DELAYS = (0.05, 0.25, 1.0)  # re-fetch when no source knew the container yet

Listener = Callable[[int, Optional[ContainerInfo]], None]


class ContainerResolver:
    def __init__(self, cgroupfs: Optional[CgroupFS] = None,
                 fetcher: Optional[MetadataFetcher] = None,
                 grace: float = DEFAULT_GRACE, hold: float = DEFAULT_HOLD,
                 proc: Optional[str] = None, unknown_ttl: float = UNKNOWN_TTL,
                 retry_delays=RETRY_DELAYS, clock=time.monotonic, start: bool = True):
        self.cgfs = cgroupfs if cgroupfs is not None else CgroupFS(proc=proc)
        self.fetcher = fetcher if fetcher is not None else MetadataFetcher()
        self.grace = grace
        self.hold = hold
        self.proc = proc
        self.unknown_ttl = unknown_ttl
        self.retry_delays = tuple(retry_delays)
        self._clock = clock

        self._by_cgid: dict = {}          # cgroup id -> ContainerInfo (HOST / UNKNOWN shared)
        self._containers: dict = {}       # container id -> ContainerInfo
        self._cgids_of: dict = {}         # container id -> set of cgroup ids
        self._expiry: dict = {}           # cgroup id -> monotonic deadline
        self._done: dict = {}             # container id -> threading.Event (metadata fetched)
        self._attempts: dict = {}         # container id -> fetch attempts so far
        self._lock = threading.RLock()
        self._listeners: list = []

        # (priority, seq, container id): a container seen live (its events may be held
        # waiting) is fetched before those learnt at seed time, whose slow sources
        # (podman's CLI) could otherwise keep a short-lived container waiting until its
        # runtime state is gone
        self._queue: "queue.PriorityQueue" = queue.PriorityQueue()
        self._seq = itertools.count()
        self._seeding = False
        self._retry_heap: list = []
        self._worker: Optional[threading.Thread] = None
        self._stopping = threading.Event()

        # stats (written by the pipeline thread only, except the fetch counters)
        self.lookups = 0
        self.hits = 0
        self.misses = 0
        self.timeouts = 0
        self.unknown = 0
        self.fetches = 0
        self.fetch_empty = 0
        self.evictions = 0
        if start:
            self.start()

    # --- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        if self._worker is not None and self._worker.is_alive():
            return
        self._stopping.clear()
        self._worker = threading.Thread(target=self._run, name="vigil-container-meta", daemon=True)
        self._worker.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        self._queue.put((-1, next(self._seq), None))
        if self._worker is not None:
            self._worker.join(timeout)
            self._worker = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def add_listener(self, fn: Listener) -> None:
        """``fn(cgroup_id, info)`` when a cgroup is learnt or its info changes (metadata
        arrived); ``fn(cgroup_id, None)`` when it is forgotten.  Runs on the resolver's
        threads: keep it quick."""
        self._listeners.append(fn)

    # --- the hot path ---------------------------------------------------------------------
    def resolve(self, ev) -> ContainerInfo:
        kind = ev.kind
        if kind is Kind.CGROUP_MKDIR:
            return self.on_cgroup_mkdir(ev.cgroup_id, ev.path)
        if kind is Kind.CGROUP_RMDIR:
            return self.on_cgroup_rmdir(ev.cgroup_id, ev.path)
        self.lookups += 1
        cgid = ev.cgroup_id
        info = self._by_cgid.get(cgid)
        if info is not None:
            if info is UNKNOWN and self._expired(cgid):
                pass                      # negative entry ran out: try again below
            else:
                self.hits += 1
                return info
        return self._miss(cgid, ev.pid, getattr(ev, "cgroup_name", None))

    def peek(self, cgroup_id) -> Optional[ContainerInfo]:
        """The cached info for a cgroup id, without any lookup or stats."""
        return self._by_cgid.get(cgroup_id)

    def _expired(self, cgid) -> bool:
        d = self._expiry.get(cgid)
        return d is not None and self._clock() >= d

    def _miss(self, cgid, pid, cgroup_name) -> ContainerInfo:
        self.misses += 1
        path, ident = self._place(cgid, pid, cgroup_name)
        if ident is None or ident.kind not in (CONTAINER_KIND, HOST_KIND, POD_KIND):
            self.unknown += 1
            if cgid:
                with self._lock:
                    self._by_cgid[cgid] = UNKNOWN
                    self._expiry[cgid] = self._clock() + self.unknown_ttl
            return UNKNOWN
        if not cgid:
            # no id to key on (replayed or synthetic events): answer without caching
            if ident.is_container:
                return self._container_for(None, ident, path)
            return HOST
        if ident.is_container:
            return self._container_for(cgid, ident, path)
        self._set_host(cgid)
        return HOST

    def _place(self, cgid, pid, cgroup_name):
        """(path, identity) for a cgroup id we have not cached."""
        cgfs = self.cgfs
        path = cgfs.cached_path(cgid) if cgid else None
        if path is not None:
            return path, parse_path(path)
        if pid:
            text = read_proc_cgroup(pid, self.proc)
            if text:
                v2 = None
                for line in text.splitlines():
                    if line.startswith("0::"):
                        v2 = line[3:].strip()
                        break
                if v2 and v2.startswith("/"):
                    ident = parse_path(v2)
                    if not cgid or not cgfs.available:
                        return v2, ident
                    got = cgfs.id_for_path(v2)
                    if got == cgid:
                        return v2, ident
                    # got None: the cgroup is already gone; got other: the task moved since
                    # the event.  Either way the path is not provably this id's.
        if cgroup_name:
            ident = parse_path(cgroup_name)
            if ident.is_container:
                return None, ident
        if cgid and cgfs.available:
            path = cgfs.path_for_id(cgid, refresh=True)
            if path is not None:
                return path, parse_path(path)
        return None, None

    def _set_host(self, cgid) -> None:
        with self._lock:
            self._by_cgid[cgid] = HOST
            self._expiry.pop(cgid, None)
        self._notify(cgid, HOST)

    def _container_for(self, cgid, ident: CgroupIdentity, path: Optional[str]) -> ContainerInfo:
        cid = ident.container_id
        new = False
        with self._lock:
            info = self._containers.get(cid)
            if info is None:
                info = ContainerInfo(id=cid, runtime=ident.runtime, pod_uid=ident.pod_uid,
                                     qos=ident.qos, cgroup_path=path or "", cgroup_id=cgid or 0,
                                     complete=False)
                self._containers[cid] = info
                self._cgids_of[cid] = set()
                self._done[cid] = threading.Event()
                self._attempts[cid] = 0
                new = True
            elif path and not info.cgroup_path:
                # learnt from a bare leaf name before: the path adds pod uid / QoS
                info = self._replace(cid, cgroup_path=path, cgroup_id=info.cgroup_id or cgid or 0,
                                     pod_uid=info.pod_uid or ident.pod_uid, qos=info.qos or ident.qos,
                                     runtime=info.runtime or ident.runtime)
            if cgid:
                self._by_cgid[cgid] = info
                self._cgids_of[cid].add(cgid)
                self._expiry.pop(cgid, None)
        if new and not self._seeding and getattr(self.fetcher, "fetch_fast", None):
            # the local files now, on this thread: the queued fetch may come too late
            # for a container that lives a few milliseconds (the slow sources still run)
            try:
                fields = self.fetcher.fetch_fast(cid, info.runtime)
            except Exception as e:  # pragma: no cover - the fetcher guards its sources
                log.warning("metadata fetch for %s failed: %s", cid[:12], e)
                fields = {}
            if fields:
                self._partial(cid, fields)
                with self._lock:
                    info = self._containers.get(cid, info)
        if new:
            self._queue.put((1 if self._seeding else 0, next(self._seq), cid))
        if cgid:
            self._notify(cgid, info)
        return info

    def _replace(self, cid: str, **changes) -> ContainerInfo:
        """Swap in a changed copy of a container's info everywhere (caller holds the lock)."""
        old = self._containers[cid]
        d = old.to_dict()
        d.update(changes)
        info = ContainerInfo.from_dict(d)
        self._publish(cid, info)
        return info

    def _publish(self, cid: str, info: ContainerInfo) -> None:
        self._containers[cid] = info
        for g in self._cgids_of.get(cid, ()):
            self._by_cgid[g] = info

    # --- cgroup lifecycle events ------------------------------------------------------------
    def on_cgroup_mkdir(self, cgroup_id: int, path: Optional[str]) -> ContainerInfo:
        if not cgroup_id or not isinstance(path, str) or not path.startswith("/"):
            return UNKNOWN
        self.cgfs.learn(cgroup_id, path)
        ident = parse_path(path)
        if ident.is_container:
            return self._container_for(cgroup_id, ident, path)
        if ident.kind in (HOST_KIND, POD_KIND):
            self._set_host(cgroup_id)
            return HOST
        return UNKNOWN

    def on_cgroup_rmdir(self, cgroup_id: int, path: Optional[str] = None) -> ContainerInfo:
        """Keep the cgroup resolvable for ``grace`` seconds more, then forget it."""
        if not cgroup_id:
            return UNKNOWN
        info = self._by_cgid.get(cgroup_id)
        if info is None and isinstance(path, str) and path.startswith("/"):
            info = self.on_cgroup_mkdir(cgroup_id, path)  # removed before we ever saw it
        with self._lock:
            if cgroup_id in self._by_cgid:
                self._expiry[cgroup_id] = self._clock() + self.grace
        return info if info is not None else UNKNOWN

    # --- waiting for metadata ---------------------------------------------------------------
    def wait_for(self, cgroup_id: int, timeout: Optional[float] = None) -> ContainerInfo:
        """Block until the cgroup's container metadata is complete or ``timeout`` (default
        ``hold``) passes; returns what is known then.  Counts timeouts."""
        info = self._by_cgid.get(cgroup_id)
        if info is None:
            return UNKNOWN
        if info.complete or not info.is_container:
            return info
        done = self._done.get(info.id)
        if done is not None and done.wait(self.hold if timeout is None else timeout):
            return self._by_cgid.get(cgroup_id, info)
        self.timeouts += 1
        return self._by_cgid.get(cgroup_id, info)

    # --- seeding --------------------------------------------------------------------------
    def seed(self) -> int:
        """Learn every cgroup that exists now (containers get their metadata fetched);
        returns the number of containers found."""
        if not self.cgfs.available:
            return 0
        self.cgfs.refresh()
        found = set()
        self._seeding = True
        try:
            for cgid, path in list(self.cgfs._by_id.items()):
                ident = parse_path(path)
                if ident.is_container:
                    self._container_for(cgid, ident, path)
                    found.add(ident.container_id)
                elif ident.kind in (HOST_KIND, POD_KIND):
                    with self._lock:
                        self._by_cgid.setdefault(cgid, HOST)
        finally:
            self._seeding = False
        return len(found)

    # --- scope helpers ----------------------------------------------------------------------
    def known(self) -> dict:
        """A snapshot: cgroup id -> ContainerInfo for every cached cgroup."""
        with self._lock:
            return {k: v for k, v in self._by_cgid.items() if v is not UNKNOWN}

    def containers(self) -> dict:
        with self._lock:
            return dict(self._containers)

    # --- background worker -----------------------------------------------------------------
    def _run(self) -> None:
        last_expire = self._clock()
        while not self._stopping.is_set():
            timeout = 1.0
            if self._retry_heap:
                timeout = max(0.0, min(timeout, self._retry_heap[0][0] - self._clock()))
            try:
                cid = self._queue.get(timeout=timeout)[2]
            except queue.Empty:
                cid = False
            if cid is None:
                break
            if cid:
                self._fetch(cid)
            now = self._clock()
            while self._retry_heap and self._retry_heap[0][0] <= now:
                _, rcid = heapq.heappop(self._retry_heap)
                self._fetch(rcid)
            if now - last_expire >= 0.5:
                self.expire()
                last_expire = now

    def fetch_now(self, cid: str) -> None:
        """Fetch a container's metadata on the calling thread (tests, or no worker)."""
        self._fetch(cid)

    def _fetch(self, cid: str) -> None:
        info = self._containers.get(cid)
        if info is None or info.complete:
            return
        self.fetches += 1
        if not info.cgroup_path and self.cgfs.available:
            info = self._find_path(cid) or info
        try:
            if getattr(self.fetcher, "supports_partial", False):
                fields = self.fetcher.fetch(cid, info.runtime, info.pod_uid,
                                            on_partial=lambda f: self._partial(cid, f))
            else:
                fields = self.fetcher.fetch(cid, info.runtime, info.pod_uid)
        except Exception as e:  # pragma: no cover - fetcher already guards its sources
            log.warning("metadata fetch for %s failed: %s", cid[:12], e)
            fields = {}
        attempts = self._attempts.get(cid, 0)
        gone = all(g in self._expiry for g in self._cgids_of.get(cid, ())) and self._cgids_of.get(cid)
        if not fields.get("sources") and attempts < len(self.retry_delays) and not gone:
            # the runtime may not have written its state yet: try again shortly
            self._attempts[cid] = attempts + 1
            heapq.heappush(self._retry_heap, (self._clock() + self.retry_delays[attempts], cid))
            return
        if not fields.get("sources") and not info.sources:
            self.fetch_empty += 1
        with self._lock:
            cur = self._containers.get(cid)
            if cur is None:
                return
            new = apply(cur, fields, complete=True)
            self._publish(cid, new)
            cgids = list(self._cgids_of.get(cid, ()))
            done = self._done.get(cid)
        if done is not None:
            done.set()
        for g in cgids:
            self._notify(g, new)

    def _partial(self, cid: str, fields: dict) -> None:
        """What the fast sources knew, published while the slow ones still run: the info
        stays ``complete=False`` (held events keep waiting) but carries these fields."""
        with self._lock:
            cur = self._containers.get(cid)
            if cur is None or cur.complete:
                return
            new = apply(cur, fields, complete=False)
            self._publish(cid, new)
            cgids = list(self._cgids_of.get(cid, ()))
        for g in cgids:
            self._notify(g, new)

    def _find_path(self, cid: str) -> Optional[ContainerInfo]:
        """A container learnt from a leaf name only: look for its cgroup in the hierarchy
        (off the hot path) to learn its path, pod uid and QoS."""
        self.cgfs.maybe_refresh()
        best = None
        for cgid, path in list(self.cgfs._by_id.items()):
            if cid in path:
                ident = parse_path(path)
                if ident.container_id == cid and (best is None or len(path) < len(best[1])):
                    best = (cgid, path, ident)
        if best is None:
            return None
        cgid, path, ident = best
        with self._lock:
            if cid not in self._containers:
                return None
            cur = self._containers[cid]
            info = self._replace(cid, cgroup_path=path, cgroup_id=cur.cgroup_id or cgid,
                                 pod_uid=cur.pod_uid or ident.pod_uid, qos=cur.qos or ident.qos)
        return info

    def expire(self) -> int:
        """Forget cgroups whose grace ran out; returns how many."""
        now = self._clock()
        gone = []
        with self._lock:
            for cgid, deadline in list(self._expiry.items()):
                if now < deadline:
                    continue
                del self._expiry[cgid]
                info = self._by_cgid.pop(cgid, None)
                self.cgfs.forget(cgid)
                if info is None or info is UNKNOWN:
                    continue
                gone.append(cgid)
                if info.is_container:
                    s = self._cgids_of.get(info.id)
                    if s is not None:
                        s.discard(cgid)
                        if not s:
                            del self._cgids_of[info.id]
                            self._containers.pop(info.id, None)
                            ev = self._done.pop(info.id, None)
                            if ev is not None:
                                ev.set()
                            self._attempts.pop(info.id, None)
        self.evictions += len(gone)
        for cgid in gone:
            self._notify(cgid, None)
        return len(gone)

    def _notify(self, cgid, info) -> None:
        for fn in self._listeners:
            try:
                fn(cgid, info)
            except Exception as e:  # a listener must not break resolution
                log.warning("container listener failed: %s", e)

    # --- stats ------------------------------------------------------------------------------
    @property
    def pending(self) -> int:
        with self._lock:      # the worker's expire() removes containers meanwhile
            return sum(1 for i in self._containers.values() if not i.complete)

    def stats(self) -> dict:
        return {
            "lookups": self.lookups, "hits": self.hits, "misses": self.misses,
            "pending": self.pending, "timeouts": self.timeouts, "unknown": self.unknown,
            "containers": len(self._containers), "cgroups": len(self._by_cgid),
            "fetches": self.fetches, "fetch_empty": self.fetch_empty,
            "evictions": self.evictions,
        }


class EventHold:
    """Hold events (in order) until their container's metadata is complete or ``max_hold``
    seconds pass, without blocking: ``push`` returns the events that may go out now,
    ``poll`` the ones released since, ``flush`` everything."""

    def __init__(self, resolver: ContainerResolver, max_hold: Optional[float] = None,
                 clock=time.monotonic):
        self.resolver = resolver
        self.max_hold = resolver.hold if max_hold is None else max_hold
        self._clock = clock
        self._q: deque = deque()
        self.held = 0
        self.timeouts = 0

    def __len__(self) -> int:
        return len(self._q)

    def push(self, ev) -> list:
        info = self.resolver.resolve(ev)
        ev.container = info
        ready = info.complete or not info.is_container
        if ready and not self._q:
            return [ev]
        if not ready:
            self.held += 1
        self._q.append((self._clock() + self.max_hold, ev))
        return self.poll()

    def poll(self) -> list:
        out = []
        now = self._clock()
        peek = self.resolver.peek
        while self._q:
            deadline, ev = self._q[0]
            info = ev.container
            if info is not None and info.is_container and not info.complete:
                cur = peek(ev.cgroup_id) if ev.cgroup_id else None
                if cur is not None and cur.id == info.id:
                    info = ev.container = cur
                if not info.complete:
                    if now < deadline:
                        break
                    self.timeouts += 1
                    self.resolver.timeouts += 1
            self._q.popleft()
            out.append(ev)
        return out

    def flush(self) -> list:
        out = []
        peek = self.resolver.peek
        while self._q:
            _, ev = self._q.popleft()
            cur = peek(ev.cgroup_id) if ev.cgroup_id else None
            if cur is not None and ev.container is not None and cur.id == ev.container.id:
                ev.container = cur
            out.append(ev)
        return out
