"""Compiling loaded rules into fast matchers.

Conditions are parsed once, macros inlined, lists expanded, fields resolved and
values converted to the field's type.  The result is an intermediate form
(``And``/``Or``/``Not``/``Const`` plus :class:`Cmp`) that is

* analysed for the event types a rule can match (Falco's evttype analysis,
  through and/or/not with De Morgan), and
* specialised per vigil event kind (``evt.type``/``evt.dir`` tests fold to
  constants) and turned into Python source: one function per kind that tests
  that kind's rules in order, with per-event lazily cached field values held in
  local variables.  Constants are never pasted into the source except as
  ``repr()`` literals of str/int/bool; everything else lives in the function's
  namespace.
"""
from __future__ import annotations

import fnmatch
import ipaddress
import operator
import re
from typing import Optional

from vigil.alerts.alert import priority_rank
from vigil.events import Kind
from vigil.rules import fields as F
from vigil.rules.fields.kinds import KIND_DIRS, KIND_TYPE_SETS, PRODUCED_TYPES, RULE_KINDS
from vigil.rules.loader import Chunk, RuleDef, RulesError, RulesWarning, RuleSet
from vigil.rules.parser import (And, Compare, ConditionSyntaxError, Const, FieldValue, ListValue, MacroRef, Not,
                     Or, Transform, line_col, parse_condition, parse_lhs, quote_value)

STRING_OPS = frozenset(("contains", "icontains", "bcontains", "startswith", "bstartswith", "endswith",
                        "glob", "iglob", "regex", "pmatch"))
ORDER_OPS = frozenset(("<", "<=", ">", ">="))
PATH_FIELDS = frozenset(("fd.name", "fd.nameraw", "fd.directory", "fs.path.name", "fs.path.nameraw",
                         "evt.abspath", "evt.arg.name", "evt.arg.path", "evt.arg.pathname",
                         "evt.arg.filename"))


class UnknownFieldError(RulesError):
    pass


class Cmp:
    """A resolved comparison: extractor, operator, typed value (or rhs extractor)."""
    __slots__ = ("ext", "op", "value", "rhs", "raw")

    def __init__(self, ext, op, value=None, rhs=None, raw=None):
        self.ext, self.op, self.value, self.rhs, self.raw = ext, op, value, rhs, raw

    def __repr__(self):
        if self.op == "exists":
            return f"{self.ext.key} exists"
        r = f"val({self.rhs.key})" if self.rhs is not None else repr(self.raw)
        return f"{self.ext.key} {self.op} {r}"


# ----------------------------------------------------------------- sources / errors

class Source:
    """A condition text and where its pieces were written, for error messages."""

    def __init__(self, text, chunks, what):
        self.text, self.chunks, self.what = text, chunks, what

    def where(self, pos):
        chunk = self.chunks[0]
        for c in self.chunks:
            if c.offset <= pos:
                chunk = c
        rel = pos - chunk.offset
        piece = self.text[chunk.offset:]
        line_in, col = line_col(piece, rel)
        return chunk.file, chunk.line, line_in, col, piece

    def error(self, pos, msg, cls=RulesError):
        file, line, line_in, col, piece = self.where(pos)
        src_line = piece.split("\n")[line_in - 1] if piece else ""
        at = f"column {col}" if line_in == 1 else f"line {line_in} column {col} of the condition"
        snippet = ""
        if src_line.strip() and len(src_line) <= 400:
            snippet = f"\n    {src_line}\n    {' ' * (col - 1)}^"
        return cls(f"{self.what}: {msg} (at {at}){snippet}", file, line)

    def parse(self):
        """The condition's AST; a syntax error becomes a RulesError pointing into it."""
        try:
            return parse_condition(self.text, self)
        except ConditionSyntaxError as e:
            raise self.error(e.pos, f"syntax error: {e.message}") from None


