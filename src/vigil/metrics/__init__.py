"""Prometheus metrics (docs/METRICS.md).

:class:`AgentMetrics` is what `vigil run` holds: one registry with the
process collector, build info, the agent's health (:mod:`.agent_health`) and,
once the sensors run, the kernel's per-workload aggregates (:mod:`.kernel`:
TCP, packets, DNS, block I/O, run queue, syscalls) and the containers'
resources (:mod:`.resources`), every one read when Prometheus scrapes,
never per event.  Served by :mod:`.server` on ``metrics.address``.
"""
from __future__ import annotations

import logging
from typing import Optional

log = logging.getLogger("vigil.metrics")


class AgentMetrics:
    def __init__(self, settings: dict, agent):
        from prometheus_client import CollectorRegistry, ProcessCollector
        from vigil.metrics.agent_health import AgentCollector, RuleTimer, build_info
        self.settings = settings
        self.agent = agent
        self.registry = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=self.registry)
        build_info(self.registry)
        self.rule_timer = RuleTimer(self.registry)
        self.registry.register(AgentCollector(agent))
        self.server = None
        self.kernel = None          # vigil.metrics.kernel.KernelMetrics once attached
        self.service_map = None     # vigil.l7.servicemap.ServiceMap once L7 runs
        self.processes = None       # vigil.l7.processes.ProcessStats (for vigil top)
        self._resources = None
        self.l7 = None              # vigil.metrics.l7.L7Metrics when L7 is on

    @property
    def address(self) -> Optional[str]:
        return self.server.address if self.server is not None else None

    def start(self) -> "AgentMetrics":
        from vigil.metrics.server import start_server
        self.server = start_server(self.registry, self.agent.ready, self.settings["address"])
        if self.server is not None:
            log.info("metrics on http://%s/metrics", self.server.address)
        return self

    def attach(self, resolver, dns_ports=(53,)) -> None:
        """The kernel's aggregates and the containers' resources, once the
        sensors run (a program the kernel refuses is left out with one line)."""
        from vigil.metrics.workloads import Workloads
        workloads = Workloads(resolver)
        from vigil.metrics.kernel import KernelMetrics
        self.kernel = KernelMetrics(self.settings, workloads, dns_ports=dns_ports).start()
        self.registry.register(self.kernel.collector())
        if self.settings.get("resources"):
            from vigil.metrics.resources import ResourceCollector
            self._resources = ResourceCollector(workloads)
            self.registry.register(self._resources)

    def add_l7(self, tracker, resolver, max_peers: int = 100) -> None:
        """The L7 RED metrics (vigil.metrics.l7): a sink of the tracker, read at scrape time."""
        from vigil.metrics.l7 import L7Metrics
        from vigil.metrics.workloads import Workloads
        self.l7 = L7Metrics(Workloads(resolver), max_peers)
        tracker.sinks.append(self.l7)
        self.registry.register(self.l7)
        from vigil.metrics.l7_tls import TlsCollector

        def probes():
            p = getattr(self.agent, "pipeline", None)
            return p.sensors.tls if p is not None and p.sensors is not None else None
        self.registry.register(TlsCollector(probes))

    def l7_sinks(self, resolver, kube=None, proctable=None) -> list:
        """The service map (vigil_service_*) and the per-process L7 counts served at
        ``/l7/processes`` for `vigil top`: sinks for the L7 core's L7Request records."""
        from vigil.l7.identity import Identities
        from vigil.l7.processes import ProcessStats
        from vigil.l7.servicemap import ServiceMap
        from vigil.metrics.workloads import Workloads
        self.service_map = ServiceMap(Identities(resolver, kube, proctable),
                                      max_edges=self.settings.get("max_edges", 500))
        self.registry.register(self.service_map)
        self.processes = ProcessStats(Workloads(resolver))
        if self.server is not None:
            self.server.routes["/l7/processes"] = self.processes.http_body
        return [self.service_map, self.processes]

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
        if self.kernel is not None:
            self.kernel.stop()
            self.kernel = None


def make_metrics(cfg, agent) -> Optional[AgentMetrics]:
    """The agent's metrics as configured (None when ``metrics.address`` is empty)."""
    m = cfg.get("metrics") or {}
    if not m.get("address"):
        return None
    return AgentMetrics(m, agent).start()


__all__ = ["AgentMetrics", "make_metrics"]
