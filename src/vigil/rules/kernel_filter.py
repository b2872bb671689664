"""The kernel's open filter derived from rule conditions: the path prefixes
every matching open starts with, and for each prefix whether reads, writes or
both are wanted."""
from __future__ import annotations

from vigil.rules.analysis import value_set
from vigil.rules.condition import Cmp
from vigil.rules.fields.flags import O_FLAGS
from vigil.rules.parser import And, Const, Not, Or
from vigil.rules.predicates import GLOB_CHARS
from vigil.kernel.filters import OPEN_WANT_ALL as OPEN_ANY, OPEN_WANT_READ as OPEN_READ, \
    OPEN_WANT_WRITE as OPEN_WRITE  # one definition of the bits

# fd.realpath: a prefix on it names files too: the kernel watches them by
# identity and judges spellings it cannot trust on the resolved path
PATH_FIELDS = frozenset(("fd.name", "fd.nameraw", "fd.directory", "fd.realpath",
                         "fs.path.name", "fs.path.nameraw",
                         "evt.abspath", "evt.arg.name", "evt.arg.path", "evt.arg.pathname",
                         "evt.arg.filename"))


# ----------------------------------------------------------------- open path prefixes

def _glob_prefix(g):
    i = 0
    while i < len(g) and g[i] not in GLOB_CHARS:
        i += 1
    return g[:i]


def path_prefixes(node):
    """Prefixes every matching path must start with, or None when unconstrained.

    ``frozenset()`` means the node cannot match at all.
    """
    if isinstance(node, Const):
        return None if node.value else frozenset()
    if isinstance(node, Cmp):
        e = node.ext
        if node.rhs is not None or e.key not in PATH_FIELDS:
            return None
        vals = node.raw if node.op in ("in", "intersects", "pmatch") else (node.raw,)
        if node.op in ("=", "==", "in", "intersects", "pmatch", "startswith"):
            out = set()
            for v in vals:
                if not isinstance(v, str):
                    return None
                if e.key == "fd.directory" and node.op != "startswith":
                    v = v.rstrip("/") + "/"
                if node.op == "pmatch":
                    v = _glob_prefix(v)
                if not v:
                    return None
                out.add(v)
            return frozenset(out)
        if node.op == "glob":
            p = _glob_prefix(node.raw)
            return frozenset((p,)) if p else None
        return None
    if isinstance(node, Not):
        return None
    if isinstance(node, And):
        best = None
        for c in node.items:
            p = path_prefixes(c)
            if p is None:
                continue
            if not p:
                return p
            best = p if best is None else _intersect_prefixes(best, p)
        return best
    if isinstance(node, Or):
        acc = set()
        for c in node.items:
            p = path_prefixes(c)
            if p is None:
                return None
            acc |= p
        return frozenset(acc)
    return None


def _intersect_prefixes(a, b):
    """Prefixes of paths that start with one of `a` and with one of `b`."""
    out = set()
    for x in a:
        for y in b:
            if x.startswith(y):
                out.add(x)
            elif y.startswith(x):
                out.add(y)
    return frozenset(out)


def minimize_prefixes(prefixes):
    out = []
    for p in sorted(set(prefixes)):
        if out and p.startswith(out[-1]):
            continue
        out.append(p)
    return out


# ----------------------------------------------------------------- open filter (prefix -> modes)
#
# The kernel filter maps a path prefix to the opens it wants: OPEN_READ for
# O_RDONLY/O_RDWR opens, OPEN_WRITE for O_WRONLY/O_RDWR opens and any open with
# O_CREAT or O_TRUNC.  An open is sent up when it is one of the wanted modes
# (an O_RDWR open is both).  The analysis below over-approximates: a rule
# condition's filter must let through every open the condition could match.


_FLAG_READ = frozenset(("O_RDONLY", "O_RDWR", "O_ACCMODE"))
_FLAG_WRITE = frozenset(("O_WRONLY", "O_RDWR", "O_ACCMODE", "O_CREAT", "O_TRUNC"))
_FLAG_NAMES = frozenset(n for _, n in O_FLAGS) | _FLAG_READ | _FLAG_WRITE


def _flags_modes(text):
    """Modes of an open whose rendered flags (``O_WRONLY|O_CREAT``) are `text`."""
    toks = set(text.split("|"))
    m = (OPEN_READ if toks & _FLAG_READ else 0) | (OPEN_WRITE if toks & _FLAG_WRITE else 0)
    return m or OPEN_ANY


def open_modes(node, neg=False):
    """Open modes a single test restricts matching opens to (OPEN_ANY: none)."""
    if isinstance(node, Not):
        return open_modes(node.item, not neg)
    if not isinstance(node, Cmp) or node.rhs is not None:
        return OPEN_ANY
    key, op, v = node.ext.key, node.op, node.value
    if key in ("evt.is_open_read", "evt.is_open_write") and op in ("=", "==", "!=") \
            and isinstance(v, bool):
        truth = (v != (op == "!=")) != neg
        # is_open_read false: O_WRONLY (or creat) -> a write; is_open_write
        # false: O_RDONLY -> a read
        if key == "evt.is_open_read":
            return OPEN_READ if truth else OPEN_WRITE
        return OPEN_WRITE if truth else OPEN_READ
    if neg:
        return OPEN_ANY
    if key == "evt.type" and op in ("=", "==", "in", "intersects"):
        vals = value_set(node)
        return OPEN_WRITE if vals and vals <= {"creat"} else OPEN_ANY
    if key == "evt.arg.flags":
        if op == "contains" and isinstance(v, str) and v in _FLAG_NAMES:
            return _flags_modes(v)
        if op in ("=", "==", "in", "intersects"):
            vals = v if isinstance(v, frozenset) else (v,)
            m = 0
            for x in vals:
                if not isinstance(x, str):
                    return OPEN_ANY
                m |= _flags_modes(x)
            return m or OPEN_ANY
    return OPEN_ANY


