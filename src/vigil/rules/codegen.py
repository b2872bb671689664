"""Code generation: the rules of one event kind turned into one Python function
that tests them in order, with per-event lazily cached field values held in
local variables.  Constants are never pasted into the source except as
``repr()`` literals of str/int/bool; everything else lives in the function's
namespace.  An interpreted fallback (closures) serves conditions too deep for
generated code."""
from __future__ import annotations

from vigil.events import Kind
from vigil.rules.condition import Cmp
from vigil.rules.parser import And, Const, Not, Or
from vigil.rules.predicates import ORDER_OPS, any_match, as_str, make_pred, make_pred2

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
    ns = {"_U": _UNSET, "_anyp": any_match, "_s": as_str, "_rerr": on_error or (lambda i: None)}
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
            return lambda ev, cx: not any_match(pe, get(ev, cx))
        pm = make_pred(c.op, c.ext.type, c.value)
        return lambda ev, cx: any_match(pm, get(ev, cx))
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