# ----------------------------------------------------------------- value handling

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
    ip = F.parse_ip(v)
    return ip is not None and ip.version == net.version and ip in net


_GLOB_CHARS = set("*?[")


def make_pmatch(prefixes):
    exact = set()
    globs = []
    for p in prefixes:
        if any(c in _GLOB_CHARS for c in p):
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


def _s(x):
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
        return lambda x: x is not None and v in _s(x)
    if op == "icontains":
        lv = v.lower()
        return lambda x: x is not None and lv in _s(x).lower()
    if op == "bcontains":
        return lambda x: x is not None and v in _s(x).encode("utf-8", "surrogateescape")
    if op == "bstartswith":
        return lambda x: x is not None and _s(x).encode("utf-8", "surrogateescape").startswith(v)
    if op == "startswith":
        return lambda x: x is not None and _s(x).startswith(v)
    if op == "endswith":
        return lambda x: x is not None and _s(x).endswith(v)
    if op in ("glob", "iglob", "regex"):
        m = v
        return lambda x: x is not None and m(_s(x)) is not None
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
             "contains": lambda a, b: _s(b) in _s(a),
             "icontains": lambda a, b: _s(b).lower() in _s(a).lower(),
             "startswith": lambda a, b: _s(a).startswith(_s(b)),
             "endswith": lambda a, b: _s(a).endswith(_s(b)),
             "glob": lambda a, b: fnmatch.fnmatchcase(_s(a), _s(b)),
             "iglob": lambda a, b: fnmatch.fnmatchcase(_s(a).lower(), _s(b).lower())}
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
                return bool(f(_s(a), _s(b)))
            return bool(f(a, b))
        except TypeError:
            return False
    return pred


def _anyp(pred, vals):
    if not vals:
        return False
    for v in vals:
        if pred(v):
            return True
    return False


# ----------------------------------------------------------------- evttype analysis

ALL_TYPES = (frozenset(), True)   # (set, is_complement)
NO_TYPES = (frozenset(), False)


def _inter(a, b):
    (A, ac), (B, bc) = a, b
    if not ac and not bc:
        return (A & B, False)
    if not ac:
        return (A - B, False)
    if not bc:
        return (B - A, False)
    return (A | B, True)


def _union(a, b):
    (A, ac), (B, bc) = a, b
    if not ac and not bc:
        return (A | B, False)
    if not ac:
        return (B - A, True)
    if not bc:
        return (A - B, True)
    return (A & B, True)


_SET_TESTS = frozenset(("=", "==", "!=", "in", "intersects"))  # value (not) in a set


def _value_set(c):
    """The values an (in)equality or `in` test compares with, as a frozenset."""
    return c.value if isinstance(c.value, frozenset) else frozenset((c.value,))


def evttypes(node, neg=False):
    if isinstance(node, Const):
        return ALL_TYPES if node.value != neg else NO_TYPES
    if isinstance(node, Cmp):
        if node.ext.key == "evt.type" and node.rhs is None and node.op in _SET_TESTS:
            vals = _value_set(node)
            positive = (node.op != "!=") != neg
            return (vals, not positive)
        return ALL_TYPES
    if isinstance(node, Not):
        return evttypes(node.item, not neg)
    if isinstance(node, (And, Or)):
        use_inter = isinstance(node, And) != neg
        acc = None
        for c in node.items:
            r = evttypes(c, neg)
            acc = r if acc is None else (_inter(acc, r) if use_inter else _union(acc, r))
        return acc if acc is not None else ALL_TYPES
    return ALL_TYPES


# ----------------------------------------------------------------- specialisation

