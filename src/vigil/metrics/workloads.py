"""Per-workload labels: a cgroup id (as the kernel maps key their counters)
-> ``namespace``, ``pod``, ``container``, ``container_id`` as kube-prometheus
names them.  A pod's container has its namespace, pod and Kubernetes container
name; a container outside any pod has its name and short id; host processes
are ``container="host"``; a cgroup vigil cannot place is ``container="unknown"``.
"""
from __future__ import annotations

WORKLOAD_LABELS = ("namespace", "pod", "container", "container_id")
HOST_LABELS = ("", "", "host", "")
UNKNOWN_LABELS = ("", "", "unknown", "")


def labels_of(info) -> tuple:
    """The label values of one ContainerInfo (None: not known)."""
    if info is None or not info.id:
        return UNKNOWN_LABELS
    if info.is_host:
        return HOST_LABELS
    if info.pod_name:
        return (info.namespace, info.pod_name, info.k8s_container_name or info.name, "")
    return ("", "", info.name or info.short_id, info.short_id)


class Workloads:
    """Label values by cgroup id, from the agent's container resolver (none:
    every process is the host's, as `vigil run` without containers sees it)."""

    def __init__(self, resolver=None):
        self.resolver = resolver

    def labels(self, cgroup_id: int) -> tuple:
        r = self.resolver
        if r is None:
            return HOST_LABELS
        if not cgroup_id:
            return UNKNOWN_LABELS
        return labels_of(r.peek(cgroup_id))

    def known(self) -> dict:
        """cgroup id -> ContainerInfo of every cgroup the resolver placed."""
        return self.resolver.known() if self.resolver is not None else {}


__all__ = ["WORKLOAD_LABELS", "HOST_LABELS", "UNKNOWN_LABELS", "Workloads", "labels_of"]
