"""Kubernetes NetworkPolicy (networking.k8s.io/v1), parsed with Kubernetes'
checks and messages, into a :class:`vigil.enforce.model.Policy`.

Semantics (as Kubernetes defines them): ``podSelector`` picks pods of the
policy's namespace ({} = all of them); ``policyTypes`` defaults to Ingress,
plus Egress when egress rules are given; a pod selected in a direction is
default-deny there and may do what the union of the rules of every policy
selecting it allows.  A rule without ``from``/``to`` (or with an empty list)
admits every peer, a rule without ``ports`` every port; ``ingress: [{}]``
allows all, ``ingress: []`` nothing.  A peer is an ``ipBlock`` (cidr minus
``except``) or pod and/or namespace selectors (both: pods matching the pod
selector in namespaces matching the namespace selector).  Ports: protocol
TCP (default), UDP or SCTP; a number with optional ``endPort``, or a named
port, resolved per pod where the pod's ports are known.

vigil's own addition: the annotation ``vigil.dev/mode: audit`` makes a
NetworkPolicy report what it would refuse without refusing it.
"""
from __future__ import annotations

import ipaddress

from vigil.enforce.model import (ALL_PEERS, ALL_PORTS, EGRESS, INGRESS, NetRule, Peer, Policy,
                                 PortSpec, PROTOCOLS)
from vigil.enforce.selectors import parse_selector

API_VERSION = "networking.k8s.io/v1"
NS_NAME_LABEL = "kubernetes.io/metadata.name"
MODE_ANNOTATION = "vigil.dev/mode"
_SPEC_KEYS = ("podSelector", "policyTypes", "ingress", "egress")


def namespace_labels(ns: str) -> dict:
    """What vigil knows of a namespace's labels: the name label Kubernetes sets."""
    return {NS_NAME_LABEL: ns}


def _unknown(doc, key, value, known, what):
    for k in value:
        if k not in known:
            raise doc.error(f"unknown field {k!r} (known: {', '.join(known)})", key + (k,), what)


def parse_cidr(doc, key, text, what):
    try:
        return ipaddress.ip_network(str(text), strict=False) if "/" in str(text) else None
    except ValueError:
        pass
    raise doc.error(f'Invalid value: "{text}": must be a valid CIDR (e.g. 10.0.0.0/8 or '
                    'fd00::/8)', key, what)


def _ip_block(doc, key, v, what) -> Peer:
    if not isinstance(v, dict):
        raise doc.error("Invalid value: must be {cidr, except}", key, what)
    _unknown(doc, key, v, ("cidr", "except"), what)
    if v.get("cidr") in (None, ""):
        raise doc.error("Required value", key + ("cidr",), what)
    net = parse_cidr(doc, key + ("cidr",), v["cidr"], what)
    if net is None:
        raise doc.error(f'Invalid value: "{v["cidr"]}": must be a valid CIDR', key + ("cidr",), what)
    excepts = []
    ex = v.get("except") or []
    if not isinstance(ex, list):
        raise doc.error("Invalid value: must be a list of CIDRs", key + ("except",), what)
    for i, e in enumerate(ex):
        ek = key + ("except", i)
        n = parse_cidr(doc, ek, e, what)
        if n is None:
            raise doc.error(f'Invalid value: "{e}": must be a valid CIDR', ek, what)
        if n.version != net.version or not n.subnet_of(net) or n.prefixlen <= net.prefixlen:
            raise doc.error(f'Invalid value: "{e}": must be a strict subset of `cidr`', ek, what)
        excepts.append(n)
    return Peer(net, tuple(excepts))


def _peer(doc, key, v, ns, what) -> Peer:
    if not isinstance(v, dict):
        raise doc.error("Invalid value: must be a peer (podSelector, namespaceSelector, ipBlock)",
                        key, what)
    _unknown(doc, key, v, ("podSelector", "namespaceSelector", "ipBlock"), what)
    given = [k for k in ("podSelector", "namespaceSelector", "ipBlock") if k in v]
    if not given:
        raise doc.error("Required value: must specify a peer", key, what)
    if "ipBlock" in given and len(given) > 1:
        raise doc.error("Forbidden: may not specify both ipBlock and another peer", key, what)
    if "ipBlock" in v:
        return _ip_block(doc, key + ("ipBlock",), v["ipBlock"], what)
    pod = parse_selector(doc, key + ("podSelector",), v["podSelector"], what) \
        if "podSelector" in v else None
    nsel = parse_selector(doc, key + ("namespaceSelector",), v["namespaceSelector"], what) \
        if "namespaceSelector" in v else None
    return Peer(pod_selector=pod, ns_selector=nsel, namespace=ns)


