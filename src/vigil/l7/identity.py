"""Who is on each end of an L7 exchange, as the service map names them:
``(namespace, workload)``.

* The **observing** process (the record's cgroup and tgid): a pod's container is its
  Kubernetes owner (a ReplicaSet's Deployment, from the API cache) or else its pod
  name, in the pod's namespace; a container outside any pod is its name (or short
  id), namespace ""; a host process is ``host/<executable name>``; a cgroup the
  resolver cannot place is ``unknown``.
* The **peer**, from its IP: a loopback address is the observer's own network
  namespace (the same pod or container; ``host`` for a host process); an address of
  a container or pod on this node (its own network namespace's addresses, or the
  pod's ``status.podIPs`` from the Kubernetes API cache) is that workload; an
  address of the node itself is ``host``; anything else is external, folded to its
  ``/24`` (IPv6: ``/64``), namespace "".

The IP index is rebuilt on a miss, at most once per ``refresh`` seconds, and
(at most 10 times a second) after the container resolver learnt, changed or forgot
a container.
"""
from __future__ import annotations

import ipaddress
import logging
import os
import threading
import time
from typing import Optional

log = logging.getLogger("vigil.l7")

HOST = ("", "host")
UNKNOWN = ("", "unknown")
OTHER = ("", "other")


def ip_of(text: str):
    """An ipaddress object (IPv4-mapped IPv6 as IPv4), or None."""
    try:
        a = ipaddress.ip_address(text)
    except ValueError:
        return None
    if a.version == 6 and a.ipv4_mapped is not None:
        return a.ipv4_mapped
    return a


def external_name(a) -> str:
    net = ipaddress.ip_network(f"{a}/{24 if a.version == 4 else 64}", strict=False)
    return str(net)


def container_workload(info) -> tuple:
    """(namespace, workload) of a resolved container (ContainerInfo)."""
    if info.pod_name or info.namespace:
        return info.namespace or "", info.owner_name or info.pod_name or info.name or \
            info.short_id
    return "", info.name or info.short_id


def netns_key(info) -> str:
    """What shares one network namespace: a pod (its containers), else the container."""
    if info is None or not info.is_container:
        return "host"
    return info.pod_uid or info.id


class _Probe:
    """What the resolver reads of an event, for a record's cgroup."""
    __slots__ = ("cgroup_id", "pid")
    kind = None
    cgroup_name = None

    def __init__(self, cgroup_id: int, pid: int):
        self.cgroup_id, self.pid = cgroup_id, pid


class Identities:
    def __init__(self, resolver=None, kube=None, proctable=None, refresh: float = 2.0,
                 clock=time.monotonic):
        self.resolver = resolver
        self.kube = kube
        self.proctable = proctable
        self.refresh_every = refresh
        self._clock = clock
        self._lock = threading.Lock()
        self._by_ip: dict = {}          # ip object -> (namespace, workload)
        self._host_ips: frozenset = frozenset()
        self._last_refresh = -1e18
        self._dirty = True
        self.refreshes = 0
        self._source = None
        if resolver is not None:
            from vigil.enforce.workloads import WorkloadSource
            self._source = WorkloadSource(getattr(resolver.cgfs, "root", None), kube)
            resolver.add_listener(self._on_container)

    def _on_container(self, cgid, info) -> None:
        if info is None or info.is_container:
            self._dirty = True

    # --- the observing side ---------------------------------------------------------
    def info(self, cgroup_id: int):
        r = self.resolver
        if r is None:
            return None
        return r.peek(cgroup_id) if cgroup_id else None

    def observer(self, cgroup_id: int, tgid: int) -> tuple:
        """(namespace, workload, netns key) of the process that saw the exchange
        (on the event loop: a cgroup the resolver has not cached yet is placed as an
        event's would be)."""
        r = self.resolver
        info = self.info(cgroup_id)
        if info is None and r is not None and cgroup_id:
            info = r.resolve(_Probe(cgroup_id, tgid))
        if r is not None and (info is None or not info.id):
            return UNKNOWN + ("?",)
        if info is None or info.is_host:
            return ("", self.host_name(tgid), "host")
        return container_workload(info) + (netns_key(info),)

    def netns(self, cgroup_id: int) -> str:
        """The network namespace key of the observing process (loopback addresses)."""
        return netns_key(self.info(cgroup_id))

    def host_name(self, tgid: int) -> str:
        p = self.proctable.lookup_or_read(tgid) if self.proctable is not None else None
        name = ""
        if p is not None:
            name = os.path.basename(p.exe or "") or p.comm or ""
        return f"host/{name}" if name else "host"

    # --- the peer -------------------------------------------------------------------
    def peer(self, ip: str, observer_netns: str, observer: tuple) -> tuple:
        """(namespace, workload) of the other end at ``ip``."""
        a = ip_of(ip)
        if a is None:
            return UNKNOWN
        if a.is_loopback:
            return observer[:2] if observer_netns != "host" else HOST
        with self._lock:
            since = self._clock() - self._last_refresh
            if self._dirty and since >= 0.1:      # a container came, went or got its names
                self._refresh()
                since = 0.0
            got = self._lookup(a)
            if got is None and since >= self.refresh_every:
                self._refresh()
                got = self._lookup(a)
        return got if got is not None else ("", external_name(a))

    def _lookup(self, a):
        got = self._by_ip.get(a)
        if got is not None:
            return got
        if a in self._host_ips:
            return HOST
        return None

    def _refresh(self) -> None:
        from vigil.enforce.workloads import netns_addresses
        self._last_refresh = self._clock()
        self._dirty = False
        self.refreshes += 1
        try:
            self._host_ips = frozenset(netns_addresses(1))
        except Exception as e:          # /proc unreadable: keep what we had
            log.debug("host addresses: %s", e)
        if self._source is None:
            return
        by_ip: dict = {}
        for cid, info in self.resolver.containers().items():
            try:
                w = self._source.workload(info)
            except Exception as e:
                log.debug("addresses of %s: %s", cid[:12], e)
                continue
            for ip in w.ips:
                by_ip[ip_of(str(ip))] = container_workload(info)
        self._by_ip = by_ip

    def forget(self, container_id: str) -> None:
        if self._source is not None:
            self._source.forget(container_id)


__all__ = ["Identities", "container_workload", "netns_key", "ip_of", "external_name",
           "HOST", "UNKNOWN", "OTHER"]
