"""The agent's own health, read from its counters when Prometheus scrapes:
events per kind and what was lost (in the kernel: ring buffer full; in user
space: events that could not be decoded or handled), alerts by rule and
priority, outputs (errors, queue), the process and container caches, policy
enforcement, and a sampled histogram of the rules' time per event."""
from __future__ import annotations

import logging
import platform
import time

from prometheus_client import Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

log = logging.getLogger("vigil.metrics")

# the rules' time per event, sampled: timing every event would cost more than
# many rules do (two clock reads and a locked histogram update per event)
RULE_SAMPLE_EVERY = 16
RULE_BUCKETS = (1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3,
                1e-2, float("inf"))


class RuleTimer:
    """``timer(evaluate, ev)``: evaluate(ev), timed for one event in RULE_SAMPLE_EVERY."""

    def __init__(self, registry):
        self.hist = Histogram("vigil_rule_evaluation_seconds",
                              "Time the rules engine took for one event (sampled: one event "
                              f"in {RULE_SAMPLE_EVERY})", buckets=RULE_BUCKETS, registry=registry)
        self._n = 0

    def __call__(self, evaluate, ev):
        n = self._n
        self._n = n + 1
        if n % RULE_SAMPLE_EVERY:      # the first event is timed, then every Nth
            return evaluate(ev)
        t = time.perf_counter()
        out = evaluate(ev)
        self.hist.observe(time.perf_counter() - t)
        return out


def _copy(d) -> dict:
    """A dict another thread may be growing, copied safely."""
    for _ in range(5):
        try:
            return dict(d)
        except RuntimeError:
            continue
    return {}


def output_queue(name: str, st: dict, last_id: int) -> int:
    """Alerts waiting for one output: behind its cursor in the store (an
    outbox output) or in its memory queue."""
    box = st.get("outbox")
    if box is not None and last_id is not None:
        return max(0, last_id - int(box.get("cursor") or 0))
    details = st.get("details") or {}
    return int(details.get("queued") or 0)


class AgentCollector:
    """Reads the running agent (vigil.agent.Agent) at every scrape."""

    def __init__(self, agent):
        self.agent = agent

    def describe(self):
        return []           # collected only when scraped (no metric made at register time)

    def collect(self):
        a = self.agent
        yield from self._events(a)
        yield from self._alerts(a)
        yield from self._outputs(a)
        yield from self._caches(a)
        yield from self._enforce(a)

    def _events(self, a):
        events = CounterMetricFamily("vigil_events_total",
                                     "Events the kernel sent up, by kind", labels=["kind"])
        lost = CounterMetricFamily("vigil_events_lost_total",
                                   "Events lost, by kind and where: kernel (the ring buffer was "
                                   "full) or user (could not be decoded or handled)",
                                   labels=["kind", "where"])
        p = a.pipeline
        sensors = p.sensors if p is not None else None
        kernel = {}
        if sensors is not None:
            try:
                kernel = sensors.stats()
            except Exception as e:      # the sensors are being swapped (a reload)
                log.debug("kernel stats unreadable: %s", e)
        for kind, v in sorted(kernel.items()):
            events.add_metric([kind], v["sent"])
            lost.add_metric([kind, "kernel"], v["dropped"])
        if p is not None:
            failed = _copy(getattr(p, "failed_by_kind", {}))
            if p.decoder.errors:
                failed["unknown"] = failed.get("unknown", 0) + p.decoder.errors
            for kind, n in sorted(failed.items()):
                lost.add_metric([kind, "user"], n)
        yield events
        yield lost

    def _alerts(self, a):
        m = CounterMetricFamily("vigil_alerts_total",
                                "Alerts the rules gave (before rate limiting folds repeats)",
                                labels=["rule", "priority"])
        for (rule, prio), n in sorted(_copy(a.alert_counts()).items()):
            m.add_metric([rule, str(prio).lower()], n)
        yield m
        r = CounterMetricFamily("vigil_rules_reloads_total", "Rules reloads, by result",
                                labels=["result"])
        r.add_metric(["success"], a.reloads)
        r.add_metric(["failure"], a.reload_errors)
        yield r
        eng = a.engine
        g = GaugeMetricFamily("vigil_rules_loaded", "Rules loaded, by state", labels=["state"])
        if eng is not None:
            enabled = len(eng.enabled_rules())
            g.add_metric(["enabled"], enabled)
            g.add_metric(["disabled"], len(eng.rules) - enabled)
        yield g

    def _outputs(self, a):
        errors = CounterMetricFamily("vigil_output_errors_total",
                                     "Alerts an output failed to deliver (or dropped)",
                                     labels=["output"])
        queue = GaugeMetricFamily("vigil_output_queue_length",
                                  "Alerts waiting for an output", labels=["output"])
        alerts = a.alerts
        if alerts is not None:
            try:
                st = alerts.stats()
            except Exception as e:
                log.debug("output stats unreadable: %s", e)
                st = {}
            store = alerts.store
            last = None
            if store is not None and hasattr(store, "last_id"):
                try:
                    last = store.last_id()
                except Exception:
                    last = None
            for name, o in sorted((st.get("outputs") or {}).items()):
                errors.add_metric([name], o.get("failed", 0) + o.get("dropped", 0))
                queue.add_metric([name], output_queue(name, o, last))
            s = st.get("store")
            if s:
                errors.add_metric(["store"], s.get("failed", 0))
        yield errors
        yield queue

    def _caches(self, a):
        yield GaugeMetricFamily("vigil_process_cache_entries",
                                "Processes in the agent's process table",
                                value=len(a.proctable))
        n = len(a.resolver.containers()) if a.resolver is not None else 0
        yield GaugeMetricFamily("vigil_container_cache_entries",
                                "Containers the agent knows (with their metadata)", value=n)

    def _enforce(self, a):
        enf = a.enforcer
        if enf is None:
            return
        st = enf.stats()
        v = CounterMetricFamily("vigil_enforce_verdicts_total",
                                "Enforcement verdicts reported by the kernel, by verdict "
                                "(deny/audit alerts, kill, hold of a new container's first exec)",
                                labels=["verdict"])
        v.add_metric(["alert"], st.get("alerts", 0) - st.get("kills", 0))
        v.add_metric(["kill"], st.get("kills", 0))
        v.add_metric(["hold"], st.get("held", 0))
        yield v
        yield GaugeMetricFamily("vigil_enforce_policies", "Policies enforced",
                                value=st.get("policies", 0))
        yield GaugeMetricFamily("vigil_enforce_entries", "Entries in the kernel's policy tables",
                                value=st.get("entries", 0))


def build_info(registry) -> None:
    from prometheus_client import Info
    from vigil import __version__
    Info("vigil_build", "vigil's version, Python and kernel", registry=registry).info(
        {"version": __version__, "python": platform.python_version(),
         "kernel": platform.release()})


__all__ = ["AgentCollector", "RuleTimer", "build_info", "RULE_SAMPLE_EVERY"]
