"""The rules engine: Falco rules files in, alerts out.

    engine = RuleEngine.from_files(["rules.yaml"], proctable=table)
    for ev in events:
        for alert in engine.evaluate(ev):
            ...

Rules are indexed by vigil event kind; each kind has one generated function
testing its rules in load order.  Like Falco's default ``rule_matching: first``,
an event yields at most one alert (the first rule that matches); pass
``rule_matching="all"`` for one alert per matching rule.
"""
from __future__ import annotations

import os
from typing import Iterable, List, Optional

from vigil.alerts.alert import Alert, alert_id, normalize_priority, priority_rank
from vigil.events import Event, Kind
from vigil.rules.codegen import build_matcher, build_matcher_interp
from vigil.rules.compiler import Compiler, CompiledRule
from vigil.rules.kernel_filter import (minimize_open_filter, minimize_prefixes, open_filter,
                                       path_prefixes, success_only)
from vigil.rules.fields.kinds import RULE_KINDS
from vigil.rules.loader import RULES_MAX_BYTES, RulesError, RuleSet
from vigil.state.dnsnames import NameCache
from vigil.state.fdtable import OBSERVED as _FD_KINDS, FdTable

_NKINDS = max(int(k) for k in Kind) + 1
_FD_STATE_FIELDS = frozenset(("fd.connected", "fd.name_changed"))
_ENV_FIELDS = ("proc.env", "proc.aenv")


def _reads(node, test) -> bool:
    """Whether a compiled condition reads a field whose key (the field with its
    argument and transformers) passes `test`."""
    ext = getattr(node, "ext", None)
    if ext is not None:
        rhs = getattr(getattr(node, "rhs", None), "key", None)
        return test(ext.key) or (rhs is not None and test(rhs))
    items = getattr(node, "items", None)
    if items is not None:
        return any(_reads(c, test) for c in items)
    item = getattr(node, "item", None)
    return item is not None and _reads(item, test)


def _reads_env(key) -> bool:
    return any(f in key for f in _ENV_FIELDS)


