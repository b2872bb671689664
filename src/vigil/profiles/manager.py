"""The agent's profile handler: learn each workload's normal, alert on drift.

``on_event`` runs for every event of the kinds profiles need: the workload
identity is cached per container (per executable for the host), the profile is
one dict lookup, and each value one set lookup (a file: one per path
component), so the cost does not grow with the profile (bench/bench_profiles.py).

``tick`` (the event loop's, ~10/s) ends learning windows, marks the learning
profiles partial when the kernel dropped events, applies the command line's
requests, writes the changed profiles every ``flush_interval`` and keeps the
agent's heartbeat for the command line.
"""
from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import Callable, Optional

from vigil.alerts.alert import Alert
from vigil.config.units import parse_duration
from vigil.events import Kind
from vigil.profiles.book import ProfileBook, apply_request
from vigil.profiles.observe import KINDS, container_identity, host_identity, values
from vigil.profiles.profile import ALERTED, LEARNING, Profile

log = logging.getLogger("vigil.profiles")

RULES = {"exec": "Unexpected process in workload", "egress": "Unexpected egress",
         "dns": "Unexpected egress", "file": "Unexpected file access",
         "listen": "Unexpected listening port"}
WHAT = {"exec": "process", "egress": "connection to", "dns": "DNS query for",
        "file": "file opened", "listen": "listening on"}
COOLDOWN_KEYS_MAX = 100_000
RUNNING_SLACK_NS = 2_000_000_000     # a container started this long before learning: missed


def value_text(category: str, value) -> str:
    if category == "exec":
        return value[0]
    if category == "egress":
        addr, port, proto = value
        return f"{'[' + addr + ']' if ':' in addr else addr}:{port}/{proto}"
    if category == "listen":
        return f"{value[0]}/{value[1]}"
    return str(value)


