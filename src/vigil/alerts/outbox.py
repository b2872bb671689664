"""Delivery from the alert store: one :class:`Outbox` per durable output.

The store is the outbox.  Each durable output (file, syslog, webhook) has a
cursor in the store's ``outbox`` table -- the id of the last alert it
delivered -- written on the output's first start (so a crash right after
start loses nothing) and advanced as alerts go out.  Alerts are delivered
in id order, at least once:

* A worker thread reads the store in batches after the cursor and hands
  each alert to :meth:`Output.send`.  A failure is retried with exponential
  backoff (``backoff`` doubling up to ``max_backoff``, or the receiver's
  Retry-After within that cap) for as long as it takes: no retry limit ever
  drops an alert.  Only the store's retention removes one that was never
  delivered (the next read no longer finds it).  An alert the receiver
  rejects for good (:class:`Rejected`, e.g. HTTP 400) is logged and passed.
* An ``inline`` output (file, syslog: local and quick) is handed new alerts
  by the dispatcher in the agent's thread while it is caught up; after a
  failure the worker owns delivery until it has caught up again.  Its
  cursor is written with the store's next insert (no commit of its own).
* At close, the worker keeps delivering what it can until the deadline; an
  output that is failing stops at once.  Whatever is left waits in the store
  for the next start, which resumes from the persisted cursor (an alert sent
  but not yet recorded as sent is sent again: receivers de-duplicate by the
  alert's ``uuid``).
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Optional

from vigil.alerts.outputs.base import Output, Rejected, RetryAfter

log = logging.getLogger(__name__)

BATCH = 500                 # alerts per store read
_LOG_EVERY = 100            # log the first failure in a row, then one in this many


class Outbox:
    def __init__(self, out: Output, name: str, store, count: Callable[[str, str], None]):
        self.out = out
        self.name = name
        self.key = out.outbox_key
        self.store = store
        self._count = count
        self.cursor = store.cursor(self.key)
        self._cond = threading.Condition()
        self._wake = threading.Event()      # set by close(): ends a backoff sleep
        # a backlog from before (receiver down, a restart): the worker delivers
        # it; else an inline output is handed alerts from the first one
        backlog = bool(store.read_after(self.cursor, 1))
        self._worker_owns = backlog or not out.inline
        self._pending = backlog             # the store may hold alerts after the cursor
        self._closing = False
        self._deadline: Optional[float] = None
        self._failing = False
        self._failures_in_a_row = 0
        self.delivered = 0
        self.rejected = 0
        self._thread = threading.Thread(target=self._run, name=f"vigil-outbox-{name}",
                                        daemon=True)
        self._thread.start()

    # -- the dispatcher's side ----------------------------------------------------
    def offer(self, stored: list) -> None:
        """Alerts just committed to the store, as ``[(id, alert)]``."""
        with self._cond:
            if self._closing:
                return
            if self._worker_owns or not self.out.inline:
                self._pending = True
                self._cond.notify()
                return
            last = self.cursor
            for aid, alert in stored:
                if aid <= last:
                    continue
                try:
                    self.out.send(alert)
                except Rejected as exc:
                    self._rejected(exc)
                except Exception as exc:
                    self._failed(exc)
                    self._worker_owns = self._pending = True
                    self._cond.notify()
                    break
                else:
                    self._sent()
                last = aid
            if last != self.cursor:
                self.cursor = last
                self.store.advance(self.key, last)

    def close(self, timeout: Optional[float]) -> None:
        """Deliver what can be delivered within ``timeout`` s, then stop."""
        with self._cond:
            self._closing = True
            self._deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
            self._cond.notify()
        self._wake.set()
        self._thread.join(timeout)
        try:
            self.store.advance(self.key, self.cursor, commit=True)
        except Exception as exc:
            log.warning("output %s: cannot record its cursor: %s", self.name, exc)

    def stats(self) -> dict:
        return {"cursor": self.cursor, "failing": self._failing, "rejected": self.rejected,
                "waiting": bool(self._worker_owns and self._pending or self._failing)}

    # -- the worker -------------------------------------------------------------------
    def _time_left(self) -> Optional[float]:
        return None if self._deadline is None else self._deadline - time.monotonic()

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while not (self._pending or self._closing):
                        self._cond.wait()
                    self._pending = False
                if not self._drain():
                    return
                with self._cond:
                    if self._closing and not self._pending:
                        return
                    if self.out.inline and not self._pending:
                        # under the lock: a row committed before this read is
                        # seen here, one committed after is offered inline
                        if not self.store.read_after(self.cursor, 1):
                            self._worker_owns = False
        except Exception as exc:    # a closed store at exit; never a traceback
            if not self._closing:
                log.warning("output %s: delivery from the store stopped: %s", self.name, exc)

    def _drain(self) -> bool:
        """Deliver everything after the cursor; False when closing ends it."""
        while True:
            batch = self.store.read_after(self.cursor, BATCH)
            if not batch:
                return True
            for aid, alert in batch:
                left = self._time_left()
                if left is not None and left <= 0:
                    return False
                try:
                    self.out.send(alert, timeout=left)
                except Rejected as exc:
                    self._rejected(exc)
                except Exception as exc:
                    delay = self._failed(exc)
                    self._advance()
                    if self._closing or not self._sleep(delay):
                        return False
                    break       # read again from the cursor: retention may have moved on
                else:
                    self._sent()
                self.cursor = aid
            self._advance()

    def _advance(self) -> None:
        self.store.advance(self.key, self.cursor, commit=True)

    def _sleep(self, delay: float) -> bool:
        """Back off; False if close() came meanwhile."""
        return not self._wake.wait(delay)

    # -- counting ---------------------------------------------------------------------
    def _sent(self) -> None:
        if self._failing:
            log.warning("output %s: delivering again after %d failed attempts", self.name,
                        self._failures_in_a_row)
        self._failing = False
        self._failures_in_a_row = 0
        self.delivered += 1
        self._count(self.name, "sent")

    def _rejected(self, exc: Exception) -> None:
        self.rejected += 1
        self._count(self.name, "failed")
        log.warning("output %s: alert rejected, not retried: %s", self.name, exc)

    def _failed(self, exc: Exception) -> float:
        """Count a failed attempt; the delay before the next one."""
        self._failing = True
        n = self._failures_in_a_row = self._failures_in_a_row + 1
        self._count(self.name, "failed")
        delay = min(self.out.max_backoff, self.out.backoff * 2 ** min(n - 1, 30))
        if isinstance(exc, RetryAfter) and exc.delay is not None:
            delay = min(self.out.max_backoff, max(delay, exc.delay))
        if n == 1 or n % _LOG_EVERY == 0:
            log.warning("output %s failed (%d in a row; retrying in %.1fs, the alerts wait "
                        "in the store): %s", self.name, n, delay, exc)
        return delay


__all__ = ["Outbox", "RetryAfter", "Rejected", "BATCH"]
