"""Which cgroups a policy wants to watch, for filtering in the kernel.

A policy is ``host_only``, ``containers_only`` and/or k8s namespaces to include or
exclude.  :class:`ScopeTracker` follows the resolver and keeps the cgroup ids in
scope and out of scope; ``on_change(cgroup_id, in_scope)`` fires when a cgroup
is learnt, changes side (its namespace became known) or goes away (``None``).

Undecided cgroups (a container whose namespace is not known yet, a cgroup never
seen) count as *in scope*: a security agent drops nothing it cannot place.  So a
BPF deny-map of :meth:`ScopeTracker.cgroup_ids_out_of_scope` is the fail-open
choice; an allow-map of :meth:`cgroup_ids_in_scope` misses new cgroups until
they are learnt.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable, Optional

from vigil.state.containers.model import ContainerInfo


@dataclass(frozen=True)
class ScopePolicy:
    host: bool = True
    containers: bool = True
    include_namespaces: tuple = ()
    exclude_namespaces: tuple = ()

    @classmethod
    def from_config(cls, cfg: Optional[dict]) -> "ScopePolicy":
        """``{host_only: true}``, ``{containers_only: true}``, ``{namespaces: [a, b]}``,
        ``{namespaces: {include: [..], exclude: [..]}}``, ``{exclude_namespaces: [..]}``."""
        cfg = cfg or {}
        host_only = bool(cfg.get("host_only"))
        containers_only = bool(cfg.get("containers_only"))
        if host_only and containers_only:
            raise ValueError("scope: host_only and containers_only exclude each other")
        inc, exc = (), ()
        ns = cfg.get("namespaces")
        if isinstance(ns, (list, tuple)):
            inc = tuple(str(x) for x in ns)
        elif isinstance(ns, dict):
            inc = tuple(str(x) for x in ns.get("include") or ())
            exc = tuple(str(x) for x in ns.get("exclude") or ())
        elif ns is not None:
            raise ValueError("scope: namespaces must be a list or {include, exclude}")
        exc += tuple(str(x) for x in cfg.get("exclude_namespaces") or ())
        return cls(host=not containers_only, containers=not host_only,
                   include_namespaces=inc, exclude_namespaces=exc)

    @property
    def everything(self) -> bool:
        """Nothing to filter: the sensor can skip the map lookup altogether."""
        return self.host and self.containers and not self.include_namespaces \
            and not self.exclude_namespaces


def in_scope(policy: ScopePolicy, info: Optional[ContainerInfo]) -> Optional[bool]:
    """True / False, or None while undecidable (unknown cgroup, namespace not fetched yet)."""
    if info is None or info.id == "":
        return None
    if info.is_host:
        # host processes have no k8s namespace: an include list leaves them out
        return policy.host and not policy.include_namespaces
    if not policy.containers:
        return False
    if not policy.include_namespaces and not policy.exclude_namespaces:
        return True
    ns = info.namespace
    if not ns and not info.complete:
        return None
    if policy.include_namespaces and ns not in policy.include_namespaces:
        return False
    if ns and ns in policy.exclude_namespaces:
        return False
    return True


class ScopeTracker:
    def __init__(self, resolver, policy: ScopePolicy,
                 on_change: Optional[Callable[[int, Optional[bool]], None]] = None):
        self.policy = policy
        self.on_change = on_change
        self._in: set = set()
        self._out: set = set()
        self._lock = threading.Lock()
        resolver.add_listener(self._update)
        for cgid, info in resolver.known().items():
            self._update(cgid, info)

    def _update(self, cgid: int, info: Optional[ContainerInfo]) -> None:
        if info is None:
            with self._lock:
                was = cgid in self._in or cgid in self._out
                self._in.discard(cgid)
                self._out.discard(cgid)
            if was and self.on_change:
                self.on_change(cgid, None)
            return
        decision = in_scope(self.policy, info)
        inside = decision is not False            # undecided counts as in scope
        with self._lock:
            before = True if cgid in self._in else False if cgid in self._out else None
            (self._in if inside else self._out).add(cgid)
            (self._out if inside else self._in).discard(cgid)
        if before is not inside and self.on_change:
            self.on_change(cgid, inside)

    def is_in_scope(self, cgid: int) -> bool:
        return cgid not in self._out

    def cgroup_ids_in_scope(self) -> frozenset:
        with self._lock:
            return frozenset(self._in)

    def cgroup_ids_out_of_scope(self) -> frozenset:
        with self._lock:
            return frozenset(self._out)
