"""The output interface and the dispatcher that fans alerts out to outputs.

Delivery order for one alert is fixed:

1. the embedded alert store (if any) -- the alert is committed to SQLite
   before anything leaves the node, so a crash never loses an alert that
   some remote system already saw;
2. every configured output, in order.

Every alert has its stable id (``uuid``, :func:`vigil.alerts.alert.alert_id`)
before the store.  With a store, the outputs that can fail (``durable``: file, syslog,
webhook) deliver *from the store* through their :class:`vigil.alerts.outbox.
Outbox`, each with its own persisted cursor: retried with backoff until
delivered, across restarts (at-least-once).  Outputs that cannot fail
(stdout) are handed each alert at once.  Without a store (or when writing
it fails) every output is handed the alert in memory, as before.

An output that raises never affects the other outputs and never raises into
the caller; the dispatcher counts, per output, how many alerts were handed
over (``sent``), how many raised (``failed``) and how many the output itself
refused, e.g. because its queue was full (``dropped``).
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Iterable, Optional, Sequence

from vigil.alerts.alert import FALCO_JSON, Alert, alert_id

log = logging.getLogger(__name__)

# Log the first failure of an output, then one in this many, so that a dead
# syslog daemon cannot flood the agent's own log.
_LOG_EVERY = 1000


class Output:
    """Base class of every alert output.

    ``emit`` returns ``True`` (or ``None``) when the output accepted the alert
    and ``False`` when it refused it without trying (e.g. a full queue); it
    raises on delivery errors.  ``close`` releases resources; ``stats``
    returns the output's own counters.
    """

    #: short name used in stats and logs; instances may override it
    name: str = "output"
    #: the JSON alert's optional properties (json_include_* of vigil.yaml)
    json_shape = FALCO_JSON
    #: with a store, deliver from it with a persisted cursor (see the module doc)
    durable: bool = False
    #: a durable output the dispatcher may hand alerts to in its own thread
    #: while nothing is waiting (quick, local); else only the outbox's thread
    inline: bool = True
    #: the outbox's retry backoff: first delay and cap, in seconds
    backoff: float = 0.5
    max_backoff: float = 30.0

    def emit(self, alert: Alert) -> Optional[bool]:  # pragma: no cover - interface
        raise NotImplementedError

    def send(self, alert: Alert, timeout: Optional[float] = None) -> None:
        """Deliver one alert now, for the outbox: returns when delivered,
        raises :class:`Rejected` for an alert the receiver will never take,
        any other exception to be retried (``timeout``: at most this long)."""
        if self.emit(alert) is False:
            raise RuntimeError(f"output {self.name} refused the alert")

    @property
    def outbox_key(self) -> str:
        """The cursor's name in the store: the output and where it sends."""
        return self.name

    def close(self, timeout: Optional[float] = None) -> None:
        """Release resources.  Outputs with queues drain best-effort for ``timeout`` s."""

    def stats(self) -> dict:
        return {}


class Rejected(Exception):
    """The receiver answered that it will never take this alert (e.g. HTTP 400):
    retrying cannot help, the outbox moves on (and counts it as failed)."""


class RetryAfter(Exception):
    """A failed delivery whose receiver said when to come back (seconds, or None)."""

    def __init__(self, why: str, delay: Optional[float] = None):
        super().__init__(why)
        self.delay = delay


