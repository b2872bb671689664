"""CPU and memory per container, from its cgroup files when Prometheus
scrapes: cgroup v2 (cpu.stat ``usage_usec``, memory.current), else, on hybrid
hosts whose controllers are v1, the same path in the v1 memory and cpuacct
hierarchies (memory.usage_in_bytes, cpuacct.usage)."""
from __future__ import annotations

import os

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from vigil.metrics.workloads import WORKLOAD_LABELS, labels_of
from vigil.state.containers.cgroupfs import find_v2_mount


V1_ROOT = "/sys/fs/cgroup"


def _read_int(path: str):
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def cgroup_usage(path: str, rel: str = "", v1_root: str = V1_ROOT):
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
    mem = _read_int(os.path.join(path, "memory.current"))
    if rel and mem is None:
        mem = _read_int(os.path.join(v1_root, "memory", rel, "memory.usage_in_bytes"))
    if rel and cpu is None:
        ns = _read_int(os.path.join(v1_root, "cpuacct", rel, "cpuacct.usage"))
        cpu = ns / 1e9 if ns is not None else None
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
            rel = info.cgroup_path.lstrip("/")
            c, m = cgroup_usage(os.path.join(self.root, rel), rel)
            labels = list(labels_of(info))
            if c is not None:
                cpu.add_metric(labels, c)
            if m is not None:
                mem.add_metric(labels, m)
        yield cpu
        yield mem