class ProfileManager:
    def __init__(self, settings: dict, book: ProfileBook, emit: Callable[[Alert], None],
                 proctable=None, dropped: Optional[Callable[[], int]] = None,
                 clock: Callable[[], int] = time.time_ns, runtimes=()):
        self.settings = settings
        self.book = book
        self.emit = emit
        self.proctable = proctable
        self.dropped = dropped or (lambda: 0)
        self.clock = clock
        self.prefixes = tuple(settings["file_prefixes"])
        self.window = float(book.setting("window", settings["window"]))
        self.max_entries = int(settings["max_entries"])
        self.fold_after = int(settings["fold_after"])
        self.cooldown = float(settings["cooldown"])
        self.flush_interval = float(settings["flush_interval"])
        self.host = bool(settings["host"])
        # the container runtime's own processes in a container's cgroup (`runc init`,
        # comm "runc:[2:INIT]"): not the workload (enforce.protected, as enforcement)
        self.runtimes = frozenset(runtimes)
        self._runtime_comm: dict = {}
        self.started_ns = clock()
        self.profiles: dict = book.load_all()
        for p in self.profiles.values():
            p.set_roots(self.prefixes)
            if p.status == LEARNING:
                # the agent was not running for part of this window
                p.mark_partial("agent restarted during learning")
        self._idents: dict = {}           # container id / host exe -> (Identity, Profile)
        self._cooldown: OrderedDict = OrderedDict()   # (workload, category, value) -> time
        self._last_drops = self.dropped()
        self._last_flush = 0.0
        self._last_check = 0.0
        self.stats_counts = {"events": 0, "alerts": 0, "folded": 0, "requests": 0}

    # --- per event ---

    def on_event(self, ev) -> None:
        if ev.kind not in KINDS:
            return
        self.stats_counts["events"] += 1
        comm = ev.comm or ""
        rt = self._runtime_comm.get(comm)
        if rt is None:
            rt = self._runtime_comm[comm] = comm.split(":", 1)[0] in self.runtimes
            if len(self._runtime_comm) > 10_000:
                self._runtime_comm.clear()
        p = ev.proc
        if rt or (p is not None and p.exe == "/") or (ev.kind == Kind.EXEC and ev.exe == "/"):
            # "/": an executable outside the container's file system (`runc init`
            # from the host), the runtime's, not the workload's
            return
        c = ev.container
        if c is not None and c.is_container:
            hit = self._idents.get(c.id)
            if hit is None:
                ident = container_identity(c)
                if ident is None:
                    return          # not resolved yet: its later events will count
                hit = self._idents[c.id] = (ident, self._profile(ident, ev))
        elif c is None or c.is_host:
            if not self.host:
                return
            exe = self._host_exe(ev)
            hit = self._idents.get(exe)
            if hit is None:
                ident = host_identity(exe)
                if ident is None:
                    return
                hit = self._idents[exe] = (ident, self._profile(ident, ev))
        else:
            return
        ident, prof = hit
        if prof.status == LEARNING:
            for cat, val in values(ev, self.prefixes):
                prof.learn(cat, val, self.max_entries, self.fold_after)
            return
        for cat, val in values(ev, self.prefixes):
            if cat in ALERTED and not prof.knows(cat, val):
                self._deviation(ident, prof, ev, cat, val)

    def _host_exe(self, ev) -> str:
        p = ev.proc
        if ev.kind == Kind.EXEC and p is not None and self.proctable is not None:
            parent = self.proctable.get(p.ppid)
            return parent.exe if parent is not None else ""
        return p.exe if p is not None else (ev.exe or "")

    def _profile(self, ident, ev) -> Profile:
        prof = self.profiles.get(ident.key)
        now = self.clock()
        if prof is None:
            window = self.window
            if ident.window:
                try:
                    window = parse_duration(ident.window)
                except ValueError as e:
                    log.warning("%s: label %s: %s (using %gs)", ident.key,
                                "vigil.dev/profile-learning-window", e, window)
            prof = Profile(ident.key, ident.kind, namespace=ident.namespace,
                           container=ident.container, image=ident.image, window=window,
                           now_ns=now)
            prof.set_roots(self.prefixes)
            prof.history.append((now, f"learning for {window:g}s"))
            self.profiles[ident.key] = prof
        if prof.status == LEARNING:
            started = ident.started_ns or (ev.proc.start_time if ev.proc is not None else 0)
            begun = max(prof.window_start, self.started_ns)
            if started and started < begun - RUNNING_SLACK_NS:
                prof.mark_partial("workload was running before learning began")
        if ident.container_id:
            prof.note_replica(ident.container_id, ident.labels)
        return prof

    def _deviation(self, ident, prof, ev, cat: str, val) -> None:
        key = (prof.workload, cat, val)
        now = time.monotonic()
        last = self._cooldown.get(key)
        if last is not None and now - last < self.cooldown:
            self.stats_counts["folded"] += 1
            return
        self._cooldown[key] = now
        self._cooldown.move_to_end(key)
        while len(self._cooldown) > COOLDOWN_KEYS_MAX:
            self._cooldown.popitem(last=False)
        self.stats_counts["alerts"] += 1
        self.emit(deviation_alert(ident, prof, ev, cat, val))

    # --- periodic ---

    def tick(self, now: float = 0.0) -> None:
        now = now or time.monotonic()
        if now - self._last_check >= 1.0:
            self._last_check = now
            self._check(self.clock())
        if now - self._last_flush >= self.flush_interval:
            self._last_flush = now
            self.flush()

    def _check(self, now_ns: int) -> None:
        drops = self.dropped()
        if drops > self._last_drops:
            for p in self.profiles.values():
                p.mark_partial("the kernel dropped events")
            self._last_drops = drops
        for p in self.profiles.values():
            if p.window_over(now_ns):
                p.end_window(now_ns)
                log.info("profile %s: %s", p.workload, p.history[-1][1])
        try:
            self.book.heartbeat()
            for req in self.book.take_requests():
                self.stats_counts["requests"] += 1
                log.info("profiles: %s", self._apply(*req))
        except Exception as e:     # the store is busy or gone: try again next time
            log.warning("profile requests: %s", e)

    def _apply(self, action, workload, arg) -> str:
        settings = {}
        msg, removed = apply_request(self.profiles, action, workload, arg, self.clock(), settings)
        if "window" in settings:
            self.window = settings["window"]
            self.book.set_setting("window", self.window)
        for p in self.profiles.values():
            p.set_roots(self.prefixes)
        if removed:
            self.book.delete(removed)
        self._idents.clear()     # identities point at profiles that may be gone
        self.flush()
        return msg

    def flush(self) -> None:
        dirty = [p for p in self.profiles.values() if p.dirty]
        if dirty:
            try:
                self.book.save(dirty)
            except Exception as e:
                log.warning("cannot write %d profile(s): %s", len(dirty), e)

    def close(self) -> None:
        self.flush()
        self.book.close()

    def stats(self) -> dict:
        return {**self.stats_counts, "profiles": len(self.profiles),
                "entries": sum(p.entries() for p in self.profiles.values())}


def deviation_alert(ident, prof, ev, cat: str, val) -> Alert:
    rule = RULES[cat]
    text = value_text(cat, val)
    p = ev.proc
    c = ev.container
    fields = {"vigil.workload": prof.workload, "vigil.profile.category": cat,
              "vigil.profile.value": text, "proc.name": (p.comm if p else ev.comm) or None,
              "proc.exepath": (p.exe if p else ev.exe) or None, "proc.pid": ev.pid or None,
              "proc.cmdline": " ".join(p.args) if p is not None and p.args else None}
    if c is not None and c.is_container:
        fields.update({"container.id": c.short_id, "container.name": c.name or None,
                       "container.image": c.image or None, "k8s.ns.name": c.namespace or None,
                       "k8s.pod.name": c.pod_name or None})
    if cat == "file":
        fields["fd.name"] = ev.path
    elif cat == "egress":
        fields.update({"fd.rip": val[0], "fd.rport": val[1], "fd.l4proto": val[2].lower()})
    elif cat == "listen":
        fields.update({"fd.lport": val[0], "fd.l4proto": val[1].lower()})
    elif cat == "dns":
        fields["vigil.dns.query"] = val
    shown = ev.path if cat == "file" else text
    output = (f"{rule}: {WHAT[cat]} {shown} not in the learned profile (workload={prof.workload} "
              f"proc={fields['proc.name']} container={fields.get('container.name') or 'host'})")
    return Alert(time=ev.time or time.time_ns(), rule=rule, priority="warning", output=output,
                 output_fields={k: v for k, v in fields.items() if v is not None},
                 tags=["profile", "vigil", cat], event=ev)


__all__ = ["ProfileManager", "RULES", "deviation_alert", "value_text"]
