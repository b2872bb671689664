"""Least-privilege policy from a profile (``vigil profiles policy WORKLOAD``).

Two documents, both enforced by ``vigil run --policy`` (docs/POLICY.md):

* a Kubernetes **NetworkPolicy** selecting the workload's pods (its namespace
  and the labels every replica had): egress only to the peers it reached
  (one ``ipBlock`` /32 or /128 per address, with its ports), ingress only to
  the ports it listened on, from the peers it accepted (any peer for a port
  where none was seen, e.g. UDP);
* a **VigilPolicy** with the same selector and ``exec.allow``: the
  executables it ran; any other is killed at exec.

Both are in audit mode (``vigil.dev/mode: audit`` on the NetworkPolicy,
``spec.mode: audit``) unless ``enforce``: report first, enforce once reviewed.
"""
from __future__ import annotations

import ipaddress
import re


class PolicyFromProfileError(Exception):
    """The profile cannot be turned into a policy (said why)."""


def _slug(workload: str) -> str:
    s = re.sub(r"[^a-z0-9-]+", "-", workload.lower()).strip("-")
    return ("vigil-profile-" + s)[:253].rstrip("-")


def _cidr(addr: str) -> str:
    ip = ipaddress.ip_address(addr)
    if ip.version == 6 and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return f"{ip}/{32 if ip.version == 4 else 128}"


def _ports(items) -> list:
    return [{"protocol": proto, "port": port} for port, proto in sorted(items)]


def policies_for(d: dict, enforce: bool = False, ingress_any_peer: bool = False) -> list:
    """[NetworkPolicy, VigilPolicy] for a profile in Profile.to_dict() form."""
    if d.get("kind") == "host":
        raise PolicyFromProfileError(
            f"{d['workload']}: a host executable's profile cannot become a policy (policies "
            "select pods, or every host process at once)")
    labels = d.get("labels") or {}
    if not labels:
        raise PolicyFromProfileError(
            f"{d['workload']}: its pods have no label in common to select them by (a policy "
            "would select every pod of the namespace)")
    ns = d.get("namespace") or "default"
    name = _slug(d["workload"])
    egress_by_peer: dict = {}
    for e in d.get("egress") or ():
        egress_by_peer.setdefault(_cidr(e["addr"]), set()).add((e["port"], e["protocol"]))
    egress = [{"to": [{"ipBlock": {"cidr": cidr}}], "ports": _ports(ports)}
              for cidr, ports in sorted(egress_by_peer.items())]
    peers_by_port: dict = {}
    for i in d.get("ingress") or ():
        peers_by_port.setdefault((i["port"], i["protocol"]), set()).add(_cidr(i["addr"]))
    ingress = []
    for port, proto in sorted((x["port"], x["protocol"]) for x in d.get("listen") or ()):
        rule = {"ports": [{"protocol": proto, "port": port}]}
        peers = peers_by_port.get((port, proto))
        if peers and not ingress_any_peer:
            rule["from"] = [{"ipBlock": {"cidr": c}} for c in sorted(peers)]
        ingress.append(rule)
    annotations = {"vigil.dev/profile": d["workload"]}
    if not enforce:
        annotations["vigil.dev/mode"] = "audit"
    netpol = {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": ns, "annotations": annotations},
        "spec": {"podSelector": {"matchLabels": dict(sorted(labels.items()))},
                 "policyTypes": ["Ingress", "Egress"], "ingress": ingress, "egress": egress},
    }
    execs = sorted(e["path"] for e in d.get("execs") or ())
    if not execs:
        raise PolicyFromProfileError(f"{d['workload']}: no executable learned (an exec "
                                     "allow-list would kill everything)")
    vpol = {
        "apiVersion": "vigil.dev/v1", "kind": "VigilPolicy",
        "metadata": {"name": name},
        "spec": {"mode": "enforce" if enforce else "audit",
                 "selector": {"namespaces": [ns], "podLabels": dict(sorted(labels.items()))},
                 "exec": {"allow": [{"path": p} for p in execs]}},
    }
    return [netpol, vpol]


def policy_yaml(d: dict, enforce: bool = False, ingress_any_peer: bool = False) -> str:
    import yaml
    head = (f"# least-privilege policies from the profile of {d['workload']} "
            f"({d.get('status')}{', partial: ' + d['partial'] if d.get('partial') else ''})\n"
            "# validate: vigil policy validate FILE; enforce: vigil run --policy FILE\n")
    return head + yaml.safe_dump_all(policies_for(d, enforce, ingress_any_peer),
                                     sort_keys=False, default_flow_style=None, width=100)


__all__ = ["policies_for", "policy_yaml", "PolicyFromProfileError"]
