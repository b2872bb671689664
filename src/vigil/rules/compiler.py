"""Compiling loaded rules into fast matchers: the public entry point.

Conditions are parsed once, macros inlined, lists expanded, fields resolved and
values converted to the field's type (:mod:`.predicates`).  The result is an
intermediate form (``And``/``Or``/``Not``/``Const`` plus
:class:`~vigil.rules.condition.Cmp`) that is

* analysed for the event types and kinds a rule can match (:mod:`.analysis`),
* turned into one generated Python function per event kind (:mod:`.codegen`),
* and, for open events, into the kernel's path/mode filter
  (:mod:`.kernel_filter`).

Outputs are parsed by :mod:`.output`.
"""
from __future__ import annotations

import fnmatch
import re
from typing import Optional

from vigil.alerts.alert import priority_rank
from vigil.rules import fields as F
from vigil.rules.enforce_hint import kernel_hint
from vigil.rules.analysis import ALL_TYPES, evttype_warnings, evttypes, kind_conditions
from vigil.rules.codegen import build_matcher, build_matcher_interp
from vigil.rules.condition import Cmp, Source, resolve_lhs
from vigil.rules.kernel_filter import (OPEN_ANY, OPEN_READ, OPEN_WRITE, minimize_open_filter,
                                       minimize_prefixes, open_filter, path_prefixes)
from vigil.rules.definitions import Chunk, RuleDef
from vigil.rules.errors import RulesError, RulesWarning
from vigil.rules.fields.fd import IP_NAME_FIELDS
from vigil.state.dnsnames import NameCache
from vigil.rules.loader import RuleSet
from vigil.rules.output import OutputFormat
from vigil.rules.parser import (And, Compare, ConditionSyntaxError, Const, FieldValue, ListValue, MacroRef, Not,
                                Or, list_item_text, quote_value)
from vigil.rules.predicates import coerce, make_pmatch, make_pred2
from vigil.rules.regex import compile_regex

__all__ = ["Compiler", "CompiledRule", "UnknownFieldError", "build_matcher", "build_matcher_interp",
           "OPEN_ANY", "OPEN_READ", "OPEN_WRITE", "minimize_open_filter", "minimize_prefixes",
           "open_filter", "path_prefixes"]


class UnknownFieldError(RulesError):
    pass


class CompiledRule:
    __slots__ = ("name", "priority", "rank", "desc", "tags", "enabled", "output", "file", "line",
                 "ir", "evttypes", "kinds", "specialized", "source", "order", "enforce")

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
        self.enforce = d.enforce
        self.output = None
        self.ir = None
        self.evttypes = ALL_TYPES
        self.kinds = frozenset()
        self.specialized = {}

    def __repr__(self):
        return f"CompiledRule({self.name!r}, {self.priority})"


class Compiler:
    """Turns a RuleSet into CompiledRules (errors and warnings collected)."""

    def __init__(self, rs: RuleSet, min_priority: str = "debug", names: Optional[NameCache] = None):
        self.rs = rs
        self.names = names if names is not None else NameCache()   # domains fd.*ip.name compare with
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
                    items.append(list_item_text(it))
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
        return resolve_lhs(lhs, self._field)

    @staticmethod
    def _field(lhs):
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

    def _list_values(self, rhs: ListValue) -> list:
        """The values of a (...) list, list names expanded."""
        raws = []
        for v in rhs.items:
            if not v.quoted and v.text in self.lists:
                self.rs.lists[v.text].used = True
                raws.extend(self.lists[v.text])
            else:
                raws.append(v.text)
        return raws

    def _cmp(self, node: Compare):
        ext = self._ext(node.lhs)
        op = node.op
        src = node.lhs.origin
        if op == "exists":
            return Cmp(ext, op)
        rhs = node.rhs
        if ext.key in IP_NAME_FIELDS:
            if op not in ("=", "!=", "in") or isinstance(rhs, FieldValue):
                raise src.error(node.pos, f"field '{ext.key}' can only be compared with =, != and in")
            names = self._list_values(rhs) if isinstance(rhs, ListValue) else [rhs.text]
            self.names.watch(names)
        if isinstance(rhs, FieldValue):
            other = self._ext(rhs.lhs)
            try:
                make_pred2(op)
            except ValueError as e:
                raise src.error(rhs.pos, str(e)) from None
            return Cmp(ext, op, rhs=other)
        try:
            if isinstance(rhs, ListValue):
                raws = self._list_values(rhs)
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
                val = compile_regex(raw)
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
        r.specialized = kind_conditions(ir)
        r.kinds = frozenset(r.specialized)
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
            self.warnings.extend(evttype_warnings(d, r.evttypes))
            hint = kernel_hint(r) if r.enforce == "kill" else None
            if hint is not None:
                self.warnings.append(hint)
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