def specialize(node, kind):
    """Fold evt.type / evt.dir tests for one event kind; simplify constants."""
    if isinstance(node, Cmp):
        key = node.ext.key
        if node.rhs is None and key in ("evt.type", "evt.dir") and node.op in _SET_TESTS:
            have = KIND_TYPE_SETS[kind] if key == "evt.type" else KIND_DIRS[kind]
            vals = _value_set(node)
            if key == "evt.type":
                m = have & vals
                if node.op == "!=":
                    if not m:
                        return Const(True)
                    if m == have:
                        return Const(False)
                    return node
                if m == have:
                    return Const(True)
                if not m:
                    return Const(False)
                return node
            # evt.dir: any direction the event stands for
            hit = bool(have & vals)
            return Const(hit if node.op != "!=" else not hit)
        return node
    if isinstance(node, Not):
        inner = specialize(node.item, kind)
        if isinstance(inner, Const):
            return Const(not inner.value)
        if isinstance(inner, Not):
            return inner.item
        return Not(inner)
    if isinstance(node, (And, Or)):
        cls = type(node)
        decisive = cls is Or   # the constant that decides the whole: false for and, true for or
        items = []
        for c in node.items:
            s = specialize(c, kind)
            if isinstance(s, Const):
                if s.value == decisive:
                    return s
                continue
            if isinstance(s, cls):
                items.extend(s.items)
            else:
                items.append(s)
        if not items:
            return Const(not decisive)
        return items[0] if len(items) == 1 else cls(items)
    return node


# ----------------------------------------------------------------- open path prefixes

def _glob_prefix(g):
    i = 0
    while i < len(g) and g[i] not in _GLOB_CHARS:
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

OPEN_READ, OPEN_WRITE, OPEN_ANY = 1, 2, 3

_FLAG_READ = frozenset(("O_RDONLY", "O_RDWR", "O_ACCMODE"))
_FLAG_WRITE = frozenset(("O_WRONLY", "O_RDWR", "O_ACCMODE", "O_CREAT", "O_TRUNC"))
_FLAG_NAMES = frozenset(n for _, n in F.O_FLAGS) | _FLAG_READ | _FLAG_WRITE


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
        vals = _value_set(node)
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


# ----------------------------------------------------------------- outputs

_FIELD_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.")


class OutputFormat:
    """A rule output with %field placeholders, parsed once."""

    def __init__(self, text: str):
        # YAML block scalars (`output: >`) end in a newline; an alert is one line
        self.text = text.strip()
        self.parts = []    # str or Extractor
        self.fields = []   # Extractors, in order of first appearance
        self._parse()

    def _add(self, ext):
        self.parts.append(ext)
        if all(f.key != ext.key for f in self.fields):
            self.fields.append(ext)

    def _parse(self):
        s = self.text
        n = len(s)
        i = 0
        lit = []
        while i < n:
            c = s[i]
            if c != "%":
                lit.append(c)
                i += 1
                continue
            if i + 1 < n and s[i + 1] == "%":
                lit.append("%")
                i += 2
                continue
            j = i + 1
            if j < n and s[j] == "(":
                k = _match_paren(s, j)
                if k < 0:
                    raise ValueError(f"unterminated '%(' at offset {i}")
                ext = _resolve_lhs(parse_lhs(s[j + 1:k]))
                self._flush(lit)
                self._add(ext)
                i = k + 1
                continue
            k = j
            while k < n and s[k] in _FIELD_CHARS:
                k += 1
            word = s[j:k]
            if word in F.TRANSFORMS and k < n and s[k] == "(":
                end = _match_paren(s, k)
                if end < 0:
                    raise ValueError(f"unterminated transformer in output at offset {i}")
                ext = _resolve_lhs(parse_lhs(s[j:end + 1]))
                self._flush(lit)
                self._add(ext)
                i = end + 1
                continue
            cand = word.rstrip(".")
            while cand and not F.known(cand):
                cand = cand[:-1].rstrip(".")
            if not cand:
                if "." in word:
                    raise ValueError(f"unknown field '{word.rstrip('.')}' in output")
                lit.append("%")
                i += 1
                continue
            k = j + len(cand)
            arg = None
            fd = F.FIELDS.get(cand)
            if k < n and s[k] == "[" and fd is not None and fd.arg is not None:
                close = s.find("]", k)
                if close < 0:
                    raise ValueError(f"unterminated '[' after %{cand} in output")
                arg = s[k + 1:close]
                k = close + 1
            ext = F.lookup(cand, arg)
            self._flush(lit)
            self._add(ext)
            i = k
        self._flush(lit)

    def _flush(self, lit):
        if lit:
            self.parts.append("".join(lit))
            lit.clear()

    def format(self, ev, cx):
        vals = {}
        out = []
        for p in self.parts:
            if isinstance(p, str):
                out.append(p)
                continue
            key = p.key
            if key in vals:
                v = vals[key]
            else:
                try:
                    v = p.fn(ev, cx)
                except Exception:
                    v = None
                vals[key] = v
            out.append(F.render_value(v, p))
        fields = {}
        for f in self.fields:
            v = vals.get(f.key)
            fields[f.key] = F.json_value(v)
        return "".join(out), fields


