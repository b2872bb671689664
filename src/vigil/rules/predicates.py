"""Comparison values and predicates: converting a rule's right-hand values to
what a field's values are compared with, and one-value predicates for every
operator (used for multi-valued fields, val() comparisons and the interpreted
fallback)."""
from __future__ import annotations

import fnmatch
import ipaddress
import operator
import re

from vigil.rules.fields.base import parse_ip

STRING_OPS = frozenset(("contains", "icontains", "bcontains", "startswith", "bstartswith", "endswith",
                        "glob", "iglob", "regex", "pmatch"))
ORDER_OPS = frozenset(("<", "<=", ">", ">="))

_TRUE = {"true"}
_FALSE = {"false"}


def _to_int(s):
    s = s.strip()
    try:
        return int(s)
    except ValueError:
        return int(s, 0)


def coerce(ext, op, raw: str):
    """Convert one right-hand value to what the field's values are compared with."""
    t = ext.type
    if op in STRING_OPS:
        if op == "bcontains" or op == "bstartswith":
            h = raw.strip().replace(" ", "")
            try:
                return bytes.fromhex(h)
            except ValueError:
                raise ValueError(f"'{raw}' is not a hex byte string for {op}") from None
        return raw
    if t in ("int", "abstime"):
        try:
            return _to_int(raw)
        except ValueError:
            raise ValueError(f"'{raw}' is not a number (field {ext.key} is numeric)") from None
    if t == "rawarg":
        try:
            return _to_int(raw)
        except ValueError:
            return raw
    if t == "bool":
        s = raw.strip().lower()
        if s in _TRUE:
            return True
        if s in _FALSE:
            return False
        raise ValueError(f"'{raw}' is not true or false (field {ext.key} is boolean)")
    if t == "ip":
        try:
            return str(ipaddress.ip_address(raw.strip()))
        except ValueError:
            raise ValueError(f"'{raw}' is not an IP address (field {ext.key})") from None
    if t == "ipnet":
        try:
            return ipaddress.ip_network(raw.strip(), strict=False)
        except ValueError:
            raise ValueError(f"'{raw}' is not an IP network (field {ext.key})") from None
    return raw


def _innet(v, net):
    if v is None:
        return False
    ip = parse_ip(v)
    return ip is not None and ip.version == net.version and ip in net


GLOB_CHARS = set("*?[")


def make_pmatch(prefixes):
    exact = set()
    globs = []
    for p in prefixes:
        if any(c in GLOB_CHARS for c in p):
            pat = p.rstrip("/") or "/"
            globs.append(re.compile(fnmatch.translate(pat)[:-2] + r"(?:/.*)?\Z", re.S).match)
        else:
            exact.add(p.rstrip("/") or "/")
    root = "/" in exact

    def pm(x):
        if x is None:
            return False
        if not isinstance(x, str):
            x = str(x)
        if root and x.startswith("/"):
            return True
        if x in exact:
            return True
        d = x
        i = d.rfind("/")
        while i > 0:
            d = d[:i]
            if d in exact:
                return True
            i = d.rfind("/")
        # a glob matches the whole path or a leading part of it up to a "/"
        for g in globs:
            if g(x) is not None:
                return True
        return False
    return pm


def as_str(x):
    return x if isinstance(x, str) else str(x)


def make_pred(op, t, v):
    """One-argument predicate over a field value (for multi-valued fields)."""
    if op == "exists":
        return lambda x: x is not None
    if op in ("=", "=="):
        if t == "ipnet":
            return lambda x: _innet(x, v)
        return lambda x: x is not None and x == v
    if op == "!=":
        if t == "ipnet":
            return lambda x: x is not None and not _innet(x, v)
        return lambda x: x is not None and x != v
    if op in ORDER_OPS:
        f = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}[op]

        def order(x):
            try:
                return x is not None and f(x, v)
            except TypeError:
                return False
        return order
    if op == "contains":
        return lambda x: x is not None and v in as_str(x)
    if op == "icontains":
        lv = v.lower()
        return lambda x: x is not None and lv in as_str(x).lower()
    if op == "bcontains":
        return lambda x: x is not None and v in as_str(x).encode("utf-8", "surrogateescape")
    if op == "bstartswith":
        return lambda x: x is not None and as_str(x).encode("utf-8", "surrogateescape").startswith(v)
    if op == "startswith":
        return lambda x: x is not None and as_str(x).startswith(v)
    if op == "endswith":
        return lambda x: x is not None and as_str(x).endswith(v)
    if op in ("glob", "iglob", "regex"):
        m = v
        return lambda x: x is not None and m(as_str(x)) is not None
    if op in ("in", "intersects"):
        if t == "ipnet":
            nets = v
            return lambda x: any(_innet(x, n) for n in nets)
        return lambda x: x in v
    if op == "pmatch":
        return v
    raise ValueError(f"unsupported operator {op}")


def make_pred2(op):
    """Two-argument predicate for `field op val(other)`."""
    table = {"=": operator.eq, "==": operator.eq, "!=": operator.ne, "<": operator.lt,
             "<=": operator.le, ">": operator.gt, ">=": operator.ge,
             "contains": lambda a, b: as_str(b) in as_str(a),
             "icontains": lambda a, b: as_str(b).lower() in as_str(a).lower(),
             "startswith": lambda a, b: as_str(a).startswith(as_str(b)),
             "endswith": lambda a, b: as_str(a).endswith(as_str(b)),
             "glob": lambda a, b: fnmatch.fnmatchcase(as_str(a), as_str(b)),
             "iglob": lambda a, b: fnmatch.fnmatchcase(as_str(a).lower(), as_str(b).lower())}
    f = table.get(op)
    if f is None:
        raise ValueError(f"operator '{op}' cannot be used with val()")

    def pred(a, b):
        if a is None or b is None:
            return False
        if isinstance(a, list):
            return any(pred(x, b) for x in a)
        if isinstance(b, list):
            return any(pred(a, y) for y in b)
        try:
            if type(a) is not type(b) and not (isinstance(a, str) or isinstance(b, str)):
                return bool(f(a, b))
            if isinstance(a, str) != isinstance(b, str) and op in ("=", "==", "!="):
                return bool(f(as_str(a), as_str(b)))
            return bool(f(a, b))
        except TypeError:
            return False
    return pred


def any_match(pred, vals):
    if not vals:
        return False
    for v in vals:
        if pred(v):
            return True
    return False
