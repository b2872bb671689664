"""Profiles as YAML (``vigil profiles export`` / ``import``), so that a reviewed
profile can be committed and applied on other nodes::

    apiVersion: vigil.dev/v1
    kind: WorkloadProfile
    metadata: {name: web/deployment/api/app}
    spec:
      status: locked              # learning | locked
      execs: [{path: /usr/bin/python3, args: ["<path>"]}]
      files: [/etc/hosts]         # folded paths
      prefixes: [/usr/lib/python3/]
      egress: [{addr: 10.0.0.7, port: 5432, protocol: TCP}]
      dns: [db.internal]
      listen: [{port: 8080, protocol: TCP}]
      ...

Mistakes are reported as ``file:line: WorkloadProfile "name": spec.key: what``.
"""
from __future__ import annotations

import yaml

from vigil.enforce.documents import PolicyError, read_documents
from vigil.profiles.profile import LEARNING, LOCKED

API_VERSION = "vigil.dev/v1"
KIND = "WorkloadProfile"
_NET_KEYS = {"addr": str, "port": int, "protocol": str}
# spec key -> (type, item shape); item shape: a type, or {key: type} for mappings
SPEC = {
    "kind": (str, None), "namespace": (str, None), "container": (str, None),
    "image": (str, None), "labels": (dict, None), "status": (str, None),
    "partial": (str, None), "window": ((int, float), None), "window_start": (int, None),
    "locked_at": (int, None), "created": (int, None), "replicas": (int, None),
    "history": (list, {"time": int, "note": str}), "overflow": (list, str),
    "execs": (list, {"path": str, "args": list}), "files": (list, str),
    "prefixes": (list, str), "egress": (list, _NET_KEYS), "dns": (list, str),
    "listen": (list, {"port": int, "protocol": str}), "ingress": (list, _NET_KEYS),
    "capabilities": (int, None), "syscalls": (list, str),
}
_REQUIRED_ITEM_KEYS = {"path", "addr", "port", "protocol", "time", "note"}


def to_documents(dicts) -> str:
    """YAML documents for profiles in Profile.to_dict() form."""
    docs = []
    for d in dicts:
        spec = {k: v for k, v in d.items() if k != "workload"}
        docs.append({"apiVersion": API_VERSION, "kind": KIND,
                     "metadata": {"name": d["workload"]}, "spec": spec})
    return yaml.safe_dump_all(docs, sort_keys=False, default_flow_style=None, width=100)


def _type_name(t) -> str:
    if isinstance(t, tuple):
        return "a number"
    return {str: "a string", int: "an integer", dict: "a mapping", list: "a list"}[t]


def _check(doc, key, v, t, what):
    if isinstance(v, bool) or not isinstance(v, t):
        raise doc.error(f"expected {_type_name(t)}", key, what)


def parse_profile(doc) -> dict:
    d = doc.data
    what = KIND
    if d.get("apiVersion") != API_VERSION or d.get("kind") != KIND:
        raise doc.error(f"expected apiVersion {API_VERSION} and kind {KIND}", ("kind",))
    meta = d.get("metadata")
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str) or not meta["name"]:
        raise doc.error("a name (the workload) is required", ("metadata", "name"), what)
    what = f'{KIND} "{meta["name"]}"'
    spec = d.get("spec") or {}
    if not isinstance(spec, dict):
        raise doc.error("expected a mapping", ("spec",), what)
    for k, v in spec.items():
        if k not in SPEC:
            raise doc.error(f"unknown key {k!r} (known: {', '.join(SPEC)})", ("spec", k), what)
        t, item = SPEC[k]
        _check(doc, ("spec", k), v, t, what)
        if item is None:
            continue
        for i, x in enumerate(v):
            ik = ("spec", k, i)
            if not isinstance(item, dict):
                _check(doc, ik, x, item, what)
                continue
            _check(doc, ik, x, dict, what)
            for name, it in item.items():
                if name not in x:
                    if name in _REQUIRED_ITEM_KEYS:
                        raise doc.error(f"{name} is required", ik, what)
                    continue
                _check(doc, ik + (name,), x[name], it, what)
            for name in x:
                if name not in item:
                    raise doc.error(f"unknown key {name!r} (known: {', '.join(item)})",
                                    ik + (name,), what)
    if spec.get("status", LEARNING) not in (LEARNING, LOCKED):
        raise doc.error(f"expected {LEARNING} or {LOCKED}", ("spec", "status"), what)
    for k in ("listen", "egress", "ingress"):
        for i, x in enumerate(spec.get(k) or ()):
            if not 0 < x["port"] < 65536:
                raise doc.error("expected a port 1-65535", ("spec", k, i, "port"), what)
            if x["protocol"] not in ("TCP", "UDP", "SCTP"):
                raise doc.error("expected TCP, UDP or SCTP", ("spec", k, i, "protocol"), what)
    for k in ("files", "prefixes"):
        for i, x in enumerate(spec.get(k) or ()):
            if not x.startswith("/"):
                raise doc.error("expected an absolute path", ("spec", k, i), what)
    return {"workload": meta["name"], **spec}


def read_profiles(path: str) -> list:
    """The profiles of a YAML file, as Profile.to_dict() dicts (PolicyError on mistakes)."""
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        raise PolicyError(f"cannot read profile file: {e.strerror}", path) from None
    return [parse_profile(doc) for doc in read_documents(path)]


__all__ = ["to_documents", "read_profiles", "parse_profile", "API_VERSION", "KIND"]