class RuleEngine:
    def __init__(self, *, min_priority: str = "debug", proctable=None, written_paths=None,
                 rule_matching: str = "first", max_file_bytes: int = RULES_MAX_BYTES):
        mp = normalize_priority(min_priority)
        if mp is None:
            raise ValueError(f"unknown priority {min_priority!r}")
        if rule_matching not in ("first", "all"):
            raise ValueError("rule_matching must be 'first' or 'all'")
        self.min_priority = mp
        self.proctable = proctable
        self.written_paths = written_paths
        self.rule_matching = rule_matching
        self.evnum = 0
        self.fds = FdTable()            # socket state for fd.connected / fd.name_changed
        self.names = NameCache()        # rule domain names, resolved, for fd.*ip.name
        self.ruleset = RuleSet(max_file_bytes)
        self.rules: List[CompiledRule] = []
        self.skipped: list = []
        self.warnings: list = []
        self.rule_errors: dict = {}     # rule name -> evaluation exceptions seen
        self.matches: dict = {}         # rule name -> alerts produced
        self._matchers = [None] * _NKINDS
        self._kind_rules = [()] * _NKINDS
        self._track_fds = False
        self.kill_rules = frozenset()   # names of the rules with enforce: kill

    # ------------------------------------------------------------ loading
    @classmethod
    def from_files(cls, paths: Iterable, **kw) -> "RuleEngine":
        eng = cls(**kw)
        eng.load(paths)
        return eng

    @classmethod
    def from_text(cls, text: str, name: str = "<rules>", **kw) -> "RuleEngine":
        eng = cls(**kw)
        eng.load_text(text, name)
        return eng

    def load(self, paths) -> None:
        """Load rules files (in order, on top of anything loaded before) and recompile."""
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        for p in paths:
            self.ruleset.load_file(os.fspath(p))
        self._finish()

    def load_text(self, text: str, name: str = "<rules>") -> None:
        self.ruleset.load_text(text, name)
        self._finish()

    def _finish(self) -> None:
        rs = self.ruleset
        names = NameCache()
        comp = Compiler(rs, self.min_priority, names)
        try:
            rules = comp.compile()
        except RecursionError:
            rules = []
        if rs.errors or comp.errors:
            # every error at once: the files' structure and the conditions
            # (items the loader refused are not compiled), by file and line
            raise RulesError.first_of(_in_file_order(rs.files, rs.errors + comp.errors))
        self.rules = rules
        self.names = names
        self.kill_rules = frozenset(r.name for r in rules if r.enforce == "kill")
        self.skipped = comp.skipped + [(n, f"source {s}") for n, s in rs.skipped_sources.items()]
        self.warnings = list(rs.warnings) + comp.warnings
        self._build()

    def _build(self) -> None:
        matchers = [None] * _NKINDS
        kind_rules = [()] * _NKINDS
        for k in RULE_KINDS:
            rs = [r for r in self.rules if r.enabled and k in r.kinds]
            if not rs:
                continue
            on_err = self._error_hook(rs)
            try:
                fn = build_matcher(k, rs, self.rule_matching, on_err)
            except (RecursionError, SyntaxError, MemoryError, ValueError):
                fn = build_matcher_interp(k, rs, self.rule_matching, on_err)
            matchers[int(k)] = fn
            kind_rules[int(k)] = tuple(rs)
        self._matchers = matchers
        self._kind_rules = kind_rules
        # the fd table costs a little per socket event: kept only when a rule asks
        self._track_fds = any(_reads(r.ir, _FD_STATE_FIELDS.__contains__)
                              for r in self.rules if r.enabled)

    def _error_hook(self, rules):
        errs = self.rule_errors

        def on_error(i):
            name = rules[i].name
            errs[name] = errs.get(name, 0) + 1
        return on_error

    # ------------------------------------------------------------ control
    def rule(self, name: str) -> Optional[CompiledRule]:
        for r in self.rules:
            if r.name == name:
                return r
        return None

    def set_enabled(self, name: str, enabled: bool = True) -> None:
        r = self.rule(name)
        if r is None:
            raise KeyError(name)
        r.enabled = bool(enabled)
        self._build()

    def select(self, selection) -> list:
        """Turn off the rules a :class:`vigil.rules.selection.RuleSelection`
        leaves out (-T/-t/-D); returns their names."""
        off = [r for r in self.rules if r.enabled and not selection.keeps(r.name, r.tags)]
        for r in off:
            r.enabled = False
        if off:
            self._build()
        return [r.name for r in off]

    def enabled_rules(self) -> List[CompiledRule]:
        return [r for r in self.rules if r.enabled]

    def required_kinds(self) -> set:
        """Event kinds some enabled rule can match (which sensors must attach)."""
        return {k for k in RULE_KINDS if self._matchers[int(k)] is not None}

    def open_path_prefixes(self) -> Optional[list]:
        """Path prefixes covering every open event an enabled rule could match.

        None when some rule needs open events on any path; [] when no rule
        looks at open events at all.
        """
        out = set()
        for r in self._kind_rules[int(Kind.OPEN)]:
            p = path_prefixes(r.specialized[Kind.OPEN])
            if p is None:
                return None
            out |= p
        if "" in out or "/" in out:
            return None
        return minimize_prefixes(out)

    def open_path_filter(self) -> Optional[dict]:
        """Path prefix -> open modes (1 reads, 2 writes, 3 both) covering every
        open event an enabled rule could match, for the kernel filter.

        A rule whose condition requires a write open (``evt.is_open_write =
        true``, Falco's ``open_write``, ``evt.arg.flags contains O_TRUNC`` ...)
        asks only for writes below its prefixes; one requiring a read open only
        for reads; any other for both.  A prefix also carries the modes of the
        shorter prefixes covering it.  "" stands for every path.  None when
        some rule needs every open on any path; {} when no rule looks at opens.
        """
        acc = {}
        for r in self._kind_rules[int(Kind.OPEN)]:
            for p, m in open_filter(r.specialized[Kind.OPEN]).items():
                acc[p] = acc.get(p, 0) | m
        out = minimize_open_filter(acc)
        if out.get("") == 3 or out.get("/") == 3:
            return None
        return out

    def wants_env(self) -> bool:
        """Whether an enabled rule reads proc.env / proc.aenv (condition or
        output): then the kernel sends each exec's environment."""
        for r in self.rules:
            if not r.enabled:
                continue
            keys = [x.key for x in r.output.fields] if r.output is not None else []
            if any(_reads_env(k) for k in keys) or _reads(r.ir, _reads_env):
                return True
        return False

    def ok_only_kinds(self) -> set:
        """Kinds some enabled rule looks at and whose failed events (ret < 0)
        no enabled rule can match (kernel_filter.success_only): the kernel
        drops those failures."""
        return {k for k in self.required_kinds()
                if all(success_only(r.specialized[k], k) for r in self._kind_rules[int(k)])}

    # ------------------------------------------------------------ evaluation
    def evaluate(self, ev: Event) -> list:
        if self._track_fds and ev.kind in _FD_KINDS:
            self.fds.observe(ev)
        fn = self._matchers[ev.kind]
        if fn is None:
            return []
        self.evnum += 1
        hit = fn(ev, self)
        if self.rule_matching == "first":
            if hit < 0:
                return []
            return [self._alert(self._kind_rules[ev.kind][hit], ev)]
        if not hit:
            return []
        rules = self._kind_rules[ev.kind]
        return [self._alert(rules[i], ev) for i in hit]

    def match_rules(self, ev: Event) -> list:
        """The matching rules without formatting alerts (benchmarks, tests)."""
        fn = self._matchers[ev.kind]
        if fn is None:
            return []
        hit = fn(ev, self)
        rules = self._kind_rules[ev.kind]
        if self.rule_matching == "first":
            return [] if hit < 0 else [rules[hit]]
        return [rules[i] for i in hit] if hit else []

    def _alert(self, r: CompiledRule, ev: Event) -> Alert:
        text, fields = r.output.format(ev, self)
        self.matches[r.name] = self.matches.get(r.name, 0) + 1
        a = Alert(time=ev.time or 0, rule=r.name, priority=r.priority, output=text,
                  output_fields=fields, tags=list(r.tags), source=r.source, event=ev)
        a.uuid = alert_id(a)
        return a

    def format_output(self, rule_name: str, ev: Event):
        r = self.rule(rule_name)
        if r is None:
            raise KeyError(rule_name)
        return r.output.format(ev, self)

    def summary(self) -> dict:
        return {
            "files": list(self.ruleset.files),
            "rules_loaded": len(self.rules),
            "rules_enabled": len(self.enabled_rules()),
            "rules_skipped": [{"rule": n, "reason": why} for n, why in self.skipped],
            "warnings": [w.to_dict() for w in self.warnings],
            "required_kinds": sorted(k.label for k in self.required_kinds()),
        }


def _in_file_order(files: list, errors: list) -> list:
    """Errors sorted by the order their files were loaded, then by line."""
    order = {f: i for i, f in enumerate(files)}
    return sorted(errors, key=lambda e: (order.get(e.file, len(order)), e.line or 0))


__all__ = ["RuleEngine", "RulesError", "priority_rank"]
