"""CPU and memory per container, from its cgroup v2 files when Prometheus
scrapes (cpu.stat ``usage_usec``, memory.current)."""
from __future__ import annotations

import os

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from vigil.metrics.workloads import WORKLOAD_LABELS, labels_of
from vigil.state.containers.cgroupfs import find_v2_mount


def cgroup_usage(path: str):
    """(CPU seconds, memory bytes) of one cgroup directory; None for what is missing."""
    cpu = mem = None
    try:
        with open(os.path.join(path, "cpu.stat")) as f:
            for line in f:
                k, _, v = line.partition(" ")
                if k == "usage_usec":
                    cpu = int(v) / 1e6
                    break
    except OSError:
        pass
    try:
        with open(os.path.join(path, "memory.current")) as f:
            mem = int(f.read().strip())
    except (OSError, ValueError):
        pass
    return cpu, mem


class ResourceCollector:
    def __init__(self, workloads, root: str = None):
        self.workloads = workloads
        self.root = root or find_v2_mount() or "/sys/fs/cgroup"

    def describe(self):
        return []

    def collect(self):
        cpu = CounterMetricFamily("vigil_container_cpu_seconds_total",
                                  "CPU time of a container's cgroup (cpu.stat usage_usec)",
                                  labels=list(WORKLOAD_LABELS))
        mem = GaugeMetricFamily("vigil_container_memory_bytes",
                                "Memory of a container's cgroup (memory.current)",
                                labels=list(WORKLOAD_LABELS))
        seen = set()
        r = self.workloads.resolver if self.workloads is not None else None
        for info in (r.containers().values() if r is not None else ()):
            if not info.cgroup_path or info.id in seen:
                continue
            seen.add(info.id)
            c, m = cgroup_usage(os.path.join(self.root, info.cgroup_path.lstrip("/")))
            labels = list(labels_of(info))
            if c is not None:
                cpu.add_metric(labels, c)
            if m is not None:
                mem.add_metric(labels, m)
        yield cpu
        yield mem