def _port(doc, key, v, what) -> PortSpec:
    if not isinstance(v, dict):
        raise doc.error("Invalid value: must be {protocol, port, endPort}", key, what)
    _unknown(doc, key, v, ("protocol", "port", "endPort"), what)
    proto = v.get("protocol", "TCP")
    if proto not in PROTOCOLS:
        raise doc.error(f'Unsupported value: "{proto}": supported values: "SCTP", "TCP", "UDP"',
                        key + ("protocol",), what)
    p = PROTOCOLS[proto]
    port, end = v.get("port"), v.get("endPort")
    if port is None:
        if end is not None:
            raise doc.error("Required value: may not be specified when `port` is not specified",
                            key + ("endPort",), what)
        return PortSpec(p)
    if isinstance(port, str) and not port.isdigit():
        if end is not None:
            raise doc.error("Invalid value: may not be specified when `port` is non-numeric",
                            key + ("endPort",), what)
        if not port or len(port) > 15 or not port.replace("-", "").isalnum():
            raise doc.error(f'Invalid value: "{port}": must be a port number or an IANA_SVC_NAME',
                            key + ("port",), what)
        return PortSpec(p, name=port)
    if isinstance(port, bool) or not (0 < int(port) < 65536):
        raise doc.error(f"Invalid value: {port}: must be between 1 and 65535, inclusive",
                        key + ("port",), what)
    lo = int(port)
    hi = lo
    if end is not None:
        if isinstance(end, bool) or not isinstance(end, int) or not (0 < end < 65536):
            raise doc.error(f"Invalid value: {end}: must be between 1 and 65535, inclusive",
                            key + ("endPort",), what)
        if end < lo:
            raise doc.error(f"Invalid value: {end}: must be greater than or equal to `port`",
                            key + ("endPort",), what)
        hi = end
    return PortSpec(p, lo, hi)


def _rules(doc, key, rules, peer_key, ns, what) -> list:
    if rules is None:
        return []
    if not isinstance(rules, list):
        raise doc.error("Invalid value: must be a list of rules", key, what)
    out = []
    for i, r in enumerate(rules):
        rk = key + (i,)
        if r is None:
            r = {}
        if not isinstance(r, dict):
            raise doc.error(f"Invalid value: must be a rule ({peer_key}, ports)", rk, what)
        _unknown(doc, rk, r, (peer_key, "ports"), what)
        peers = r.get(peer_key) or []
        if not isinstance(peers, list):
            raise doc.error("Invalid value: must be a list of peers", rk + (peer_key,), what)
        ports = r.get("ports") or []
        if not isinstance(ports, list):
            raise doc.error("Invalid value: must be a list of ports", rk + ("ports",), what)
        ps = tuple(_peer(doc, rk + (peer_key, j), p, ns, what) for j, p in enumerate(peers))
        pt = tuple(_port(doc, rk + ("ports", j), p, what) for j, p in enumerate(ports))
        out.append(NetRule(ps or ALL_PEERS, pt or ALL_PORTS))
    return out


def parse_network_policy(doc) -> Policy:
    d = doc.data
    meta = d.get("metadata")
    if not isinstance(meta, dict) or not meta.get("name"):
        raise doc.error("Required value: name or generateName is required",
                        ("metadata", "name"), "NetworkPolicy")
    name = str(meta["name"])
    ns = str(meta.get("namespace") or "default")
    what = f'NetworkPolicy "{ns}/{name}"'
    ann = meta.get("annotations") or {}
    mode = ann.get(MODE_ANNOTATION, "enforce") if isinstance(ann, dict) else "enforce"
    if mode not in ("enforce", "audit"):
        raise doc.error(f'Unsupported value: "{mode}": supported values: "enforce", "audit"',
                        ("metadata", "annotations", MODE_ANNOTATION), what)
    spec = d.get("spec")
    if not isinstance(spec, dict):
        raise doc.error("Required value", ("spec",), what)
    _unknown(doc, ("spec",), spec, _SPEC_KEYS, what)
    if "podSelector" not in spec:
        raise doc.error("Required value", ("spec", "podSelector"), what)
    pod_sel = parse_selector(doc, ("spec", "podSelector"), spec["podSelector"], what)
    types = spec.get("policyTypes")
    if types is None or types == []:
        types = ["Ingress"] + (["Egress"] if spec.get("egress") else [])
    if not isinstance(types, list):
        raise doc.error("Invalid value: must be a list", ("spec", "policyTypes"), what)
    for i, t in enumerate(types):
        if t not in ("Ingress", "Egress"):
            raise doc.error(f'Unsupported value: "{t}": supported values: "Ingress", "Egress"',
                            ("spec", "policyTypes", i), what)
    pol = Policy("NetworkPolicy", name, ns, mode, doc.where())
    pol.isolates = {t.lower() for t in types}
    pol.allow[INGRESS] = _rules(doc, ("spec", "ingress"), spec.get("ingress"), "from", ns, what)
    pol.allow[EGRESS] = _rules(doc, ("spec", "egress"), spec.get("egress"), "to", ns, what)

    def select(wl, _sel=pod_sel, _ns=ns):
        return not wl.is_host and wl.namespace == _ns and _sel(wl.labels)
    pol.select = select
    return pol


__all__ = ["parse_network_policy", "namespace_labels", "API_VERSION", "NS_NAME_LABEL",
           "parse_cidr"]