def _match_paren(s, j):
    depth = 0
    for k in range(j, len(s)):
        if s[k] == "(":
            depth += 1
        elif s[k] == ")":
            depth -= 1
            if depth == 0:
                return k
    return -1


def _resolve_lhs(lhs):
    if isinstance(lhs, Transform):
        return F.transform(lhs.name, _resolve_lhs(lhs.inner))
    return F.lookup(lhs.name, lhs.arg)


# ----------------------------------------------------------------- compiled rules

class CompiledRule:
    __slots__ = ("name", "priority", "rank", "desc", "tags", "enabled", "output", "file", "line",
                 "ir", "evttypes", "kinds", "specialized", "source", "order")

    def __init__(self, d: RuleDef):
        self.name = d.name
        self.priority = d.priority
        self.rank = priority_rank(d.priority)
        self.desc = d.desc
        self.tags = list(d.tags)
        self.enabled = d.enabled
        self.file, self.line = d.file, d.line
        self.source = "syscall"
        self.order = d.order
        self.output = None
        self.ir = None
        self.evttypes = ALL_TYPES
        self.kinds = frozenset()
        self.specialized = {}

    def __repr__(self):
        return f"CompiledRule({self.name!r}, {self.priority})"


class Compiler:
    """Turns a RuleSet into CompiledRules (errors and warnings collected)."""

    def __init__(self, rs: RuleSet, min_priority: str = "debug"):
        self.rs = rs
        self.min_rank = priority_rank(min_priority)
        self.errors = []
        self.warnings = []
        self.skipped = []      # (rule name, reason)
        self.lists = {}
        self._macro_ast = {}

    # -- lists
    def _expand_lists(self):
        out = {}
        lists = self.rs.lists

        def expand(name, stack):
            if name in out:
                return out[name]
            if name in stack:
                d = lists[name]
                raise RulesError(f"list '{name}' refers to itself through "
                                 f"{' -> '.join(stack + [name])}", d.file, d.line)
            d = lists[name]
            items = []
            for it in d.items:
                if it in lists and it != name:
                    lists[it].used = True
                    items.extend(expand(it, stack + [name]))
                elif it == name:
                    raise RulesError(f"list '{name}' contains itself", d.file, d.line)
                else:
                    items.append(it)
            out[name] = items
            return items
        for name in lists:
            try:
                expand(name, [])
            except RulesError as e:
                self.errors.append(e)
                out.setdefault(name, [])
        self.lists = out

    # -- macros
    def _macro(self, name):
        if name in self._macro_ast:
            return self._macro_ast[name]
        m = self.rs.macros[name]
        ast = Source(m.condition, m.chunks, f"macro '{name}'").parse()
        self._macro_ast[name] = ast
        return ast

    def _inline(self, node, stack):
        if isinstance(node, MacroRef):
            name = node.name
            if name not in self.rs.macros:
                src = node.origin
                raise src.error(node.pos, f"undefined macro '{name}'")
            if name in stack:
                m = self.rs.macros[name]
                raise RulesError(f"macro '{name}' refers to itself through "
                                 f"{' -> '.join(stack + [name])}", m.file, m.line)
            self.rs.macros[name].used = True
            if len(stack) > 60:
                raise node.origin.error(node.pos, "macros nested too deeply")
            return self._inline(self._macro(name), stack + [name])
        if isinstance(node, And):
            return And([self._inline(c, stack) for c in node.items])
        if isinstance(node, Or):
            return Or([self._inline(c, stack) for c in node.items])
        if isinstance(node, Not):
            return Not(self._inline(node.item, stack))
        return node

    # -- IR
    def _ext(self, lhs):
        if isinstance(lhs, Transform):
            return F.transform(lhs.name, self._ext(lhs.inner))
        try:
            return F.lookup(lhs.name, lhs.arg)
        except F.UnknownField:
            raise lhs.origin.error(lhs.pos, f"unknown field '{lhs.name}'", UnknownFieldError) from None
        except F.BadFieldArg as e:
            raise lhs.origin.error(lhs.pos, str(e)) from None

    def _ir(self, node):
        if isinstance(node, And):
            return And([self._ir(c) for c in node.items])
        if isinstance(node, Or):
            return Or([self._ir(c) for c in node.items])
        if isinstance(node, Not):
            return Not(self._ir(node.item))
        if isinstance(node, Const):
            return node
        if isinstance(node, Compare):
            return self._cmp(node)
        raise TypeError(node)

    def _cmp(self, node: Compare):
        ext = self._ext(node.lhs)
        op = node.op
        src = node.lhs.origin
        if op == "exists":
            return Cmp(ext, op)
        rhs = node.rhs
        if isinstance(rhs, FieldValue):
            other = self._ext(rhs.lhs)
            try:
                make_pred2(op)
            except ValueError as e:
                raise src.error(rhs.pos, str(e)) from None
            return Cmp(ext, op, rhs=other)
        try:
            if isinstance(rhs, ListValue):
                raws = []
                for v in rhs.items:
                    if not v.quoted and v.text in self.lists:
                        self.rs.lists[v.text].used = True
                        raws.extend(self.lists[v.text])
                    else:
                        raws.append(v.text)
                if op == "pmatch":
                    return Cmp(ext, op, make_pmatch(raws), raw=tuple(raws))
                if ext.type == "ipnet":
                    vals = tuple(coerce(ext, op, r) for r in raws)
                else:
                    vals = frozenset(coerce(ext, op, r) for r in raws)
                return Cmp(ext, op, vals, raw=tuple(raws))
            raw = rhs.text
            val = coerce(ext, op, raw)
            if op in ("glob", "iglob"):
                val = re.compile(fnmatch.translate(raw), re.S | (re.I if op == "iglob" else 0)).match
            elif op == "regex":
                try:
                    val = re.compile(raw, re.S).fullmatch
                except re.error as e:
                    raise ValueError(f"invalid regular expression '{raw}': {e}") from None
            elif op == "icontains":
                val = raw.lower()
            return Cmp(ext, op, val, raw=raw)
        except ValueError as e:
            raise src.error(rhs.pos, str(e)) from None

    # -- rules
    @staticmethod
    def _exception_sources(d: RuleDef, what):
        """The condition text of each exception that has values (one without matches nothing)."""
        out = []
        for ex in d.exceptions:
            if not ex.values:
                continue
            try:
                text = _exception_text(ex)
            except ValueError as e:
                raise RulesError(f"{what}: exception '{ex.name}': {e}", ex.file, ex.line)
            out.append(Source(text, [Chunk(0, ex.file, ex.line)], f"{what}: exception '{ex.name}'"))
        return out

    def compile_rule(self, d: RuleDef) -> Optional[CompiledRule]:
        what = f"rule '{d.name}'"
        exceptions = self._exception_sources(d, what)
        ast = Source(d.condition, d.chunks, what).parse()
        for esrc in exceptions:
            ast = And([ast, Not(esrc.parse())])
        ast = self._inline(ast, [])
        ir = self._ir(ast)
        r = CompiledRule(d)
        r.ir = ir
        r.evttypes = evttypes(ir)
        kinds = set()
        for k in RULE_KINDS:
            s = specialize(ir, k)
            if isinstance(s, Const) and not s.value:
                continue
            r.specialized[k] = s
            kinds.add(k)
        r.kinds = frozenset(kinds)
        try:
            r.output = OutputFormat(d.output)
        except (ValueError, KeyError, ConditionSyntaxError) as e:
            msg = e.message if isinstance(e, ConditionSyntaxError) else str(e).strip("'\"")
            if isinstance(e, F.UnknownField):
                msg = f"unknown field '{e.args[0]}' in output"
            raise RulesError(f"{what}: invalid output: {msg}", d.file, d.output_line) from None
        return r

    def compile(self):
        self._expand_lists()
        rules = []
        for d in sorted(self.rs.rules.values(), key=lambda x: x.order):
            try:
                r = self.compile_rule(d)
            except UnknownFieldError as e:
                if d.skip_if_unknown_filter:
                    self.warnings.append(RulesWarning(
                        f"rule '{d.name}' skipped: {e.message.splitlines()[0]} "
                        "(skip-if-unknown-filter)", e.file, e.line))
                    self.skipped.append((d.name, "unknown field"))
                    continue
                self.errors.append(e)
                continue
            except RulesError as e:
                self.errors.append(e)
                continue
            except RecursionError:
                self.errors.append(RulesError(f"rule '{d.name}': condition too complex", d.file, d.line))
                continue
            if r.rank > self.min_rank:
                self.skipped.append((d.name, "below minimum priority"))
                continue
            self._rule_warnings(d, r)
            rules.append(r)
        # macros: syntax-check the unused ones too
        for name, m in self.rs.macros.items():
            if name not in self._macro_ast:
                try:
                    self._macro(name)
                except RulesError as e:
                    self.errors.append(e)
            if not m.used:
                self.warnings.append(RulesWarning(f"macro '{name}' is not used by any rule",
                                                  m.file, m.line))
        for name, l in self.rs.lists.items():
            if not l.used:
                self.warnings.append(RulesWarning(f"list '{name}' is not used by any rule or list",
                                                  l.file, l.line))
        return rules

    def _rule_warnings(self, d, r):
        S, comp = r.evttypes
        if comp:
            if d.warn_evttypes:
                self.warnings.append(RulesWarning(
                    f"rule '{d.name}' does not restrict evt.type, so it is evaluated for every event "
                    "(slow); add an evt.type condition", d.file, d.line))
        elif not (S & PRODUCED_TYPES):
            types = ", ".join(sorted(S)) or "(none)"
            self.warnings.append(RulesWarning(
                f"rule '{d.name}' can only match event types vigil does not produce: {types}",
                d.file, d.line))


