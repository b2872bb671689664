"""Folding of identical alerts that repeat fast.

Two alerts are *identical* when they have the same rule and the same output
string.  The first alert of a burst goes out at once and opens a window of
``window`` seconds for its key.  Identical alerts arriving while the window
is open are only counted.  When the window closes (driven by :meth:`tick`,
or lazily by the next identical alert):

* if repeats were counted, one alert carrying ``count=N`` (N = the number of
  folded occurrences) is emitted and a new window opens right away, so a
  sustained storm produces one alert per window;
* if nothing repeated, the key is forgotten and the next occurrence goes out
  at once again.

Nothing is lost: the ``count`` values of everything emitted add up to the
number of alerts received (plus the counts they already carried), and
:meth:`flush` emits whatever is still pending.

Times are monotonic seconds (``time.monotonic()`` by default), not the
alerts' own timestamps, so a clock jump cannot hold alerts back.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from typing import Callable, Optional

from vigil.alerts.alert import Alert, alert_id


class _Window:
    __slots__ = ("start", "first", "count")

    def __init__(self, start: float):
        self.start = start
        self.first: Optional[Alert] = None   # first folded repeat: the template
        self.count = 0                       # folded occurrences so far


class RateLimiter:
    """Folds identical alerts within ``window`` seconds; forwards to ``sink``.

    ``window <= 0`` disables folding (every alert passes straight through).
    At most ``max_keys`` keys are tracked; beyond that, new keys pass straight
    through (counted as ``untracked``) rather than growing memory without
    bound.
    """

    def __init__(self, sink: Optional[Callable[[Alert], None]] = None, window: float = 1.0,
                 max_keys: int = 100_000, clock: Callable[[], float] = time.monotonic,
                 batch_sink: Optional[Callable[[list], None]] = None):
        if window < 0:
            raise ValueError("window must be >= 0")
        self.sink = sink
        self.batch_sink = batch_sink    # preferred over sink when set: gets a list
        self.window = float(window)
        self.max_keys = int(max_keys)
        self.clock = clock
        self._windows: dict = {}
        self._oldest = float("inf")       # lower bound of every open window's start
        self._lock = threading.Lock()
        self._stats = {"received": 0, "passed": 0, "folded": 0, "folded_emitted": 0,
                       "untracked": 0}

    @staticmethod
    def key(alert: Alert) -> tuple:
        return (alert.rule, alert.output)

    # -- input ------------------------------------------------------------
    def emit(self, alert: Alert) -> None:
        """Take one alert; forwards it now or folds it into its key's window."""
        self.emit_many((alert,))

    def emit_many(self, alerts) -> None:
        """Take several alerts; whatever goes out is forwarded as one batch."""
        now = self.clock()
        out: list = []
        with self._lock:
            for alert in alerts:
                self._take(alert, now, out)
        self._send(out)

    def _take(self, alert: Alert, now: float, out: list) -> None:
        self._stats["received"] += 1
        if self.window <= 0:
            self._stats["passed"] += 1
            out.append(alert)
        else:
            k = self.key(alert)
            w = self._windows.get(k)
            if w is not None and now - w.start >= self.window:
                # window over but tick() has not run yet: close it first
                w = self._close_window(k, w, now, out)
            if w is None:
                # when full, pass through rather than scan every key per alert (a
                # flood of distinct alerts must stay cheap); tick() frees keys
                if len(self._windows) >= self.max_keys:
                    self._stats["untracked"] += 1
                else:
                    self._windows[k] = _Window(now)
                    self._oldest = min(self._oldest, now)
                self._stats["passed"] += 1
                out.append(alert)
            else:
                if w.first is None:
                    w.first = alert
                w.count += max(1, int(alert.count))
                self._stats["folded"] += 1

    def tick(self, now: Optional[float] = None) -> None:
        """Close every window older than ``window`` seconds at ``now``."""
        if now is None:
            now = self.clock()
        out = []
        with self._lock:
            self._expire(now, out)
        self._send(out)

    def flush(self) -> None:
        """Emit every pending folded alert now and forget all windows."""
        out = []
        with self._lock:
            for w in self._windows.values():
                if w.count:
                    out.append(self._folded(w))
            self._windows.clear()
            self._oldest = float("inf")
        self._send(out)

    def close(self, timeout: Optional[float] = None) -> None:
        self.flush()

    def stats(self) -> dict:
        with self._lock:
            d = dict(self._stats)
            d["keys"] = len(self._windows)
            d["pending"] = sum(w.count for w in self._windows.values())
        d["window"] = self.window
        return d

    # -- internals (called with the lock held) ------------------------------
    def _expire(self, now: float, out: list) -> None:
        if now - self._oldest < self.window:
            return                      # cheap tick: nothing can be due yet
        oldest = float("inf")
        for k, w in list(self._windows.items()):
            if now - w.start >= self.window:
                w = self._close_window(k, w, now, out)
            if w is not None:
                oldest = min(oldest, w.start)
        self._oldest = oldest

    def _close_window(self, k, w: _Window, now: float, out: list) -> Optional[_Window]:
        if w.count:
            out.append(self._folded(w))
            nw = _Window(now)          # storm continues: keep folding
            self._windows[k] = nw
            return nw
        del self._windows[k]
        return None

    def _folded(self, w: _Window) -> Alert:
        self._stats["folded_emitted"] += 1
        # a new alert (the repeats, not the first one already sent): its own id
        a = dataclasses.replace(w.first, count=w.count)
        a.uuid = alert_id(a)
        return a

    def _send(self, alerts: list) -> None:
        if not alerts:
            return
        if self.batch_sink is not None:
            self.batch_sink(alerts)
        elif self.sink is not None:
            for a in alerts:
                self.sink(a)
