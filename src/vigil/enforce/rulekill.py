"""Rules that enforce: ``enforce: kill`` kills the process an alert is about,
from user space (docs/POLICY.md, "Rules that kill").

The kill goes through a pidfd opened when the event is handled, after
checking that the pid still names the process of the event (its start time,
from /proc/<pid>/stat, is the one vigil knows, and it started before the
event), so a reused pid is never killed.  The delay from the event's kernel
timestamp to the signal is measured and reported in the kill's alert
(``vigil.kill_delay_ms``) and in the stats.  vigil itself, pid 1 and the
protected names (``enforce.protected``) are never killed.
"""
from __future__ import annotations

import logging
import os
import signal
import time
from typing import Optional

from vigil.alerts.alert import Alert, alert_id
from vigil.enforce.events import context_fields

log = logging.getLogger("vigil.enforce.rulekill")

RULE_KILLED = "Process killed by rule"
CLK_TCK = os.sysconf("SC_CLK_TCK")
TICK_NS = 1_000_000_000 // CLK_TCK


def _stat_start_ns(pid: int) -> Optional[int]:
    """CLOCK_BOOTTIME ns at which pid started (/proc/<pid>/stat starttime), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        return int(data[data.rindex(b")") + 2:].split()[19]) * TICK_NS
    except (OSError, ValueError, IndexError):
        return None


class RuleKiller:
    def __init__(self, protected=()):
        self.protected = frozenset(protected)
        self.kills = 0
        self.skipped = 0         # protected, vigil itself, pid 1
        self.missed = 0          # gone (or its pid reused) before the kill
        self.delays_ms: list = []   # the last kills' delays
        self.max_delay_ms = 0.0

    def kill(self, ev, alert) -> Optional[Alert]:
        """Kill the process of ``ev`` (which made ``alert``); the kill's alert, or None."""
        pid = ev.pid or 0
        proc = ev.proc
        name = (proc.comm if proc is not None and proc.comm else ev.comm) or ""
        if pid <= 1 or pid == os.getpid() or name in self.protected or \
                (ev.comm or "") in self.protected:
            self.skipped += 1
            log.warning("rule '%s' (enforce: kill): not killing protected process %s (%d)",
                        alert.rule, name, pid)
            return None
        boot_now = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        event_boot = boot_now - (time.time_ns() - (ev.time or 0))
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            self.missed += 1
            return None
        try:
            started = _stat_start_ns(pid)
            known = (proc.start_time or 0) if proc is not None else 0
            if known:
                known -= time.time_ns() - time.clock_gettime_ns(time.CLOCK_BOOTTIME)
            same = started is not None and started <= event_boot + TICK_NS and \
                (not known or abs(started - known) <= 2 * TICK_NS)
            if not same:
                self.missed += 1
                log.info("rule '%s' (enforce: kill): pid %d is no longer the process of the "
                         "event; not killed", alert.rule, pid)
                return None
            signal.pidfd_send_signal(fd, signal.SIGKILL)
        except ProcessLookupError:
            self.missed += 1
            return None
        finally:
            os.close(fd)
        delay_ms = round((time.clock_gettime_ns(time.CLOCK_BOOTTIME) - event_boot) / 1e6, 3)
        self.kills += 1
        self.max_delay_ms = max(self.max_delay_ms, delay_ms)
        self.delays_ms = (self.delays_ms + [delay_ms])[-100:]
        return self._alert(ev, alert, delay_ms)

    @staticmethod
    def _alert(ev, alert, delay_ms: float) -> Alert:
        exe = (ev.proc.exe if ev.proc is not None else "") or ev.exe or ""
        fields = context_fields(ev)
        fields.update({"vigil.rule": alert.rule, "vigil.verdict": "kill",
                       "vigil.kill_delay_ms": delay_ms, "proc.exepath": exe or None,
                       "vigil.binary": exe or None})
        output = (f"{RULE_KILLED}: {exe or fields.get('proc.name', '?')} "
                  f"(rule={alert.rule} pid={ev.pid} delay={delay_ms}ms)")
        a = Alert(time=time.time_ns(), rule=RULE_KILLED, priority="critical", output=output,
                  output_fields={k: v for k, v in fields.items() if v is not None},
                  tags=["process", "enforcement", "vigil"], event=ev)
        a.uuid = alert_id(a)
        return a

    def stats(self) -> dict:
        d = self.delays_ms
        return {"rule_kills": self.kills, "rule_kills_skipped": self.skipped,
                "rule_kills_missed": self.missed,
                "rule_kill_delay_ms_last": d[-1] if d else None,
                "rule_kill_delay_ms_median": sorted(d)[len(d) // 2] if d else None,
                "rule_kill_delay_ms_max": self.max_delay_ms if d else None}


__all__ = ["RuleKiller", "RULE_KILLED"]