def _exception_text(ex) -> str:
    """Falco's exception expansion: (f1 c1 v1 and f2 c2 v2) or (...)."""
    list_ops = ("in", "intersects", "pmatch")

    def cell(comp, v):
        if comp in list_ops:
            if isinstance(v, list):
                return "(" + ", ".join(quote_value(x) for x in v) + ")"
            return "(" + quote_value(v) + ")"
        if isinstance(v, list):
            raise ValueError(f"a list value needs an 'in' style comparison, not '{comp}'")
        return quote_value(v)

    if ex.single:
        f, comp = ex.fields, ex.comps
        vals = []
        for v in ex.values:
            vals.extend(v if isinstance(v, list) else [v])
        if comp in list_ops:
            return f"{f} {comp} (" + ", ".join(quote_value(v) for v in vals) + ")"
        return " or ".join(f"{f} {comp} {quote_value(v)}" for v in vals)
    rows = []
    for row in ex.values:
        terms = [f"{f} {c} {cell(c, v)}" for f, c, v in zip(ex.fields, ex.comps, row)]
        rows.append("(" + " and ".join(terms) + ")")
    return " or ".join(rows)


# ----------------------------------------------------------------- code generation

class _KindGen:
    def __init__(self, kind, ns, counter):
        self.kind = kind
        self.ns = ns
        self.counter = counter
        self.slots = {}

    def const(self, v, prefix="_k"):
        self.counter[0] += 1
        name = f"{prefix}{self.counter[0]}"
        self.ns[name] = v
        return name

    def lit(self, v):
        if isinstance(v, (str, bool, int)) and not (isinstance(v, str) and len(v) > 4096):
            return repr(v)
        return self.const(v)

    def load(self, ext):
        inl = ext.inline_for(self.kind)
        if inl:
            return inl
        var = self.slots.get(ext.key)
        if var is None:
            var = f"c{len(self.slots)}"
            fn = self.const(ext.fn_for(self.kind), "_f")
            self.slots[ext.key] = (var, fn)
        else:
            var, fn = var
        return f"({var} if {var} is not _U else ({var} := {fn}(ev, cx)))"

    def cost(self, node) -> int:
        """Rough evaluation cost, to test cheap conjuncts first (no side effects)."""
        if isinstance(node, Const):
            return 0
        if isinstance(node, (And, Or)):
            return sum(self.cost(c) for c in node.items) + 1
        if isinstance(node, Not):
            return self.cost(node.item)
        c = 1 if node.ext.inline_for(self.kind) else 3
        if node.ext.key in self.slots:
            c = 2
        if node.rhs is not None or node.ext.multi or node.op in ("regex", "glob", "iglob", "pmatch"):
            c += 3
        return c

    def expr(self, node) -> str:
        if isinstance(node, Const):
            return "True" if node.value else "False"
        if isinstance(node, And):
            items = sorted(node.items, key=self.cost)
            return "(" + " and ".join(self.expr(c) for c in items) + ")"
        if isinstance(node, Or):
            return "(" + " or ".join(self.expr(c) for c in node.items) + ")"
        if isinstance(node, Not):
            return f"(not {self.expr(node.item)})"
        return self.cmp(node)

    def cmp(self, c: Cmp) -> str:
        ext, op, v = c.ext, c.op, c.value
        L = self.load(ext)
        if c.rhs is not None:
            P = self.const(make_pred2(op))
            return f"{P}({L}, {self.load(c.rhs)})"
        if ext.multi:
            if op == "exists":
                return f"bool({L})"
            if op == "!=":
                P = self.const(make_pred("=", ext.type, v))
                return f"(not _anyp({P}, {L}))"
            P = self.const(make_pred(op, ext.type, v))
            return f"_anyp({P}, {L})"
        t = ext.type
        S = "t" if t == "str" else "_s(t)"
        if op == "exists":
            return f"({L} is not None)"
        if t == "ipnet" and op in ("=", "==", "!=", "in", "intersects"):
            P = self.const(make_pred(op, t, v))
            return f"{P}({L})"
        if op in ("=", "=="):
            if isinstance(v, bool):
                return f"({L} is {v!r})"
            return f"({L} == {self.lit(v)})"
        if op == "!=":
            return f"({L} not in {self.const((v, None))})"
        if op in ORDER_OPS:
            if isinstance(v, int) and not isinstance(v, bool) and t in ("int", "abstime"):
                return f"((t := {L}) is not None and t {op} {v!r})"
            P = self.const(make_pred(op, t, v))
            return f"{P}({L})"
        if op in ("in", "intersects"):
            return f"({L} in {self.const(v)})"
        if op == "contains":
            return f"((t := {L}) is not None and {self.lit(v)} in {S})"
        if op == "icontains":
            return f"((t := {L}) is not None and {self.lit(v)} in {S}.lower())"
        if op == "startswith":
            return f"((t := {L}) is not None and {S}.startswith({self.lit(v)}))"
        if op == "endswith":
            return f"((t := {L}) is not None and {S}.endswith({self.lit(v)}))"
        if op in ("glob", "iglob", "regex"):
            return f"((t := {L}) is not None and {self.const(v)}({S}) is not None)"
        if op == "pmatch":
            return f"{self.const(v)}({L})"
        P = self.const(make_pred(op, t, v))
        return f"{P}({L})"


