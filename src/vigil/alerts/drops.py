"""Lost events are alerts: Falco's "Falco internal: syscall event drop".

The kernel counts every event it could not send (a ring full, no stash slot,
over its process's budget; vigil.kernel.counters), and names the processes
that lost events in loss records on the high-priority ring.  A
:class:`DropReporter` looks at the loss total on every tick of the event loop
(one map lookup per reason); when it grew, it raises one alert through the
normal alert pipeline (store, then outputs) -- by kind, by ring, and the top
offending processes -- and logs a line.  Reports are rate-limited with a
token bucket as Falco's ``syscall_event_drops`` (``rate`` reports a second,
``max_burst`` at once): what is not reported yet is in the next report.
"""
from __future__ import annotations

import logging
import time
from typing import Callable, Optional

from vigil.alerts.alert import Alert

log = logging.getLogger("vigil.drops")

RULE = "Falco internal: syscall event drop"
PRIORITY = "critical"          # Falco's drop alert is Critical
ACTIONS = ("ignore", "log", "alert")
DEFAULTS = {"actions": ["log", "alert"], "rate": 0.03333, "max_burst": 1}
TOP = 5                        # offending processes named in a report
MAX_PROCS = 10_000             # processes remembered between two reports
# a loss is counted in the kernel just before its loss record goes on the
# high-priority ring: a tick between the two waits this long for the record
# so the report names who lost events
RECORD_GRACE = 0.3

# loss reasons (vigil.kernel.counters.losses) -> Falco-style output field
_FIELDS = (("dropped", "n_drops_buffer"), ("dropped_hi", "n_drops_buffer_hi"),
           ("over_budget", "n_drops_budget"), ("no_stash", "n_drops_stash"))


class DropReporter:
    """Turns the kernel's loss counters into rate-limited drop alerts.

    ``losses()`` gives the totals by reason, ``by_kind()`` the per-kind
    counters (vigil.kernel.counters); ``emit(alert)`` is the alert
    pipeline's."""

    def __init__(self, losses: Callable[[], dict], by_kind: Callable[[], dict],
                 emit: Callable[[Alert], None], actions=("log", "alert"),
                 rate: float = DEFAULTS["rate"], max_burst: int = DEFAULTS["max_burst"],
                 clock: Callable[[], float] = time.monotonic):
        self.losses, self.by_kind, self.emit = losses, by_kind, emit
        self.actions = frozenset(actions) - {"ignore"}
        self.rate = float(rate)
        self.max_burst = max(1, int(max_burst))
        self.clock = clock
        self._tokens = float(self.max_burst)
        self._last_refill = clock()
        self._last_report = clock()
        self._reported = {}          # reason -> total at the last report
        self._kinds_reported = {}    # kind -> {slot: total} at the last report
        self._procs = {}             # pid -> [comm, total now, total at the last report]
        self._waiting_since = None   # losses seen, no loss record yet (RECORD_GRACE)
        self.reports = 0
        self.alerts = 0

    def reset(self) -> None:
        """New sensors (their counters start at 0 again)."""
        self._reported = {}
        self._kinds_reported = {}

    # --- input ---

    def on_record(self, rec: dict) -> None:
        """A loss record from the kernel: this process lost events so far."""
        pid = rec["pid"]
        total = rec["over_budget"] + rec["lost"]
        p = self._procs.get(pid)
        if p is None:
            if len(self._procs) >= MAX_PROCS:
                return
            self._procs[pid] = [rec["comm"], total, 0]
        else:
            p[0] = rec["comm"]
            p[1] = max(p[1], total)

    def tick(self, now: Optional[float] = None) -> bool:
        """Report if events were lost since the last report and the rate
        allows; True when it reported."""
        if not self.actions:
            return False
        now = self.clock() if now is None else now
        totals = self.losses()
        delta = {r: n - self._reported.get(r, 0) for r, n in totals.items()}
        if sum(delta.values()) <= 0:
            return False
        if not any(t > r for _, t, r in self._procs.values()):
            if self._waiting_since is None:
                self._waiting_since = now
            if now - self._waiting_since < RECORD_GRACE:
                return False
        if not self._take_token(now):
            return False
        self._waiting_since = None
        self._report(now, totals, delta)
        return True

    # --- reporting ---

    def _take_token(self, now: float) -> bool:
        self._tokens = min(self.max_burst, self._tokens + (now - self._last_refill) * self.rate)
        self._last_refill = now
        if self._tokens < 1 - 1e-9:     # (float sums: 10 x 0.1 < 1)
            return False
        self._tokens -= 1
        return True

    def _kind_deltas(self) -> tuple:
        """({kind: events lost since the last report}, events sent since then)."""
        rows = self.by_kind()
        lost, sent = {}, 0
        for kind, row in rows.items():
            before = self._kinds_reported.get(kind, {})
            d = {k: v - before.get(k, 0) for k, v in row.items()}
            sent += d.get("sent", 0)
            n = sum(v for k, v in d.items() if k != "sent")
            if n > 0:
                lost[kind] = n
        self._kinds_reported = rows
        return lost, sent

    def _top(self) -> list:
        """[(pid, comm, events lost since the last report)], most first."""
        out = []
        for pid, (comm, total, at_report) in self._procs.items():
            if total > at_report:
                out.append((pid, comm, total - at_report))
        out.sort(key=lambda t: -t[2])
        # forget who lost nothing since the last report; the rest starts anew
        self._procs = {pid: [c, t, t] for pid, (c, t, r) in self._procs.items() if t > r}
        return out[:TOP]

    def _report(self, now: float, totals: dict, delta: dict) -> None:
        n = sum(delta.values())
        seconds = max(now - self._last_report, 0.001)
        by_kind, sent = self._kind_deltas()
        top = self._top()
        self._reported = dict(totals)
        self._last_report = now
        self.reports += 1
        kinds = " ".join(f"{k}={v}" for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1]))
        procs = " ".join(f"{comm}[{pid}]={count}" for pid, comm, count in top)
        fields = {"n_drops": n, "n_evts": sent}
        for reason, name in _FIELDS:
            fields[name] = delta.get(reason, 0)
        fields["vigil.drops.by_kind"] = kinds
        fields["vigil.drops.top_procs"] = procs
        fields["vigil.drops.seconds"] = round(seconds, 3)
        text = (f"Falco internal: syscall event drop. {n} system calls dropped in the last "
                f"{seconds:.1f}s (n_drops={n} n_evts={sent} "
                + " ".join(f"{name}={fields[name]}" for _, name in _FIELDS)
                + f" by_kind=[{kinds}] top_procs=[{procs}])")
        if "log" in self.actions:
            log.warning("%s", text)
        if "alert" in self.actions:
            self.alerts += 1
            self.emit(Alert(time=time.time_ns(), rule=RULE, priority=PRIORITY, output=text,
                            output_fields=fields, tags=[]))

    def stats(self) -> dict:
        return {"reports": self.reports, "alerts": self.alerts}
