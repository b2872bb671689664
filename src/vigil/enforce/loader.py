"""Loading policy files and directories: NetworkPolicy and VigilPolicy
documents, several per file (also a Kubernetes ``List``), checked as a
whole (errors name file:line)."""
from __future__ import annotations

from vigil.enforce.documents import Document, PolicyError, expand_policy_paths, read_documents
from vigil.enforce.networkpolicy import API_VERSION as NP_API, parse_network_policy
from vigil.enforce.vigilpolicy import API_VERSION as VP_API, parse_vigil_policy

KINDS = {("NetworkPolicy", NP_API): parse_network_policy,
         ("VigilPolicy", VP_API): parse_vigil_policy}


def _parse(doc: Document) -> list:
    d = doc.data
    kind, api = d.get("kind"), d.get("apiVersion")
    if kind == "List" and isinstance(d.get("items"), list):
        out = []
        for i, item in enumerate(d["items"]):
            prefix = ("items", i)
            lines = {k[2:]: v for k, v in doc.lines.items() if k[:2] == prefix}
            sub = Document(item if isinstance(item, dict) else {}, doc.file, lines, doc.index,
                           doc.lines.get(prefix, doc.start))
            out.extend(_parse(sub))
        return out
    if kind is None:
        raise doc.error("Required value: kind (NetworkPolicy or VigilPolicy)", ("kind",))
    if api is None:
        raise doc.error("Required value: apiVersion", ("apiVersion",))
    fn = KINDS.get((kind, api))
    if fn is None:
        known = ", ".join(f"{k} ({a})" for k, a in KINDS)
        raise doc.error(f"unsupported kind {kind!r} of apiVersion {api!r} (known: {known})",
                        ("kind",))
    return [fn(doc)]


def load_policies(paths) -> list:
    """Every policy in the files (directories expanded); PolicyError on the
    first mistake, or on two policies of the same kind, namespace and name."""
    out, seen = [], {}
    for path in expand_policy_paths(paths):
        for doc in read_documents(path):
            for pol in _parse(doc):
                if pol.key in seen:
                    raise PolicyError(f"{pol.key} is defined twice (first at {seen[pol.key]})",
                                      *pol.source.rsplit(":", 1)[:1],
                                      int(pol.source.rsplit(":", 1)[1]))
                seen[pol.key] = pol.source
                out.append(pol)
    return out


__all__ = ["load_policies", "PolicyError"]