def build_matcher(kind, rules, mode="first", on_error=None):
    """Python function fn(ev, cx) testing `rules` (already for `kind`) in order.

    mode "first": returns the index of the first matching rule or -1.
    mode "all": returns a list of matching indexes or None.
    """
    ns = {"_U": _UNSET, "_anyp": _anyp, "_s": _s, "_rerr": on_error or (lambda i: None)}
    gen = _KindGen(kind, ns, [0])
    bodies = []
    for i, r in enumerate(rules):
        e = gen.expr(r.specialized[kind])
        if mode == "first":
            hit = f"            return {i}"
        else:
            hit = f"            r = [{i}] if r is None else r + [{i}]"
        bodies.append(f"    try:\n        if {e}:\n{hit}\n    except Exception:\n        _rerr({i})")
    lines = ["def _match(ev, cx):"]
    if gen.slots:
        lines.append("    " + " = ".join(v for v, _ in gen.slots.values()) + " = _U")
    lines.append("    t = None")
    if mode != "first":
        lines.append("    r = None")
    lines.extend(bodies)
    lines.append("    return -1" if mode == "first" else "    return r")
    src = "\n".join(lines) + "\n"
    code = compile(src, f"<vigil rules: {Kind(kind).label}>", "exec")
    exec(code, ns)
    fn = ns["_match"]
    fn.__vigil_source__ = src
    return fn


