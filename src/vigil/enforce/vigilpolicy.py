"""vigil's own policy kind (apiVersion vigil.dev/v1, kind VigilPolicy): what
NetworkPolicy cannot say.  docs/POLICY.md documents the format; in short::

    spec:
      mode: enforce | audit             # audit: alert only, allow
      selector:                         # all given keys must match; {} = every container
        namespaces: [web]
        podLabels: {app: web}
        host: false                     # true: host processes are selected too
      file:
        deny: [{path: /etc/shadow, access: read}]   # opens refused: EPERM (LSM/fmod_ret) or kill
      exec:
        deny: [{path: /usr/bin/nc}, {name: ncat}]
        allow: [{path: /usr/bin/python3}]   # given: every other executable is killed
      egress:                           # and ingress: the same two lists
        deny:  [{cidr: 0.0.0.0/0, except: [...], ports: ["80", "8000-8099"], protocol: TCP}]
        allow: [...]                    # given: default deny, these are allowed
      # an egress entry may add process: {paths: [...], names: [...]}: those processes only
"""
from __future__ import annotations

import ipaddress

from vigil.enforce.model import (ALL_PEERS, DIRECTIONS, NetRule, Peer, Policy, PortSpec, PROTOCOLS)
from vigil.enforce.networkpolicy import parse_cidr

API_VERSION = "vigil.dev/v1"
COMM_LEN = 15          # the kernel's task name (proc.name) keeps 15 characters
PATH_MAX = 255


def _unknown(doc, key, value, known, what):
    for k in value:
        if k not in known:
            raise doc.error(f"unknown key {k!r} (known: {', '.join(known)})", key + (k,), what)


def _mapping(doc, key, v, what, default=None):
    if v is None:
        return {} if default is None else default
    if not isinstance(v, dict):
        raise doc.error("expected a mapping", key, what)
    return v


def _str_list(doc, key, v, what, name):
    if v is None:
        return []
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
        raise doc.error(f"expected a list of {name}", key, what)
    return list(v)


def parse_ports(doc, key, v, proto, what) -> tuple:
    """"80", 80, "8000-8099" -> PortSpecs of one protocol (0 = any)."""
    if v is None:
        return (PortSpec(proto),)
    if not isinstance(v, list):
        v = [v]
    out = []
    for i, p in enumerate(v):
        text = str(p).strip()
        lo, _, hi = text.partition("-")
        try:
            a, b = int(lo), int(hi or lo)
        except ValueError:
            a = b = -1
        if isinstance(p, bool) or not (0 < a <= b < 65536):
            raise doc.error(f"invalid port {p!r}: expected a port 1-65535 or a range like "
                            "8000-8099", key + (i,), what)
        out.append(PortSpec(proto, a, b))
    return tuple(out)


def exec_identity(doc, key, how: str, text, what) -> tuple:
    """("path"|"name", text) of an exec deny entry or a process selector, checked."""
    if not isinstance(text, str) or not text:
        raise doc.error(f"expected a {'path' if how == 'path' else 'process name'}", key, what)
    if how == "path" and (not text.startswith("/") or len(text) > PATH_MAX):
        raise doc.error(f"path {text!r}: expected an absolute path of at most {PATH_MAX} "
                        "bytes", key, what)
    if how == "name" and ("/" in text or len(text) > COMM_LEN):
        raise doc.error(f"name {text!r}: expected a process name (no '/', at most "
                        f"{COMM_LEN} characters, as the kernel keeps it)", key, what)
    return how, text


def _process(doc, key, v, what) -> tuple:
    """process: {paths: [...], names: [...]} -> (("path", p), ("name", n), ...)."""
    if key[1] != "egress":
        raise doc.error("a process selector applies to egress only (when a connection comes "
                        "in, the process that will accept it is not known yet)", key, what)
    v = _mapping(doc, key, v, what)
    _unknown(doc, key, v, ("paths", "names"), what)
    out = []
    for lk, how in (("paths", "path"), ("names", "name")):
        items = v.get(lk)
        if items is None:
            continue
        if isinstance(items, str):
            items = [items]
        if not isinstance(items, list):
            raise doc.error(f"expected a list of {lk}", key + (lk,), what)
        out += [exec_identity(doc, key + (lk, i), how, x, what) for i, x in enumerate(items)]
    if not out:
        raise doc.error("expected paths: [...] and/or names: [...]", key, what)
    return tuple(sorted(set(out)))


