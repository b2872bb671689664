"""Containers (and the host) as policies see them: namespace, pod labels,
IPs and named ports.

Labels and namespace come from the Kubernetes API (via the container
resolver's metadata) when it is enabled; otherwise the container's own labels
and OCI annotations stand in (kubelet's ``io.kubernetes.*`` bookkeeping keys
dropped) and ``io.kubernetes.pod.namespace`` gives the namespace.  A pod's IPs are its
``status.podIPs`` from the API cache, else the addresses of the container's
own network namespace; a container sharing the host's network namespace
(``--network host``, ``hostNetwork: true``) has no pod IP of its own, so pod
selectors never turn it into the node's addresses.
"""
from __future__ import annotations

import ipaddress
import os
from typing import Optional

from vigil.enforce.model import PROTOCOLS, Workload
from vigil.state.containers.metadata_values import pod_labels_from
from vigil.host_paths import proc_path


def _ns_inode(pid) -> Optional[int]:
    try:
        return os.stat(proc_path(pid, "ns", "net")).st_ino
    except OSError:
        return None


def cgroup_pids(v2_root: str, cgroup_path: str) -> list:
    try:
        with open(os.path.join(v2_root, cgroup_path.lstrip("/"), "cgroup.procs")) as f:
            return [int(x) for x in f.read().split()]
    except (OSError, ValueError):
        return []


def netns_addresses(pid: int) -> tuple:
    """The non-loopback local addresses of a process's network namespace."""
    out = set()
    try:
        with open(proc_path(pid, "net", "fib_trie")) as f:
            lines = f.read().splitlines()
        for prev, line in zip(lines, lines[1:]):
            if "/32 host LOCAL" in line:
                ip = prev.strip().split()[-1]
                out.add(ipaddress.ip_address(ip))
    except (OSError, ValueError):
        pass
    try:
        with open(proc_path(pid, "net", "if_inet6")) as f:
            for line in f:
                parts = line.split()
                if parts:
                    out.add(ipaddress.ip_address(bytes.fromhex(parts[0])))
    except (OSError, ValueError):
        pass
    return tuple(sorted((a for a in out if not a.is_loopback and not a.is_link_local),
                        key=lambda a: (a.version, a.packed)))


def pod_ips(pod: dict) -> tuple:
    st = pod.get("status") or {}
    ips = [p.get("ip") for p in st.get("podIPs") or [] if isinstance(p, dict)] or [st.get("podIP")]
    out = []
    for ip in ips:
        try:
            out.append(ipaddress.ip_address(ip))
        except (TypeError, ValueError):
            pass
    if (pod.get("spec") or {}).get("hostNetwork"):
        return ()
    return tuple(out)


def pod_ports(pod: dict) -> dict:
    out: dict = {}
    for c in (pod.get("spec") or {}).get("containers") or []:
        for p in (c or {}).get("ports") or []:
            name = p.get("name")
            if name and isinstance(p.get("containerPort"), int):
                out.setdefault(name, []).append((PROTOCOLS.get(p.get("protocol", "TCP"), 6),
                                                 p["containerPort"]))
    return out


def stand_in_labels(info) -> dict:
    """Pod labels without the Kubernetes API: the container's labels, then its OCI
    annotations (a label wins over an annotation of the same key), kubelet's
    ``io.kubernetes.*`` bookkeeping keys dropped."""
    merged = dict(getattr(info, "annotations", None) or {})
    merged.update(info.labels or {})
    return pod_labels_from(merged)


class WorkloadSource:
    """ContainerInfo -> Workload, with the IPs looked up once per container."""

    def __init__(self, v2_root: Optional[str], kube=None):
        self.v2_root = v2_root
        self.kube = kube
        self._host_netns = _ns_inode("self")
        self._ips: dict = {}      # container id -> ips

    def workload(self, info, cgroup_ids=()) -> Workload:
        labels = dict(info.pod_labels) if info.pod_labels else stand_in_labels(info)
        pod = self.kube.get(info.pod_uid) if self.kube is not None and info.pod_uid else None
        ips, ports = (), {}
        if pod is not None:
            ips, ports = pod_ips(pod), pod_ports(pod)
        else:
            ips = self._ips.get(info.id)
            if ips is None:
                ips = self._netns_ips(info)
                if ips is not None:
                    self._ips[info.id] = ips
            ips = ips or ()
        return Workload(info.id, info.namespace, labels, info.pod_name or info.name,
                        ips=ips, ports=ports, cgroup_ids=tuple(cgroup_ids))

    def _netns_ips(self, info):
        if not self.v2_root or not info.cgroup_path:
            return None
        for pid in cgroup_pids(self.v2_root, info.cgroup_path):
            ino = _ns_inode(pid)
            if ino is None:
                continue
            return () if ino == self._host_netns else netns_addresses(pid)
        return None

    def forget(self, container_id: str) -> None:
        self._ips.pop(container_id, None)


__all__ = ["WorkloadSource", "stand_in_labels", "netns_addresses", "pod_ips", "pod_ports"]