def _closure(node):
    """Interpreted fallback for conditions too deep for generated code."""
    if isinstance(node, Const):
        v = node.value
        return lambda ev, cx: v
    if isinstance(node, And):
        fs = [_closure(c) for c in node.items]
        return lambda ev, cx: all(f(ev, cx) for f in fs)
    if isinstance(node, Or):
        fs = [_closure(c) for c in node.items]
        return lambda ev, cx: any(f(ev, cx) for f in fs)
    if isinstance(node, Not):
        f = _closure(node.item)
        return lambda ev, cx: not f(ev, cx)
    c = node
    get = c.ext.fn
    if c.rhs is not None:
        p2, get2 = make_pred2(c.op), c.rhs.fn
        return lambda ev, cx: p2(get(ev, cx), get2(ev, cx))
    if c.ext.multi:
        if c.op == "exists":
            return lambda ev, cx: bool(get(ev, cx))
        if c.op == "!=":
            pe = make_pred("=", c.ext.type, c.value)
            return lambda ev, cx: not _anyp(pe, get(ev, cx))
        pm = make_pred(c.op, c.ext.type, c.value)
        return lambda ev, cx: _anyp(pm, get(ev, cx))
    p = make_pred(c.op, c.ext.type, c.value)
    return lambda ev, cx: p(get(ev, cx))


def build_matcher_interp(kind, rules, mode="first", on_error=None):
    fs = [_closure(r.specialized[kind]) for r in rules]
    err = on_error or (lambda i: None)

    def _match(ev, cx):
        out = None
        for i, f in enumerate(fs):
            try:
                if f(ev, cx):
                    if mode == "first":
                        return i
                    out = [i] if out is None else out + [i]
            except Exception:
                err(i)
        return -1 if mode == "first" else out
    return _match


class _Unset:
    __slots__ = ()

    def __repr__(self):
        return "<unset>"


_UNSET = _Unset()