def _net_entry(doc, key, v, what) -> NetRule:
    v = _mapping(doc, key, v, what)
    _unknown(doc, key, v, ("cidr", "except", "ports", "protocol", "process"), what)
    procs = _process(doc, key + ("process",), v["process"], what) if "process" in v else ()
    proto_name = str(v.get("protocol", "TCP"))
    if proto_name.upper() == "ANY":
        proto = 0
    elif proto_name.upper() in PROTOCOLS:
        proto = PROTOCOLS[proto_name.upper()]
    else:
        raise doc.error(f"unknown protocol {proto_name!r} (known: TCP, UDP, SCTP, any)",
                        key + ("protocol",), what)
    ports = parse_ports(doc, key + ("ports",), v.get("ports"), proto, what)
    if v.get("cidr") is None:
        if v.get("except"):
            raise doc.error("except needs a cidr", key + ("except",), what)
        return NetRule(ALL_PEERS, ports, procs)
    cidrs = v["cidr"] if isinstance(v["cidr"], list) else [v["cidr"]]
    peers = []
    for j, c in enumerate(cidrs):
        ck = key + ("cidr",) + ((j,) if isinstance(v["cidr"], list) else ())
        text = str(c)
        try:
            net = parse_cidr(doc, ck, text, what) or ipaddress.ip_network(text)
        except ValueError:
            raise doc.error(f"invalid cidr {text!r}: expected an address or a block like "
                            "10.0.0.0/8", ck, what) from None
        excepts = []
        for i, e in enumerate(_str_list(doc, key + ("except",), v.get("except"), what, "CIDRs")):
            ek = key + ("except", i)
            try:
                n = ipaddress.ip_network(e, strict=False)
            except ValueError:
                raise doc.error(f"invalid cidr {e!r}", ek, what) from None
            if n.version == net.version:
                if not n.subnet_of(net):
                    raise doc.error(f"{e} is not inside {net}", ek, what)
                excepts.append(n)
        peers.append(Peer(net, tuple(excepts)))
    return NetRule(tuple(peers), ports, procs)


def _selector(doc, v, what):
    key = ("spec", "selector")
    v = _mapping(doc, key, v, what)
    _unknown(doc, key, v, ("namespaces", "podLabels", "host"), what)
    namespaces = set(_str_list(doc, key + ("namespaces",), v.get("namespaces"), what,
                               "namespaces"))
    labels = _mapping(doc, key + ("podLabels",), v.get("podLabels"), what)
    labels = {str(k): str(x) for k, x in labels.items()}
    host = v.get("host", False)
    if not isinstance(host, bool):
        raise doc.error("expected true or false", key + ("host",), what)

    def select(wl):
        if wl.is_host:
            return host
        if namespaces and wl.namespace not in namespaces:
            return False
        return all(wl.labels.get(k) == x for k, x in labels.items())
    select.containers = True
    return select


def _exec_allow(doc, ex, what) -> list:
    """exec.allow: [{path: ...}] -- paths only (a process chooses its own name)."""
    if "allow" not in ex:
        return []
    allow = ex["allow"]
    key = ("spec", "exec", "allow")
    if not isinstance(allow, list):
        raise doc.error("expected a list of {path: /absolute/path}", key, what)
    out = []
    for i, e in enumerate(allow):
        k = key + (i,)
        if isinstance(e, dict) and set(e) == {"name"}:
            raise doc.error("exec.allow takes paths only: a process picks its own name",
                            k + ("name",), what)
        if not isinstance(e, dict) or set(e) != {"path"} or not isinstance(e["path"], str):
            raise doc.error("expected {path: /absolute/path}", k, what)
        text = e["path"]
        if not text.startswith("/") or len(text) > PATH_MAX:
            raise doc.error(f"path {text!r}: expected an absolute path of at most {PATH_MAX} "
                            "bytes", k + ("path",), what)
        out.append(text)
    if not out:
        raise doc.error("an empty allow list would kill every exec; leave exec.allow out "
                        "to allow every executable", key, what)
    return out


