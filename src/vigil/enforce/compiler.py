"""Policies x workloads -> the policy sets the kernel enforces.

For each workload, the policies selecting it are folded into one
:class:`PolicySet` (twice: the enforce-mode ones, and all of them for audit
reports).  A set holds, per direction, whether it is default-deny and the
address blocks allowed or denied with their port ranges, as longest-prefix
entries: for every block (and every ``except``) the ports are the union over
the rules whose block contains it and whose excepts do not, so one LPM lookup
answers for an address whatever overlaps.  Identical sets are shared.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from vigil.enforce.documents import PolicyError
from vigil.enforce.model import DIRECTIONS, EGRESS, INGRESS, ALL_PORTS
from vigil.enforce.networkpolicy import namespace_labels

RANGES_MAX = 16          # enforce.h ENF_RANGES
ALLOW, DENY = 1, 2       # enforce.h ENF_LIST_*
DIR_CODE = {EGRESS: 1, INGRESS: 2}
F_DENY_EGRESS, F_DENY_INGRESS, F_NET_DENY, F_EXEC, F_EXEC_PATH, F_PROC = 1, 2, 4, 8, 16, 32
F_EXEC_ALLOW = 64        # enforce.h ENF_HAS_EXEC_ALLOW: exec allow-list, everything else killed
F_FILE = 128             # enforce.h ENF_HAS_FILE: file entries (enf_files)
EXEC_NAME, EXEC_PATH, EXEC_ALLOW = 1, 2, 3
COMM_MAX = 15


@dataclass(frozen=True)
class PolicySet:
    flags: int
    nets: tuple        # ((dir, list, family 4|6, packed addr, prefixlen), ((lo, hi, proto, policy), ...))
    execs: tuple       # ((what, text), policy)
    defaults: tuple    # ((dir, (policy keys ...)), ...): who made a direction default-deny
    policies: tuple    # the policy keys folded in
    proc_nets: tuple = ()   # ((process class, net entry as in nets), ranges): process-limited
    files: tuple = ()       # ((path, OPEN_WANT_* modes), policy): opens denied (enf_files)

    def default_policies(self, direction: str) -> tuple:
        return dict(self.defaults).get(direction, ())

    @property
    def entries(self) -> int:
        return len(self.nets) + len(self.execs) + len(self.proc_nets) + len(self.files)


PROC_CLASSES_MAX = 255  # enforce.h enf_tag: one byte


class PolicyIndex:
    """Policy key <-> a small stable number (what the kernel reports); and the
    process classes of process selectors: (EXEC_NAME|EXEC_PATH, text) -> 1..255,
    never reused while the agent runs (running processes keep their tags)."""

    def __init__(self):
        self._ids: dict = {}
        self.keys: list = []
        self.procs: dict = {}

    def proc_classes(self, procs) -> tuple:
        out = []
        for how, text in procs:
            key = (EXEC_PATH, text) if how == "path" else (EXEC_NAME, text[:COMM_MAX])
            c = self.procs.get(key)
            if c is None:
                if len(self.procs) >= PROC_CLASSES_MAX:
                    raise PolicyError(f"more than {PROC_CLASSES_MAX} distinct process names and "
                                      "paths in process selectors")
                c = self.procs[key] = len(self.procs) + 1
            out.append(c)
        return tuple(sorted(set(out)))

    def __call__(self, key: str) -> int:
        i = self._ids.get(key)
        if i is None:
            i = self._ids[key] = len(self.keys)
            if i >= 0xffff:
                raise PolicyError("more than 65534 policies")
            self.keys.append(key)
        return i

    def name(self, i: int) -> str:
        return self.keys[i] if 0 <= i < len(self.keys) else ""


def _merge(ranges: set, where: str) -> tuple:
    """At most RANGES_MAX (lo, hi, proto, policy), overlapping ones merged."""
    if any(r[0] == 0 and r[1] == 65535 and r[2] == 0 for r in ranges):
        pol = min(r[3] for r in ranges if r[0] == 0 and r[1] == 65535 and r[2] == 0)
        return ((0, 65535, 0, pol),)
    out = sorted(ranges)
    if len(out) <= RANGES_MAX:
        return tuple(out)
    merged = []
    for lo, hi, proto, pol in sorted(ranges, key=lambda r: (r[2], r[0], r[1])):
        if merged and merged[-1][2] == proto and lo <= merged[-1][1] + 1:
            m = merged[-1]
            merged[-1] = (m[0], max(m[1], hi), proto, m[3])
        else:
            merged.append((lo, hi, proto, pol))
    if len(merged) > RANGES_MAX:
        raise PolicyError(f"{where}: more than {RANGES_MAX} distinct port ranges for one address "
                          "block; merge them into ranges")
    return tuple(merged)


def lpm_entries(grants: list, where: str) -> dict:
    """grants: [(network, excepts, {(lo, hi, proto, policy)})] ->
    {network: merged ranges} over every block and except (see the module doc)."""
    by_net: dict = {}
    for net, excepts, ranges in grants:
        by_net.setdefault(net, []).append((excepts, ranges))
    lengths = {4: set(), 6: set()}
    for net in by_net:
        lengths[net.version].add(net.prefixlen)
    blocks = set(by_net)
    for _net, excepts, _r in grants:
        blocks.update(excepts)
    out = {}
    for p in blocks:
        ranges: set = set()
        for ln in sorted(lengths[p.version]):
            if ln > p.prefixlen:
                break
            sup = p if ln == p.prefixlen else p.supernet(new_prefix=ln)
            for excepts, rs in by_net.get(sup, ()):
                if not any(p.subnet_of(e) for e in excepts if e.version == p.version):
                    ranges |= rs
        out[p] = _merge(ranges, where) if ranges else ()
    return out


def _ranges(ports, policy: int, named: dict) -> set:
    """PortSpecs -> (lo, hi, proto, policy); named ports from ``named``
    ({name: [(proto, port)]}), unresolvable ones dropped."""
    out = set()
    for p in ports:
        if p.name:
            for proto, port in named.get(p.name, ()):
                if proto == p.proto:
                    out.add((port, port, proto, policy))
        else:
            out.add((p.lo, p.hi, p.proto, policy))
    return out


def _host_net(ip) -> object:
    return ipaddress.ip_network(ip)


class Compiler:
    def __init__(self, policies: list, workloads: list, index: PolicyIndex):
        self.policies = policies
        self.workloads = workloads
        self.index = index
        self._pods = [w for w in workloads if not w.is_host]

    def peer_pods(self, peer) -> list:
        out = []
        for w in self._pods:
            if peer.ns_selector is None:
                if w.namespace != peer.namespace:
                    continue
            elif not peer.ns_selector(namespace_labels(w.namespace)):
                continue
            if peer.pod_selector is None or peer.pod_selector(w.labels):
                out.append(w)
        return out

    def _grants(self, wl, rules, direction: str, policy: int) -> list:
        out = []
        for rule in rules:
            for peer in rule.peers:
                if peer.is_block:
                    named = wl.ports if direction == INGRESS else {}
                    rs = _ranges(rule.ports, policy, named)
                    if rs:
                        out.append((peer.cidr, peer.excepts, rs))
                    continue
                for pod in self.peer_pods(peer):
                    named = pod.ports if direction == EGRESS else wl.ports
                    rs = _ranges(rule.ports, policy, named)
                    if rs:
                        out.extend((_host_net(ip), (), rs) for ip in pod.ips)
        return out

    def policy_set(self, wl, policies: list):
        """The set of the given policies that select wl; None when none does."""
        sel = [p for p in policies if p.selects(wl)]
        if not sel:
            return None
        flags = 0
        nets = []
        proc_nets = []
        defaults = []
        for direction in DIRECTIONS:
            d = DIR_CODE[direction]
            isolating = [p for p in sel if direction in p.isolates]
            if isolating:
                flags |= F_DENY_EGRESS if direction == EGRESS else F_DENY_INGRESS
                defaults.append((direction, tuple(p.key for p in isolating)))
                for proc, grants in self._by_class(wl, isolating, "allow", direction).items():
                    for net, rs in lpm_entries(grants, f"{wl.label} {direction} allow").items():
                        entry = (d, ALLOW, net.version, net.network_address.packed, net.prefixlen)
                        (proc_nets.append(((proc, entry), rs)) if proc else nets.append((entry, rs)))
            deny = self._by_class(wl, sel, "deny", direction)
            if deny:
                flags |= F_NET_DENY
            for proc, grants in deny.items():
                # an except's entry has no ports: it must stay, or the longer block's
                # lookup would fall through to the denied block around it
                for net, rs in lpm_entries(grants, f"{wl.label} {direction} deny").items():
                    entry = (d, DENY, net.version, net.network_address.packed, net.prefixlen)
                    (proc_nets.append(((proc, entry), rs)) if proc else nets.append((entry, rs)))
        if proc_nets:
            flags |= F_PROC
        execs = {}
        for p in sel:
            for how, text in p.exec_deny:
                flags |= F_EXEC
                if how == "path":
                    flags |= F_EXEC_PATH
                    key = (EXEC_PATH, text)
                else:
                    key = (EXEC_NAME, text[:COMM_MAX])
                execs.setdefault(key, self.index(p.key))
        allowing = [p for p in sel if p.exec_allow]
        if allowing:
            flags |= F_EXEC | F_EXEC_ALLOW
            defaults.append(("exec", tuple(p.key for p in allowing)))
            for p in allowing:
                for path in p.exec_allow:
                    execs.setdefault((EXEC_ALLOW, path), self.index(p.key))
        files: dict = {}
        for p in sel:
            for path, modes in p.file_deny:
                pol, m = files.get(path, (self.index(p.key), 0))
                files[path] = (pol, m | modes)
        if files:
            flags |= F_FILE
        return PolicySet(flags, tuple(sorted(nets)), tuple(sorted(execs.items())),
                         tuple(defaults), tuple(p.key for p in sel), tuple(sorted(proc_nets)),
                         tuple(sorted(((path, m), pol) for path, (pol, m) in files.items())))

    def _by_class(self, wl, policies, lst: str, direction: str) -> dict:
        """{process class (0 = any process): grants} of the policies' allow or deny list."""
        out: dict = {}
        for p in policies:
            pid = self.index(p.key)
            for rule in getattr(p, lst)[direction]:
                grants = self._grants(wl, [rule], direction, pid)
                for cls in self.index.proc_classes(rule.procs) or (0,):
                    out.setdefault(cls, []).extend(grants)
        return {c: g for c, g in out.items() if g}

    def compile(self) -> dict:
        """{workload key: (enforce set or None, audit set or None)}."""
        enforce = [p for p in self.policies if p.mode == "enforce"]
        has_audit = any(p.mode == "audit" for p in self.policies)
        out = {}
        for wl in self.workloads:
            e = self.policy_set(wl, enforce)
            a = None
            if has_audit and any(p.mode == "audit" and p.selects(wl) for p in self.policies):
                a = self.policy_set(wl, self.policies)
            out[wl.key] = (e, a)
        return out


def uses_peers(policies: list) -> bool:
    """Do the policies name pods as peers (compiled sets depend on other workloads)?"""
    return any(not peer.is_block for p in policies for lists in (p.allow, p.deny)
               for rules in lists.values() for r in rules for peer in r.peers)


__all__ = ["Compiler", "PolicySet", "PolicyIndex", "lpm_entries", "uses_peers", "ALL_PORTS"]
