"""What a compiled condition needs: the Falco event types it can match
(Falco's evttype analysis, through and/or/not with De Morgan), the vigil event
kinds it is evaluated for (its tree specialised per kind, ``evt.type`` and
``evt.dir`` tests folded to constants), and the warnings for rules that
evaluate on every event or cannot match at all."""
from __future__ import annotations

from vigil.rules.condition import Cmp
from vigil.rules.fields.kinds import KIND_DIRS, KIND_TYPE_SETS, PRODUCED_TYPES, RULE_KINDS
from vigil.rules.errors import RulesWarning
from vigil.rules.parser import And, Const, Not, Or

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


SET_TESTS = frozenset(("=", "==", "!=", "in", "intersects"))  # value (not) in a set


def value_set(c):
    """The values an (in)equality or `in` test compares with, as a frozenset."""
    return c.value if isinstance(c.value, frozenset) else frozenset((c.value,))


def evttypes(node, neg=False):
    if isinstance(node, Const):
        return ALL_TYPES if node.value != neg else NO_TYPES
    if isinstance(node, Cmp):
        if node.ext.key == "evt.type" and node.rhs is None and node.op in SET_TESTS:
            vals = value_set(node)
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
        if node.rhs is None and key in ("evt.type", "evt.dir") and node.op in SET_TESTS:
            have = KIND_TYPE_SETS[kind] if key == "evt.type" else KIND_DIRS[kind]
            vals = value_set(node)
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


def kind_conditions(ir) -> dict:
    """{kind: the condition specialised for it} for every kind it can match on."""
    out = {}
    for k in RULE_KINDS:
        s = specialize(ir, k)
        if isinstance(s, Const) and not s.value:
            continue
        out[k] = s
    return out


def evttype_warnings(d, types) -> list:
    """Warnings for rule `d` whose condition matches the event types `types`
    (``evttypes()``): it restricts none, or only ones vigil does not produce."""
    S, comp = types
    if comp:
        if d.warn_evttypes:
            return [RulesWarning(
                f"rule '{d.name}' does not restrict evt.type, so it is evaluated for every event "
                "(slow); add an evt.type condition", d.file, d.line)]
    elif not (S & PRODUCED_TYPES):
        types = ", ".join(sorted(S)) or "(none)"
        return [RulesWarning(
            f"rule '{d.name}' can only match event types vigil does not produce: {types}",
            d.file, d.line)]
    return []
