"""The data path: sensors -> ring buffers -> events -> process/container state
-> handlers (rules, trace printer, capture ...).

The kernel writes two rings: the high-priority one (process lifecycle,
cgroups, marked events, loss records) is read first in every batch, then the
bulk one.  Batches are bounded (``BATCH`` records a ring), so signals and the
tickers keep their cadence however fast events come.  Loss records (a process
lost events: over its budget, or the bulk ring was full) go to the
``loss_handlers``, not to the event handlers.

A Pipeline is fed either live from the kernel (``start``/``run``) or from a
recorded stream (``feed``), and handles both the same way, which is what
makes replay give the same results as live.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Callable, Iterable, Optional

from vigil.events import Event, Kind
from vigil.events.decode import Decoder
from vigil.events import structs as S
from vigil.events.kinds import CGROUP_KINDS, LIFECYCLE, REC_LOSS
from vigil.kernel.filters import KernelFilters
from vigil.state.proctable import ProcessTable

log = logging.getLogger("vigil.pipeline")

# events that can replace a watched file (a new inode at a watched path)
_NAME_CHANGES = frozenset((Kind.RENAME, Kind.LINK, Kind.UNLINK, Kind.MKDIR))
_LOSS, _LOSS_NAMES = S.struct_format(S.EvLoss)
_KIND_OFF = S.EvHdr.kind.offset
_LOSS_SIZE = _LOSS.size


class Pipeline:
    DRAIN_SECONDS = 0.25     # at most this long reading what is left once told to stop
    TICK_SECONDS = 0.1      # tickers run this often from the event loop
    BATCH = 512             # records read from each ring before looking up (signals, ticks)

    def __init__(self, filters, *, proctable: Optional[ProcessTable] = None, containers=None,
                 seed: bool = True, ignore_children: bool = False):
        """``filters``: a KernelFilters, or just the event kinds wanted."""
        self.filters = filters if isinstance(filters, KernelFilters) else KernelFilters(filters)
        self.proctable = proctable if proctable is not None else ProcessTable()
        self.containers = containers
        self.handlers: list = []
        self.batch_end: list = []     # called after each batch read from the ring
        self.tickers: list = []
        self.loss_handlers: list = []   # fn(dict) for each loss record (struct ev_loss)
        # shared ring map name -> fn(buffer, offset) for its records, not events
        # (the L7 chunks of l7_events: vigil.l7.L7Tracker.on_raw)
        self.ring_handlers: dict = {}
        self.seed = seed
        # the agent also ignores what it runs itself (metadata helpers); a library
        # user that spawns the processes it wants to watch leaves this off
        self.filters.ignore_pid(os.getpid(), inherit=ignore_children)
        self.filters.always = self.needed_kinds()
        self.sensors = None
        self.ring = None
        self.decoder = Decoder()
        self.decoder.identity = self.filters.watched.name_of
        self.events = 0
        self.handler_errors = 0
        self.failed_by_kind: dict = {}  # kind label -> events a handler failed on (metrics)
        self.scope_dropped = 0      # events out of scope caught in user space
        self._stop = False
        self._pause = False
        self._last_tick = 0.0
        self._housekept = -1        # second of the last clock resync and reap
        self._hold = None
        if containers is not None:
            from vigil.state.containers.resolver import EventHold
            self._hold = EventHold(containers)

    # --- wiring ---

    def add_handler(self, fn: Callable[[Event], None]) -> None:
        self.handlers.append(fn)

    def add_ticker(self, fn: Callable[[float], None]) -> None:
        """fn(now) is called every TICK_SECONDS (100 ms) from the event loop."""
        self.tickers.append(fn)

    @property
    def kinds(self) -> set:
        return self.filters.kinds

    def needed_kinds(self) -> set:
        """Kinds the pipeline needs whatever is wanted: the process table's,
        and the cgroup events when it resolves containers."""
        kinds = set(LIFECYCLE)
        if self.containers is not None:
            kinds |= CGROUP_KINDS
        return kinds

    def kernel_kinds(self) -> set:
        return self.filters.kernel_kinds()

    # --- live ---

    def start(self) -> "Pipeline":
        if self.seed:
            self.proctable.seed_from_proc()
        self._start_sensors()
        return self

    def restart_sensors(self) -> None:
        """Reload the BPF side for a new set of kinds; state in user space stays."""
        if self.ring is not None:
            self.ring.consume(self.on_raw_hi, self.on_raw, at=True)
            self.ring.close()
            self.ring = None
        old = self.sensors
        self.sensors = None
        self.filters.detach()
        if old is not None:
            old.stop()
        self._start_sensors()

    def _start_sensors(self) -> None:
        """Load the sensors for kernel_kinds() and open the ring buffer readers."""
        from vigil.kernel.ringbuf import Rings
        from vigil.kernel.sensors import SensorManager

        f = self.filters
        # filters are set before any program is attached (configure=)
        sensors = SensorManager(self.kernel_kinds(), ringbuf_size=f.ringbuf_size,
                                ringbuf_hi_size=f.ringbuf_hi_size,
                                args_max=f.args_max, l7_ringbuf_size=f.l7_ringbuf_size,
                                l7_connections=f.l7_connections).start(configure=f.apply)
        sizes = {"l7_events": sensors.l7_ringbuf_size}
        try:
            side = [(sensors.maps[name].fd, sizes[name], fn)
                    for name, fn in self.ring_handlers.items()]
            self.ring = Rings((sensors.maps["events_hi"].fd, f.ringbuf_hi_size),
                              (sensors.maps["events"].fd, f.ringbuf_size), side)
        except BaseException:
            f.detach()
            sensors.stop()
            raise
        self.sensors = sensors

    def dropped_total(self) -> int:
        """Events the kernel lost (a ring full, no stash slot), since the sensors started."""
        return self.sensors.dropped_total() if self.sensors is not None else 0

    def losses(self) -> dict:
        """Events not sent since the sensors started, by reason (total of every kind)."""
        return self.sensors.losses() if self.sensors is not None else {}

    def kernel_stats(self) -> dict:
        return self.sensors.stats() if self.sensors is not None else {}

    def stop(self) -> None:
        self._stop = True
        if self.ring is not None:
            self.ring.close()
            self.ring = None
        if self.sensors is not None:
            self.filters.detach()
            self.sensors.stop()
            self.sensors = None

    def request_stop(self, *_args) -> None:
        """Stop for good (signal handlers; also before run() has started)."""
        self._stop = True

    def pause(self) -> None:
        """Make run() return without stopping (the agent swaps sensors then)."""
        self._pause = True

    def run(self, duration: Optional[float] = None) -> None:
        """Consume events until request_stop() or duration seconds."""
        deadline = time.monotonic() + duration if duration else None
        ring = self.ring
        on_raw, on_hi = self.on_raw, self.on_raw_hi
        batch = self.BATCH
        self._pause = False
        batch_end = self.batch_end
        while not (self._stop or self._pause):
            if ring.poll(on_hi, on_raw, self.TICK_SECONDS, limit=batch, at=True):
                for fn in batch_end:
                    fn()
            now = time.monotonic()
            if now - self._last_tick >= self.TICK_SECONDS:
                self._tick(now)
            if deadline is not None and now >= deadline:
                break
        # what is already in the rings still goes through, for at most
        # DRAIN_SECONDS (an agent told to stop under load must stop)
        end = time.monotonic() + self.DRAIN_SECONDS
        while ring.consume(on_hi, on_raw, limit=batch, at=True) and time.monotonic() < end:
            pass
        self._tick(time.monotonic())
        self.release_held(flush=True)
        for fn in batch_end:
            fn()

    def drain(self, settle: float = 0.05) -> int:
        """Consume what is in the ring now (tests and benchmarks)."""
        n = 0
        while True:
            k = self.ring.consume(self.on_raw_hi, self.on_raw, at=True)
            n += k
            if not k:
                if settle <= 0:
                    self.release_held(flush=True)
                    return n
                time.sleep(settle)
                settle = 0

    def _tick(self, now: float) -> None:
        self._last_tick = now
        self.release_held()
        self.filters.tick(now)
        for fn in self.tickers:
            try:
                fn(now)
            except Exception:
                log.exception("ticker failed")
        # every 10 s; ticks come every 100 ms, so only the first in that second
        sec = int(now)
        if sec % 10 == 0 and sec != self._housekept:
            self._housekept = sec
            self.decoder.resync_clock()
            self.proctable.reap()

    def on_raw(self, raw, offset: int = 0) -> None:
        ev = self.decoder.decode(raw, offset)
        if ev is not None:
            self.process(ev)

    def on_raw_hi(self, raw, offset: int = 0) -> None:
        """A record of the high-priority ring: an event, or a loss record."""
        try:
            kind = int.from_bytes(raw[offset + _KIND_OFF:offset + _KIND_OFF + 4], "little")
        except (TypeError, ValueError):
            kind = 0
        if kind != REC_LOSS:
            self.on_raw(raw, offset)
            return
        try:
            rec = dict(zip(_LOSS_NAMES, _LOSS.unpack_from(raw, offset)))
        except Exception:
            self.decoder.errors += 1
            return
        rec["comm"] = rec["comm"].split(b"\0", 1)[0].decode("utf-8", "replace")
        for fn in self.loss_handlers:
            try:
                fn(rec)
            except Exception:
                log.exception("loss record handler failed")

    # --- shared by live and replay ---

    def process(self, ev: Event) -> None:
        """Enrich one event and hand it to every handler; never raises."""
        self.events += 1
        try:
            kind = ev.kind
            if kind in CGROUP_KINDS:
                if self.containers is not None:
                    if kind == Kind.CGROUP_MKDIR:
                        self.containers.on_cgroup_mkdir(ev.cgroup_id, ev.path)
                    else:
                        self.containers.on_cgroup_rmdir(ev.cgroup_id, ev.path)
                return
            if kind in _NAME_CHANGES:
                self.filters.watched.note_event(ev)
            ev.proc = self.proctable.update(ev)
            if self._hold is not None:
                for out in self._hold.push(ev):
                    self._dispatch(out)
            else:
                self._dispatch(ev)
        except Exception:
            self._failed(ev)

    def _dispatch(self, ev: Event) -> None:
        # the kernel decides host/container by pid namespace, as cheaply as it can;
        # here the cgroup (container identity) must agree: runc's set-up stages run
        # in a container's cgroup but the host's pid namespace
        scope = self.filters.scope
        if scope != "all" and ev.container is not None:
            c = ev.container
            if (scope == "host" and c.is_container) or (scope == "containers" and c.is_host):
                self.scope_dropped += 1
                return
        try:
            for h in self.handlers:
                h(ev)
        except Exception:
            self._failed(ev)

    def _failed(self, ev: Event) -> None:
        self.handler_errors += 1
        self.failed_by_kind[ev.type] = self.failed_by_kind.get(ev.type, 0) + 1
        if self.handler_errors <= 10 or self.handler_errors % 1000 == 0:
            log.exception("event %s from pid %s could not be handled (%d so far)",
                          ev.type, ev.pid, self.handler_errors)

    def release_held(self, flush: bool = False) -> None:
        """Events waiting for container metadata whose time is up (or all)."""
        if self._hold is not None:
            for ev in (self._hold.flush() if flush else self._hold.poll()):
                self._dispatch(ev)

    def feed(self, events: Iterable[Event]) -> None:
        for ev in events:
            self.process(ev)
        self.release_held(flush=True)

    def stats(self) -> dict:
        out = {"events": self.events, "decode_errors": self.decoder.errors,
               "handler_errors": self.handler_errors, "scope_dropped": self.scope_dropped,
               "procs": len(self.proctable)}
        if self.sensors is not None:
            out["kernel"] = self.sensors.stats()
            out["dropped"] = self.sensors.dropped_total()
            out["over_budget"] = sum(v.get("over_budget", 0) for v in out["kernel"].values())
        if self.ring is not None:
            out["rings"] = self.ring.stats()
        return out
