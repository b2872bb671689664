"""What a policy says, once parsed (NetworkPolicy and VigilPolicy alike), and
what a workload is to a policy.

A :class:`Policy` selects workloads (``selects``) and, per direction, may make
them default-deny (``isolates``) with ``allow`` rules, and refuse ``deny``
rules outright; ``file_deny`` names files whose opens are refused (EPERM, or a
kill where the kernel has no LSM/fmod_ret hook); ``exec_deny`` names binaries killed at exec; ``exec_allow``, when
given, names the only binaries that may run (any other is killed at exec).  Peers are IP
blocks or pod/namespace selectors, resolved against the workloads known when
the policies are compiled (vigil.enforce.compiler).
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Callable, Optional

PROTOCOLS = {"TCP": 6, "UDP": 17, "SCTP": 132}
PROTO_NAMES = {v: k for k, v in PROTOCOLS.items()}
EGRESS, INGRESS = "egress", "ingress"
DIRECTIONS = (EGRESS, INGRESS)


@dataclass(frozen=True)
class PortSpec:
    proto: int            # 6 / 17 / 132, 0 = any
    lo: int = 0
    hi: int = 65535
    name: str = ""        # a named port (resolved per pod), else ""

    def text(self) -> str:
        p = PROTO_NAMES.get(self.proto, "any")
        if self.name:
            return f"{p}/{self.name}"
        if self.lo == 0 and self.hi == 65535:
            return f"{p}/*"
        return f"{p}/{self.lo}" + (f"-{self.hi}" if self.hi != self.lo else "")


ALL_PORTS = (PortSpec(0),)


@dataclass(frozen=True)
class Peer:
    """An IP block (cidr minus excepts), or the pods matching selectors."""
    cidr: Optional[object] = None                 # ipaddress network
    excepts: tuple = ()
    pod_selector: Optional[Callable] = None       # labels -> bool; None = any pod
    ns_selector: Optional[Callable] = None        # namespace labels -> bool; None = own ns only
    namespace: str = ""                           # the policy's namespace (pod selector alone)

    @property
    def is_block(self) -> bool:
        return self.cidr is not None


ANY_V4 = ipaddress.ip_network("0.0.0.0/0")
ANY_V6 = ipaddress.ip_network("::/0")
ALL_PEERS = (Peer(ANY_V4), Peer(ANY_V6))


@dataclass(frozen=True)
class NetRule:
    peers: tuple = ALL_PEERS      # () never happens: no peers given = every peer
    ports: tuple = ALL_PORTS
    procs: tuple = ()             # (("name"|"path", text), ...): only these processes; () = any


@dataclass
class Policy:
    kind: str                     # NetworkPolicy | VigilPolicy
    name: str
    namespace: str = ""
    mode: str = "enforce"         # enforce | audit
    source: str = ""              # file:line
    select: Callable = None       # Workload -> bool
    isolates: set = field(default_factory=set)       # directions made default-deny
    allow: dict = field(default_factory=lambda: {EGRESS: [], INGRESS: []})
    deny: dict = field(default_factory=lambda: {EGRESS: [], INGRESS: []})
    exec_deny: list = field(default_factory=list)    # [("name"|"path", text)]
    exec_allow: list = field(default_factory=list)   # [path]: given, every other exec is killed
    file_deny: list = field(default_factory=list)    # [(path, OPEN_WANT_* modes)]: opens denied

    @property
    def key(self) -> str:
        ns = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind} {ns}{self.name}"

    def selects(self, wl) -> bool:
        return bool(self.select(wl))

    @property
    def selects_containers(self) -> bool:
        """Could it select a container vigil has not resolved yet?"""
        return getattr(self.select, "containers", True)


@dataclass
class Workload:
    """A container (or the host) as policies see it."""
    key: str                      # container id, or "host"
    namespace: str = ""
    labels: dict = field(default_factory=dict)
    name: str = ""                # pod name, else container name
    is_host: bool = False
    ips: tuple = ()               # ipaddress addresses of its own network namespace / pod IPs
    ports: dict = field(default_factory=dict)    # named port -> [(proto, port)]
    cgroup_ids: tuple = ()

    @property
    def label(self) -> str:
        if self.is_host:
            return "host"
        who = self.name or self.key[:12]
        return f"{self.namespace}/{who}" if self.namespace else who


HOST_WORKLOAD = Workload("host", is_host=True)

__all__ = ["PortSpec", "Peer", "NetRule", "Policy", "Workload", "PROTOCOLS", "PROTO_NAMES",
           "EGRESS", "INGRESS", "DIRECTIONS", "ALL_PORTS", "ALL_PEERS", "HOST_WORKLOAD"]
