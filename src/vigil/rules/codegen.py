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

# fields with a handful of values per event kind (the syscall among a kind's
# few, the fd's type, success): a test on one of them usually holds
_FEW_VALUES = frozenset(("evt.type", "evt.dir", "evt.res", "evt.failed", "fd.typechar", "fd.type",
                         "fd.l4proto", "fd.sockfamily", "fd.num", "evt.is_open_read",
                         "evt.is_open_write", "evt.is_open_exec"))


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

    def est(self, node, seen) -> tuple:
        """(expected cost, chance of being true) of evaluating `node` with
        short-circuits, its AND/OR operands in the order :meth:`order` gives;
        `seen` holds the fields already extracted (cheap to read again).

        The chances are rough: a comparison with a constant rarely holds, a
        negation (a rule's exceptions are ``not (...)``) almost always does,
        and alternatives (OR) together hold at most half the time.  Extractors
        never raise and have no side effects, so the order cannot change a
        result, only its cost."""
        if isinstance(node, Const):
            return 0.0, (1.0 if node.value else 0.0)
        if isinstance(node, Not):
            c, p = self.est(node.item, seen)
            return c, max(1.0 - p, 0.9)
        if isinstance(node, (And, Or)):
            is_and = isinstance(node, And)
            cost, p = 0.0, 1.0          # p: chance of reaching the next operand
            for c, q, _ in self.order(node, seen):
                cost += p * c
                p *= q if is_and else 1.0 - q
            return cost, (p if is_and else min(1.0 - p, 0.5))
        ext = node.ext
        if ext.inline_for(self.kind):
            c = 1.0
        elif ext.key in seen or ext.key in self.slots:
            c = 1.5
        else:
            c = 4.0
            seen.add(ext.key)
        if node.rhs is not None:
            c += 1.0 if node.rhs.key in seen else 3.0
            seen.add(node.rhs.key)
        op = node.op
        if ext.multi or op in ("regex", "glob", "iglob", "pmatch"):
            c += 3.0
        if op in ("exists", "!="):
            p = 0.9
        elif ext.key in _FEW_VALUES:
            p = 0.7
        elif op in ORDER_OPS or (op in ("=", "==") and isinstance(node.value, bool)):
            p = 0.5
        else:
            p = 0.1
        return c, p

    def order(self, node, seen) -> list:
        """The operands of an AND (OR) as (cost, chance, node) in the order of
        least expected cost: ascending cost / P(false) for AND, cost / P(true)
        for OR.  Adds the fields they read to `seen`."""
        cls = type(node)
        rows = []
        for c in _flat(node, cls):
            s = set(seen)
            cost, p = self.est(c, s)
            rows.append((cost, p, c, s))
        if cls is And:
            rows.sort(key=lambda r: r[0] / max(1.0 - r[1], 0.02))
        else:
            rows.sort(key=lambda r: r[0] / max(r[1], 0.02))
        for r in rows:
            seen |= r[3]
        return [r[:3] for r in rows]

    def expr(self, node) -> str:
        if isinstance(node, Const):
            return "True" if node.value else "False"
        if isinstance(node, (And, Or)):
            items = [c for _, _, c in self.order(node, set())]
            sep = " and " if isinstance(node, And) else " or "
            return "(" + sep.join(self.expr(c) for c in items) + ")"
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


def _flat(node, cls):
    """The operands of nested ANDs (or ORs) as one list."""
    out = []
    for c in node.items:
        if isinstance(c, cls):
            out.extend(_flat(c, cls))
        else:
            out.append(c)
    return out


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


def _closure(node, kind=None):
    """Interpreted fallback for conditions too deep for generated code (with
    the extractors specialised for `kind`, as the generated code has)."""
    if isinstance(node, Const):
        v = node.value
        return lambda ev, cx: v
    if isinstance(node, And):
        fs = [_closure(c, kind) for c in node.items]
        return lambda ev, cx: all(f(ev, cx) for f in fs)
    if isinstance(node, Or):
        fs = [_closure(c, kind) for c in node.items]
        return lambda ev, cx: any(f(ev, cx) for f in fs)
    if isinstance(node, Not):
        f = _closure(node.item, kind)
        return lambda ev, cx: not f(ev, cx)
    c = node
    get = c.ext.fn_for(kind)
    if c.rhs is not None:
        p2, get2 = make_pred2(c.op), c.rhs.fn_for(kind)
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
    fs = [_closure(r.specialized[kind], kind) for r in rules]
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