class OutputDispatcher:
    """Writes each alert to the store first, then to every output.

    ``store`` is anything with ``add(alert)`` (and optionally ``add_many``),
    normally a :class:`vigil.store.AlertStore`.
    """

    def __init__(self, outputs: Sequence[Output] = (), store=None):
        self.store = store
        self.outputs = list(outputs)
        self._names = _unique_names(self.outputs)
        self._lock = threading.Lock()
        self._counts = {n: {"sent": 0, "failed": 0, "dropped": 0} for n in self._names}
        self._store_counts = {"written": 0, "failed": 0}
        self.received = 0
        self._closed = False
        self._outboxes: dict = {}           # name -> Outbox, for durable outputs
        if store is not None and hasattr(store, "read_after"):
            self._open_outboxes()

    def _open_outboxes(self) -> None:
        from vigil.alerts.outbox import Outbox
        for name, out in zip(self._names, self.outputs):
            if not getattr(out, "durable", False):
                continue
            try:
                self._outboxes[name] = Outbox(out, name, self.store, self._count)
            except Exception as exc:   # a broken store: in-memory delivery, as without one
                log.warning("output %s: cannot deliver from the alert store (%s); "
                            "alerts go to it directly", name, exc)

    def _count(self, name: str, what: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name][what] += n

    # -- delivery ---------------------------------------------------------
    def emit(self, alert: Alert) -> None:
        """Deliver one alert: store, then outputs.  Never raises."""
        self.emit_batch((alert,))

    def emit_batch(self, alerts: Iterable[Alert]) -> None:
        """Deliver several alerts with a single store transaction.  Never raises."""
        alerts = list(alerts)
        if not alerts:
            return
        with self._lock:
            self.received += len(alerts)
        for a in alerts:
            if not a.uuid:
                a.uuid = alert_id(a)
        ids = self._write_store(alerts)
        from_store = self._outboxes if ids is not None else {}
        for alert in alerts:
            for name, out in zip(self._names, self.outputs):
                if name not in from_store:
                    self._emit_one(name, out, alert)
        if from_store:
            stored = list(zip(ids, alerts))
            for ob in from_store.values():
                ob.offer(stored)

    def _write_store(self, alerts: list) -> Optional[list]:
        """The alerts' ids in the store, or None (no store, or it failed)."""
        if self.store is None:
            return None
        try:
            if hasattr(self.store, "add_many"):
                ids = self.store.add_many(alerts)
            else:
                ids = [self.store.add(a) for a in alerts]
        except Exception as exc:  # a broken store must not stop delivery
            with self._lock:
                self._store_counts["failed"] += len(alerts)
                n = self._store_counts["failed"]
            if n == len(alerts) or n % _LOG_EVERY < len(alerts):
                log.warning("alert store write failed (%d so far): %s", n, exc)
            return None
        with self._lock:
            self._store_counts["written"] += len(alerts)
        return ids

    def _emit_one(self, name: str, out: Output, alert: Alert) -> None:
        try:
            ok = out.emit(alert)
        except Exception as exc:
            with self._lock:
                c = self._counts[name]
                c["failed"] += 1
                n = c["failed"]
            if n == 1 or n % _LOG_EVERY == 0:
                log.warning("output %s failed (%d so far): %s", name, n, exc)
            return
        with self._lock:
            self._counts[name]["dropped" if ok is False else "sent"] += 1

    # -- lifecycle --------------------------------------------------------
    def close(self, timeout: Optional[float] = 5.0) -> None:
        """Close every output (sharing ``timeout`` among them), then the store."""
        if self._closed:
            return
        self._closed = True
        deadline = None if timeout is None else time.monotonic() + timeout
        for ob in self._outboxes.values():
            ob.close(None if deadline is None else max(0.0, deadline - time.monotonic()))
        for name, out in zip(self._names, self.outputs):
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                out.close(left)
            except Exception as exc:
                log.warning("closing output %s failed: %s", name, exc)
        if self.store is not None and hasattr(self.store, "close"):
            try:
                self.store.close()
            except Exception as exc:
                log.warning("closing alert store failed: %s", exc)

    def stats(self) -> dict:
        """``{"received", "store": {...}, "outputs": {name: {sent, failed, dropped, details}}}``."""
        with self._lock:
            outs = {n: dict(c) for n, c in self._counts.items()}
            store = dict(self._store_counts)
            received = self.received
        for name, out in zip(self._names, self.outputs):
            try:
                outs[name]["details"] = out.stats()
            except Exception as exc:  # pragma: no cover - defensive
                outs[name]["details"] = {"error": str(exc)}
            if name in self._outboxes:
                outs[name]["outbox"] = self._outboxes[name].stats()
        if self.store is not None and hasattr(self.store, "stats"):
            try:
                store.update(self.store.stats())
            except Exception as exc:  # pragma: no cover - defensive
                store["error"] = str(exc)
        return {"received": received, "store": store if self.store is not None else None,
                "outputs": outs}


class AlertPipeline:
    """What the agent holds: optional rate limiter in front of a dispatcher.

    ``emit`` may be called for every alert the rules engine produces;
    ``tick`` should be called from the agent's loop (it expires rate-limit
    windows); ``close`` flushes folded alerts and closes everything.
    """

    def __init__(self, dispatcher: OutputDispatcher, limiter=None):
        self.dispatcher = dispatcher
        self.limiter = limiter
        if limiter is not None:
            limiter.batch_sink = dispatcher.emit_batch

    @property
    def store(self):
        return self.dispatcher.store

    def emit(self, alert: Alert) -> None:
        self.emit_batch((alert,))

    def emit_batch(self, alerts) -> None:
        """Several alerts at once: one store transaction for what goes out."""
        try:
            if self.limiter is not None:
                self.limiter.emit_many(alerts)
            else:
                self.dispatcher.emit_batch(alerts)
        except Exception as exc:  # pragma: no cover - dispatcher never raises
            log.warning("alert pipeline error: %s", exc)

    def tick(self, now: Optional[float] = None) -> None:
        if self.limiter is not None:
            self.limiter.tick(now)
        store = self.dispatcher.store
        if store is not None and hasattr(store, "maybe_enforce_retention"):
            try:
                store.maybe_enforce_retention()
                store.flush_cursors()      # the inline outputs' progress, when idle
            except Exception as exc:
                log.warning("alert store retention failed: %s", exc)

    def flush(self) -> None:
        if self.limiter is not None:
            self.limiter.flush()

    def close(self, timeout: Optional[float] = 5.0) -> None:
        self.flush()
        self.dispatcher.close(timeout)

    def stats(self) -> dict:
        d = self.dispatcher.stats()
        if self.limiter is not None:
            d["rate_limit"] = self.limiter.stats()
        return d


def _unique_names(outputs: Sequence[Output]) -> list:
    names, seen = [], {}
    for out in outputs:
        base = getattr(out, "name", None) or type(out).__name__.lower()
        n = seen.get(base, 0)
        seen[base] = n + 1
        names.append(base if n == 0 else f"{base}.{n + 1}")
    return names