def _and_modes(a, b):
    """Modes for opens both masks let through.  Disjoint bits (a read test and
    a write test) mean an open that is both: either bit finds it."""
    return (a & b) or (a if b else 0)


def open_filter(node):
    """{prefix: modes} covering every open the node can match.

    "" stands for any path; {} means the node cannot match an open.
    """
    if isinstance(node, Const):
        return {"": OPEN_ANY} if node.value else {}
    if isinstance(node, And):
        acc = {"": OPEN_ANY}
        for c in node.items:
            f = open_filter(c)
            out = {}
            for x, mx in acc.items():
                for y, my in f.items():
                    if x.startswith(y):
                        p = x
                    elif y.startswith(x):
                        p = y
                    else:
                        continue
                    m = _and_modes(mx, my)
                    if m:
                        out[p] = out.get(p, 0) | m
            acc = out
            if not acc:
                break
        return acc
    if isinstance(node, Or):
        acc = {}
        for c in node.items:
            for p, m in open_filter(c).items():
                acc[p] = acc.get(p, 0) | m
        return acc
    if isinstance(node, Cmp):
        p = path_prefixes(node)
        if p is not None:
            return {x: OPEN_ANY for x in p}
    return {"": open_modes(node)}


def minimize_open_filter(flt):
    """Prefix -> modes as the kernel's longest-prefix match needs them: each
    prefix also carries the modes of the shorter prefixes covering it, and a
    prefix that would answer like its covering one is dropped."""
    out = {}
    stack = []
    for p in sorted(flt):
        m = flt[p] & OPEN_ANY
        if not m:
            continue
        while stack and not p.startswith(stack[-1][0]):
            stack.pop()
        if stack:
            m |= stack[-1][1]
            if m == stack[-1][1]:
                continue
        stack.append((p, m))
        out[p] = m
    return out


# ----------------------------------------------------------------- result filter
#
# A failed syscall (ret < 0) is dropped in the kernel for a kind when no rule
# can match it: every rule for the kind requires success (``fd.num >= 0``,
# ``evt.rawres >= 0``, ``evt.res = SUCCESS``, ``evt.failed = false``, as
# Falco's open_read/open_write macros do).  The kernel counts -EINPROGRESS (a
# connect under way) as a success, so ``evt.res = EINPROGRESS`` needs no
# failed events either.

_EINPROGRESS = 115
_OK_RES = frozenset(("SUCCESS", "EINPROGRESS"))
_FLIP = {"<": ">=", "<=": ">", ">=": "<", ">": "<=", "=": "!=", "==": "!=", "!=": "="}


def _ok_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and (v >= 0 or v == -_EINPROGRESS)


def _result_cmp_ok(node, kind, neg: bool) -> bool:
    """Does this test (negated when neg) admit only successful results?"""
    from vigil.events import Kind
    if node.rhs is not None:
        return False
    key, op, v = node.ext.key, node.op, node.value
    if neg:
        if op not in _FLIP:
            return False
        op = _FLIP[op]
    if key == "evt.rawres" or (key == "fd.num" and kind in (Kind.OPEN, Kind.MEMFD)):
        if op == ">=":
            return _ok_int(v) and v >= 0
        if op == ">":
            return isinstance(v, int) and not isinstance(v, bool) and v >= -1
        if op in ("=", "=="):
            return _ok_int(v)
        if op == "in" and isinstance(v, frozenset):
            return bool(v) and all(_ok_int(x) for x in v)
        return False
    if key == "evt.res":
        if op in ("=", "=="):
            return v in _OK_RES
        if op == "in" and isinstance(v, frozenset):
            return bool(v) and v <= _OK_RES
        return False
    if key == "evt.failed" and isinstance(v, bool):
        if op in ("=", "=="):
            return v is False
        if op == "!=":
            return v is True
    return False


def success_only(node, kind, neg: bool = False) -> bool:
    """True when every event of ``kind`` the node (negated when neg) matches
    has a successful result (ret >= 0, or -EINPROGRESS): its failed events
    can be dropped in the kernel.  Over-approximates what a rule may match:
    False whenever unsure."""
    if isinstance(node, Const):
        return node.value == neg          # a node that matches nothing needs nothing
    if isinstance(node, Not):
        return success_only(node.item, kind, not neg)
    if isinstance(node, (And, Or)):
        results = (success_only(c, kind, neg) for c in node.items)
        if isinstance(node, And) != neg:  # and (or a negated or): one success test is enough
            return any(results)
        return all(results)
    if isinstance(node, Cmp):
        return _result_cmp_ok(node, kind, neg)
    return False
