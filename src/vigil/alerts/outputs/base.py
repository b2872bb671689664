"""The output interface and the dispatcher that fans alerts out to outputs.

Delivery order for one alert is fixed:

1. the embedded alert store (if any) -- the alert is committed to SQLite
   before anything leaves the node, so a crash never loses an alert that
   some remote system already saw;
2. every configured output, in order.

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

from vigil.alerts.alert import FALCO_JSON, Alert

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

    def emit(self, alert: Alert) -> Optional[bool]:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self, timeout: Optional[float] = None) -> None:
        """Release resources.  Outputs with queues drain best-effort for ``timeout`` s."""

    def stats(self) -> dict:
        return {}


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
        self._write_store(alerts)
        for alert in alerts:
            for name, out in zip(self._names, self.outputs):
                self._emit_one(name, out, alert)

    def _write_store(self, alerts: list) -> None:
        if self.store is None:
            return
        try:
            if len(alerts) > 1 and hasattr(self.store, "add_many"):
                self.store.add_many(alerts)
            else:
                for a in alerts:
                    self.store.add(a)
        except Exception as exc:  # a broken store must not stop delivery
            with self._lock:
                self._store_counts["failed"] += len(alerts)
                n = self._store_counts["failed"]
            if n == len(alerts) or n % _LOG_EVERY < len(alerts):
                log.warning("alert store write failed (%d so far): %s", n, exc)
        else:
            with self._lock:
                self._store_counts["written"] += len(alerts)

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
