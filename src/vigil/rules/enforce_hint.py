"""Rules with ``enforce: kill`` that the kernel could decide by itself.

A rule kills from user space, after the event reached vigil (milliseconds
later: the process has run).  When its condition is only "an exec of these
binaries" or "an outbound connect to these ports/blocks", a VigilPolicy says
the same and is enforced in the kernel before anything runs or connects
(docs/POLICY.md).  :func:`kernel_hint` finds those rules and writes the
equivalent policy for the warning.
"""
from __future__ import annotations

import ipaddress
import re
from typing import Optional

from vigil.events import Kind
from vigil.rules.condition import Cmp
from vigil.rules.errors import RulesWarning
from vigil.rules.parser import And, Or

EQ_IN = ("=", "==", "in")
EXEC_KEYS = {"proc.name": "name", "proc.exepath": "path", "proc.exe": "path"}


def _terms(node) -> list:
    return list(node.items) if isinstance(node, And) else [node]


def _values(c) -> list:
    v = c.value
    return sorted(str(x) for x in (v if isinstance(v, frozenset) else (c.raw if isinstance(
        c.raw, (tuple, list)) else (v,))))


def _scope(c) -> Optional[dict]:
    """A term that only says which workloads: the policy selector it is, or None."""
    key = c.ext.key
    if key == "container.id" and c.op == "!=" and str(c.value) == "host":
        return {}
    if key == "k8s.ns.name" and c.op in EQ_IN:
        return {"namespaces": _values(c)}
    return None


def _yaml_list(vals) -> str:
    return "[" + ", ".join(vals) + "]"


def _policy(selector: Optional[dict], body: str) -> str:
    if selector is None:
        sel = "{host: true}"          # host processes and every container
    elif "namespaces" in selector:
        sel = f"{{namespaces: {_yaml_list(selector['namespaces'])}}}"
    else:
        sel = "{}"                    # every container
    return f"apiVersion: vigil.dev/v1, kind: VigilPolicy, spec: {{selector: {sel}, {body}}}"


def _exec_hint(cond) -> Optional[str]:
    selector, deny = None, []
    alts = cond.items if isinstance(cond, Or) else [cond]
    if len(alts) > 1:      # an or of binaries, nothing else
        for a in alts:
            if not (isinstance(a, Cmp) and a.ext.key in EXEC_KEYS and a.op in EQ_IN):
                return None
        terms = alts
    else:
        terms = _terms(cond)
    for t in terms:
        if not isinstance(t, Cmp) or t.rhs is not None:
            return None
        s = _scope(t) if len(alts) == 1 else None
        if s is not None:
            selector = {**(selector or {}), **s}
            continue
        how = EXEC_KEYS.get(t.ext.key)
        if how is None or t.op not in EQ_IN or (deny and len(alts) == 1):
            return None      # an and of two binaries' tests is no deny list
        deny += [f"{{{how}: {v}}}" for v in _values(t)]
    if not deny:
        return None
    return _policy(selector, f"exec: {{deny: {_yaml_list(deny)}}}")


def _connect_hint(cond) -> Optional[str]:
    selector, ports, cidrs, proto, process = None, [], [], "any", []
    for t in _terms(cond):
        if not isinstance(t, Cmp) or t.rhs is not None:
            return None
        s = _scope(t)
        key = t.ext.key
        if s is not None:
            selector = {**(selector or {}), **s}
        elif key in ("fd.rport", "fd.sport") and t.op in EQ_IN and not ports:
            ports = [f'"{v}"' for v in _values(t)]
        elif key in ("fd.rip", "fd.rnet", "fd.sip", "fd.snet") and t.op in EQ_IN \
                and not cidrs:
            try:
                cidrs = [str(ipaddress.ip_network(v, strict=False)) for v in _values(t)]
            except ValueError:
                return None
        elif key == "fd.l4proto" and t.op in EQ_IN and len(_values(t)) == 1:
            proto = _values(t)[0].upper()
        elif key in EXEC_KEYS and t.op in EQ_IN and not process:
            how = "names" if EXEC_KEYS[key] == "name" else "paths"
            process = [f"{how}: {_yaml_list(_values(t))}"]
        else:
            return None
    if not ports and not cidrs:
        return None
    entry = []
    if cidrs:
        entry.append(f"cidr: {_yaml_list(cidrs)}")
    if ports:
        entry.append(f"ports: {_yaml_list(ports)}")
    entry.append(f"protocol: {proto if proto in ('TCP', 'UDP') else 'any'}")
    if process:
        entry.append(f"process: {{{process[0]}}}")
    return _policy(selector, f"egress: {{deny: [{{{', '.join(entry)}}}]}}")


def kernel_hint(rule) -> Optional[RulesWarning]:
    """The warning for a compiled rule with ``enforce: kill`` whose condition a
    VigilPolicy could decide in the kernel, else None."""
    kinds = set(rule.specialized)
    if kinds == {Kind.EXEC}:
        text, what = _exec_hint(rule.specialized[Kind.EXEC]), "killed at exec, before it runs"
    elif kinds == {Kind.CONNECT}:
        text, what = (_connect_hint(rule.specialized[Kind.CONNECT]),
                      "refused at connect (EPERM), before the connection is made")
    else:
        return None
    if text is None:
        return None
    name = re.sub(r"[^a-z0-9]+", "-", rule.name.lower()).strip("-")[:63] or "rule"
    text = text.replace("spec:", f"metadata: {{name: {name}}}, spec:", 1)
    return RulesWarning(
        f"rule '{rule.name}' (enforce: kill) could be decided in the kernel: with this "
        f"VigilPolicy (vigil run --policy FILE) the process is {what}: {{{text}}}",
        rule.file, rule.line)


__all__ = ["kernel_hint"]
