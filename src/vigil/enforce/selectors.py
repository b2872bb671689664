"""Kubernetes label selectors (matchLabels + matchExpressions with In, NotIn,
Exists, DoesNotExist) and the checks Kubernetes applies to them."""
from __future__ import annotations

import re

OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")
_NAME = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")


class Selector:
    """A parsed selector; call it with a labels dict.  {} selects everything."""

    def __init__(self, labels: dict, exprs: tuple):
        self.labels = labels
        self.exprs = exprs

    def __call__(self, labels: dict) -> bool:
        labels = labels or {}
        for k, v in self.labels.items():
            if labels.get(k) != v:
                return False
        for key, op, values in self.exprs:
            has = key in labels
            if op == "In" and not (has and labels[key] in values):
                return False
            if op == "NotIn" and has and labels[key] in values:
                return False
            if op == "Exists" and not has:
                return False
            if op == "DoesNotExist" and has:
                return False
        return True

    @property
    def empty(self) -> bool:
        return not self.labels and not self.exprs


def _label_key_ok(k: str) -> bool:
    prefix, _, name = k.rpartition("/")
    return bool(name) and len(name) <= 63 and bool(_NAME.match(name)) and len(prefix) <= 253


def parse_selector(doc, key: tuple, value, what: str) -> Selector:
    """A LabelSelector at ``key`` of ``doc`` (PolicyError on mistakes)."""
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise doc.error("Invalid value: must be a label selector (matchLabels, "
                        "matchExpressions)", key, what)
    for k in value:
        if k not in ("matchLabels", "matchExpressions"):
            raise doc.error(f"unknown field {k!r}", key + (k,), what)
    ml = value.get("matchLabels") or {}
    if not isinstance(ml, dict):
        raise doc.error("Invalid value: must be a map of label keys to values",
                        key + ("matchLabels",), what)
    labels = {}
    for k, v in ml.items():
        if not isinstance(k, str) or not _label_key_ok(k):
            raise doc.error(f"Invalid value: {k!r}: not a valid label key",
                            key + ("matchLabels",), what)
        if isinstance(v, bool) or v is None or not _NAME.match(str(v)) or len(str(v)) > 63:
            raise doc.error(f"Invalid value: {v!r}: not a valid label value",
                            key + ("matchLabels", k), what)
        labels[k] = str(v)
    me = value.get("matchExpressions") or []
    if not isinstance(me, list):
        raise doc.error("Invalid value: must be a list of expressions",
                        key + ("matchExpressions",), what)
    exprs = []
    for i, e in enumerate(me):
        ek = key + ("matchExpressions", i)
        if not isinstance(e, dict):
            raise doc.error("Invalid value: must be {key, operator, values}", ek, what)
        lk, op, values = e.get("key"), e.get("operator"), e.get("values")
        if not isinstance(lk, str) or not _label_key_ok(lk):
            raise doc.error("Required value: a valid label key" if lk is None else
                            f"Invalid value: {lk!r}: not a valid label key", ek + ("key",), what)
        if op not in OPERATORS:
            raise doc.error(f"Unsupported value: {op!r}: supported values: "
                            + ", ".join(f'"{o}"' for o in OPERATORS), ek + ("operator",), what)
        if op in ("In", "NotIn"):
            if not isinstance(values, list) or not values:
                raise doc.error(f"Required value: must be specified when `operator` is '{op}'",
                                ek + ("values",), what)
        elif values:
            raise doc.error(f"Forbidden: may not be specified when `operator` is '{op}'",
                            ek + ("values",), what)
        exprs.append((lk, op, frozenset(str(v) for v in (values or ()))))
    return Selector(labels, tuple(exprs))


__all__ = ["Selector", "parse_selector", "OPERATORS"]