ACCESS = {"read": 1, "write": 2, "any": 3}     # OPEN_WANT_* (events.h)


def _file_deny(doc, spec, what) -> list:
    """file.deny: [{path: /abs/file, access: read|write|any}] -> [(path, modes)]."""
    key = ("spec", "file")
    sec = _mapping(doc, key, spec.get("file"), what)
    _unknown(doc, key, sec, ("deny",), what)
    if "deny" not in sec:
        return []
    deny = sec["deny"]
    if not isinstance(deny, list) or not deny:
        raise doc.error("expected a list of {path: /absolute/path, access: read|write|any}",
                        key + ("deny",), what)
    out = []
    for i, e in enumerate(deny):
        k = key + ("deny", i)
        if not isinstance(e, dict) or "path" not in e:
            raise doc.error("expected {path: /absolute/path, access: read|write|any}", k, what)
        _unknown(doc, k, e, ("path", "access"), what)
        text = e["path"]
        if not isinstance(text, str) or not text.startswith("/") or len(text) > PATH_MAX \
                or text.endswith("/"):
            raise doc.error(f"path {text!r}: expected an absolute path of a file, at most "
                            f"{PATH_MAX} bytes", k + ("path",), what)
        access = e.get("access", "any")
        if access not in ACCESS:
            raise doc.error(f"unknown access {access!r} (known: {', '.join(ACCESS)})",
                            k + ("access",), what)
        out.append((text, ACCESS[access]))
    return out


def parse_vigil_policy(doc) -> Policy:
    d = doc.data
    meta = _mapping(doc, ("metadata",), d.get("metadata"), "VigilPolicy")
    if not meta.get("name"):
        raise doc.error("a name is required", ("metadata", "name"), "VigilPolicy")
    name = str(meta["name"])
    what = f'VigilPolicy "{name}"'
    spec = _mapping(doc, ("spec",), d.get("spec"), what)
    _unknown(doc, ("spec",), spec, ("mode", "selector", "exec", "file", "egress", "ingress"),
             what)
    mode = spec.get("mode", "enforce")
    if mode not in ("enforce", "audit"):
        raise doc.error(f"unknown mode {mode!r} (known: enforce, audit)", ("spec", "mode"), what)
    pol = Policy("VigilPolicy", name, "", mode, doc.where())
    pol.select = _selector(doc, spec.get("selector"), what)
    pol.file_deny = _file_deny(doc, spec, what)
    ex = _mapping(doc, ("spec", "exec"), spec.get("exec"), what)
    _unknown(doc, ("spec", "exec"), ex, ("deny", "allow"), what)
    pol.exec_allow = _exec_allow(doc, ex, what)
    deny = ex.get("deny") or []
    if not isinstance(deny, list):
        raise doc.error("expected a list of {path: ...} or {name: ...}", ("spec", "exec", "deny"),
                        what)
    for i, e in enumerate(deny):
        k = ("spec", "exec", "deny", i)
        if not isinstance(e, dict) or len(e) != 1 or next(iter(e)) not in ("path", "name") \
                or not isinstance(next(iter(e.values())), str) or not next(iter(e.values())):
            raise doc.error("expected {path: /absolute/path} or {name: process-name}", k, what)
        (how, text), = e.items()
        pol.exec_deny.append(exec_identity(doc, k + (how,), how, text, what))
    for direction in DIRECTIONS:
        sec = _mapping(doc, ("spec", direction), spec.get(direction), what)
        _unknown(doc, ("spec", direction), sec, ("allow", "deny"), what)
        for lst in ("allow", "deny"):
            entries = sec.get(lst)
            if entries is None:
                continue
            if not isinstance(entries, list):
                raise doc.error("expected a list of {cidr, ports, protocol}",
                                ("spec", direction, lst), what)
            rules = [_net_entry(doc, ("spec", direction, lst, i), e, what)
                     for i, e in enumerate(entries)]
            getattr(pol, lst)[direction].extend(rules)
            if lst == "allow":
                pol.isolates.add(direction)
    return pol


__all__ = ["parse_vigil_policy", "parse_ports", "API_VERSION"]
