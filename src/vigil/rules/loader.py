"""Loading Falco-format rules files.

Files are read in order into one :class:`RuleSet`: lists, macros and rules, with
Falco's override forms (``override: {key: append|replace}``, the older
``append: true``, and ``enabled``-only toggles).  Every error names the file and
line it comes from; warnings are collected alongside.  Conditions are only
parsed and compiled later, by :mod:`vigil.rules.compiler`, once all files are in.
"""
from __future__ import annotations

import os
from typing import List, Optional

from vigil.alerts.alert import normalize_priority
from vigil.rules.definitions import Chunk, ExceptionDef, ListDef, MacroDef, RuleDef
from vigil.rules.errors import RulesError, RulesWarning
from vigil.rules.parser import BINARY_OPS, UNARY_OPS, scalar_text as _scalar
from vigil.rules.yaml_lines import LDict, LList, parse_yaml

__all__ = ["RuleSet", "RulesError", "RulesWarning", "load_rules", "parse_yaml", "LDict", "LList",
           "Chunk", "ExceptionDef", "ListDef", "MacroDef", "RuleDef", "NATIVE_PLUGINS", "ENGINE_VERSION"]

# Plugins whose fields vigil provides natively.
NATIVE_PLUGINS = frozenset({"container", "k8smeta", "k8saudit-metadata"})

ENGINE_VERSION = "0.43.0"  # the Falco rules-engine level vigil aims to accept


_BOOL_TRUE = {"true", "yes", "on", "y"}
_BOOL_FALSE = {"false", "no", "off", "n"}

_RULE_KEYS = {"rule", "condition", "output", "desc", "priority", "enabled", "tags", "exceptions",
              "source", "skip-if-unknown-filter", "warn_evttypes", "append", "override",
              "capture", "capture_duration", "required_engine_version", "enforce"}
_RULE_APPEND = {"condition", "output", "desc", "tags", "exceptions"}
_RULE_REPLACE = {"condition", "output", "desc", "priority", "tags", "exceptions", "enabled", "enforce"}
ENFORCE_ACTIONS = ("kill", "none")   # a rule's enforce: key (vigil's; "none" = alert only)
_COMPS = set(BINARY_OPS) | set(UNARY_OPS)


class _ItemError(Exception):
    def __init__(self, message, line):
        super().__init__(message)
        self.message, self.line = message, line


# the largest rules file read (Falco's whole default ruleset is ~0.2 MiB)
RULES_MAX_BYTES = 4 * 1024 * 1024


class RuleSet:
    """Everything loaded from a sequence of rules files (each at most
    ``max_file_bytes``, else a rules error naming the file)."""

    def __init__(self, max_file_bytes: int = RULES_MAX_BYTES):
        self.max_file_bytes = int(max_file_bytes)
        self.lists: dict = {}
        self.macros: dict = {}
        self.rules: dict = {}            # name -> RuleDef, in definition order
        self.skipped_sources: dict = {}  # rule name -> source, for rules of other sources
        self.warnings: List[RulesWarning] = []
        self.errors: List[RulesError] = []
        self.files: List[str] = []
        self.required_engine_version: Optional[str] = None
        self._order = 0

    # -- entry points
    def load_file(self, path: str) -> None:
        name = str(path)
        try:
            with open(path, "rb") as f:
                raw = f.read(self.max_file_bytes + 1)
        except OSError as e:
            self.errors.append(RulesError(f"cannot read rules file: {e.strerror or e}", name, None))
            return
        if len(raw) > self.max_file_bytes:
            self.files.append(name)
            self.errors.append(RulesError(
                f"rules file is larger than the size limit of {_size(self.max_file_bytes)} "
                "(rules_max_size in vigil.yaml)", name, None))
            return
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            self.errors.append(RulesError(f"rules file is not UTF-8: {e.reason}", name, None))
            return
        self.load_text(text, name)

    def load_text(self, text: str, name: str = "<rules>") -> None:
        self.files.append(name)
        try:
            doc = parse_yaml(text, name)
        except RulesError as e:
            self.errors.append(e)
            return
        if doc is None:
            return
        if not isinstance(doc, list):
            line = getattr(doc, "line", 1) or 1
            self.errors.append(RulesError("rules file must be a YAML list of items", name, line))
            return
        for i, item in enumerate(doc):
            line = doc.line_of(i) if isinstance(doc, LList) else None
            try:
                self._item(item, name, line)
            except _ItemError as e:
                self.errors.append(RulesError(e.message, name, e.line or line))

    def raise_if_errors(self) -> None:
        if self.errors:
            raise RulesError.first_of(self.errors)

    def warn(self, message, file=None, line=None):
        self.warnings.append(RulesWarning(message, file, line))

    # -- helpers
    @staticmethod
    def _bool(item, key, default=None):
        if key not in item:
            return default
        v = item[key]
        if isinstance(v, bool):
            return v
        if isinstance(v, str):
            s = v.strip().lower()
            if s in _BOOL_TRUE:
                return True
            if s in _BOOL_FALSE:
                return False
        raise _ItemError(f"'{key}' must be true or false, got {_show(v)}", item.line_of(key))

    @staticmethod
    def _str(item, key, what, allow_empty=True):
        v = item[key]
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            v = str(v)
        if not isinstance(v, str):
            raise _ItemError(f"{what}: '{key}' must be a string, got {_type(v)}", item.line_of(key))
        if not allow_empty and not v.strip():
            raise _ItemError(f"{what}: '{key}' must not be empty", item.line_of(key))
        return v

    @staticmethod
    def _name(item, key):
        v = item[key]
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            v = str(v)
        if not isinstance(v, str) or not v.strip():
            raise _ItemError(f"'{key}' name must be a non-empty string, got {_show(v)}",
                             item.line_of(key))
        return v.strip()

    def _override(self, item, kind, name, allow_append, allow_replace):
        ov = item.get("override")
        if ov is None:
            return None
        if not isinstance(ov, dict):
            raise _ItemError(f"{kind} '{name}': 'override' must be a mapping of key: append|replace",
                             item.line_of("override"))
        if "append" in item:
            raise _ItemError(f"{kind} '{name}': 'append' and 'override' cannot be used together",
                             item.line_of("append"))
        spec = {}
        for k, mode in ov.items():
            line = ov.line_of(k) if isinstance(ov, LDict) else item.line_of("override")
            m = mode.strip().lower() if isinstance(mode, str) else None
            if m not in ("append", "replace"):
                raise _ItemError(f"{kind} '{name}': override of '{k}' must be 'append' or 'replace', "
                                 f"got {_show(mode)}", line)
            if m == "append" and k not in allow_append:
                raise _ItemError(f"{kind} '{name}': '{k}' cannot be appended to", line)
            if m == "replace" and k not in allow_replace:
                raise _ItemError(f"{kind} '{name}': '{k}' cannot be overridden", line)
            if k not in item:
                raise _ItemError(f"{kind} '{name}': override names '{k}' but the item has no '{k}'",
                                 line)
            spec[k] = m
        for k in item:
            if k not in spec and k not in (kind, "override"):
                raise _ItemError(f"{kind} '{name}': key '{k}' has no entry in 'override'",
                                 item.line_of(k))
        return spec

    # -- items
    def _item(self, item, file, line):
        if not isinstance(item, dict):
            raise _ItemError(f"each item must be a mapping (rule, macro, list ...), got {_type(item)}",
                             line)
        if "rule" in item:
            return self._rule(item, file)
        if "macro" in item:
            return self._macro(item, file)
        if "list" in item:
            return self._list(item, file)
        if "required_engine_version" in item:
            v = item["required_engine_version"]
            if not isinstance(v, (str, int, float)) or isinstance(v, bool):
                raise _ItemError("required_engine_version must be a version string",
                                 item.line_of("required_engine_version"))
            self.required_engine_version = str(v)
            return
        if "required_plugin_versions" in item:
            return self._plugins(item, file)
        keys = ", ".join(str(k) for k in item) or "(empty)"
        self.warn(f"unknown item with keys {keys}; ignored", file, item.line)

    def _plugins(self, item, file):
        v = item["required_plugin_versions"]
        if not isinstance(v, list):
            raise _ItemError("required_plugin_versions must be a list",
                             item.line_of("required_plugin_versions"))
        for i, p in enumerate(v):
            pl = v.line_of(i) if isinstance(v, LList) else item.line
            if not isinstance(p, dict) or "name" not in p:
                raise _ItemError("each required plugin needs a 'name' (and 'version')", pl)
            names = [str(p["name"])]
            for alt in p.get("alternatives") or []:
                if isinstance(alt, dict) and "name" in alt:
                    names.append(str(alt["name"]))
            if not any(n in NATIVE_PLUGINS for n in names):
                self.warn(f"plugin '{names[0]}' is required by the rules but vigil does not provide it; "
                          "rules using its fields will fail to load", file, pl)

    def _warn_unknown(self, item, known, what, file):
        for k in item:
            if k not in known:
                self.warn(f"{what}: unknown key '{k}' ignored", file, item.line_of(k))

    def _change(self, item, kind, name, key, file):
        """How a list or macro item changes the `key` of an earlier one of its name:
        (mode, form) with mode 'append' or 'replace' and form the way it says so
        ('override' or the older 'append'); (None, form) when it is a definition,
        form None unless it tried to say."""
        spec = self._override(item, kind, name, {key}, {key})
        append = self._bool(item, "append", False) if spec is None else False
        self._warn_unknown(item, (kind, key, "append", "override"), f"{kind} '{name}'", file)
        form = "override" if spec is not None else "append" if append else None
        return (spec or {}).get(key) or ("append" if append else None), form

    @staticmethod
    def _earlier(defs, kind, name, form, item):
        """The definition an override or append changes (an error when there is none yet)."""
        existing = defs.get(name)
        if existing is None:
            raise _ItemError(f"{kind} '{name}': {form} of a {kind} that is not defined yet", item.line)
        return existing

    def _list(self, item, file):
        name = self._name(item, "list")
        what = f"list '{name}'"
        mode, form = self._change(item, "list", name, "items", file)
        if "items" not in item:
            if form is not None:
                raise _ItemError(f"{what}: nothing to append (no 'items')", item.line)
            raise _ItemError(f"{what}: missing 'items'", item.line)
        items = self._items(item, what)
        if mode is not None:
            existing = self._earlier(self.lists, "list", name, form, item)
            if mode == "append":
                existing.items.extend(items)
            else:
                existing.items = items
            return
        self.lists[name] = ListDef(name, items, file, item.line)

    def _items(self, item, what):
        v = item["items"]
        line = item.line_of("items")
        if v is None or (isinstance(v, str) and v.strip() in ("", "~", "null", "[]")):
            return []
        if not isinstance(v, list):
            raise _ItemError(f"{what}: 'items' must be a list, got {_type(v)}", line)
        out = []
        for i, x in enumerate(v):
            if isinstance(x, (dict, list)):
                il = v.line_of(i) if isinstance(v, LList) else line
                raise _ItemError(f"{what}: list items must be scalars, item {i + 1} is a {_type(x)}", il)
            out.append(_scalar(x))
        return out

    def _macro(self, item, file):
        name = self._name(item, "macro")
        what = f"macro '{name}'"
        mode, form = self._change(item, "macro", name, "condition", file)
        if "condition" not in item:
            raise _ItemError(f"{what}: missing 'condition'", item.line)
        cond = self._str(item, "condition", what)
        cline = item.line_of("condition")
        if mode is not None:
            existing = self._earlier(self.macros, "macro", name, form, item)
            if mode == "append":
                _append_text(existing, cond, file, cline)
            else:
                existing.condition = cond
                existing.chunks = [Chunk(0, file, cline)]
            return
        if not cond.strip():
            raise _ItemError(f"{what}: 'condition' must not be empty", cline)
        self.macros[name] = MacroDef(name, cond, file, item.line, cline)

    def _rule(self, item, file):
        name = self._name(item, "rule")
        what = f"rule '{name}'"
        self._warn_unknown(item, _RULE_KEYS, what, file)
        spec = self._override(item, "rule", name, _RULE_APPEND, _RULE_REPLACE)
        append = self._bool(item, "append", False) if spec is None else False
        existing = self.rules.get(name)
        if "source" in item:
            src = item["source"]
            if not isinstance(src, str):
                raise _ItemError(f"{what}: 'source' must be a string", item.line_of("source"))
            src = src.strip()
            if src != "syscall":
                if name not in self.skipped_sources:
                    self.warn(f"{what}: source '{src}' is not supported by vigil; rule skipped",
                              file, item.line)
                self.skipped_sources[name] = src
                return
        if existing is None and name in self.skipped_sources and (spec is not None or append or
                                                                   set(item) <= {"rule", "enabled"}):
            return  # changes to a rule of another source
        if spec is not None:
            if existing is None:
                raise _ItemError(f"{what}: override of a rule that is not defined yet", item.line)
            self._apply_rule_changes(existing, item, spec, file)
            return
        if append:
            if existing is None:
                raise _ItemError(f"{what}: append to a rule that is not defined yet", item.line)
            self._apply_rule_changes(existing, item, {k: "append" for k in item
                                                      if k in _RULE_APPEND}, file)
            if "enabled" in item:
                existing.enabled = self._bool(item, "enabled")
            return
        keys = set(item) - {"rule"}
        if keys and keys <= {"enabled"}:
            enabled = self._bool(item, "enabled")
            if existing is None:
                raise _ItemError(f"{what}: 'enabled' given for a rule that is not defined yet",
                                 item.line)
            existing.enabled = enabled
            return
        # a full definition (replaces an earlier one of the same name)
        for req in ("condition", "output", "desc", "priority"):
            if req not in item:
                raise _ItemError(f"{what}: missing required key '{req}'", item.line)
        r = RuleDef(name, file, item.line)
        r.condition = self._str(item, "condition", what, allow_empty=False)
        r.chunks = [Chunk(0, file, item.line_of("condition"))]
        r.output = self._str(item, "output", what)
        r.output_line = item.line_of("output")
        r.desc = self._str(item, "desc", what)
        r.priority = self._priority(item, what)
        r.enabled = self._bool(item, "enabled", True)
        r.tags = self._tags(item, what)
        r.skip_if_unknown_filter = self._bool(item, "skip-if-unknown-filter", False)
        r.warn_evttypes = self._bool(item, "warn_evttypes", True)
        r.exceptions = self._exceptions(item, what, file, None)
        self._enforce(r, item, what)
        if existing is not None:
            r.order = existing.order
        else:
            self._order += 1
            r.order = self._order
        self.rules[name] = r

    def _priority(self, item, what):
        v = item["priority"]
        p = normalize_priority(v) if isinstance(v, str) else None
        if p is None:
            raise _ItemError(f"{what}: invalid priority {_show(v)} (expected one of emergency, alert, "
                             "critical, error, warning, notice, informational, debug)",
                             item.line_of("priority"))
        return p

    @staticmethod
    def _enforce(r: RuleDef, item, what):
        if "enforce" not in item:
            return
        v = item["enforce"]
        if not isinstance(v, str) or v.strip().lower() not in ENFORCE_ACTIONS:
            raise _ItemError(f"{what}: invalid enforce {_show(v)} (expected one of "
                             f"{', '.join(ENFORCE_ACTIONS)})", item.line_of("enforce"))
        v = v.strip().lower()
        r.enforce = "" if v == "none" else v
        r.enforce_line = item.line_of("enforce")

    def _tags(self, item, what):
        if "tags" not in item:
            return []
        v = item["tags"]
        if v is None or v == "":
            return []
        if not isinstance(v, list) or any(isinstance(t, (dict, list)) for t in v):
            raise _ItemError(f"{what}: 'tags' must be a list of strings", item.line_of("tags"))
        return [_scalar(t) for t in v]

    def _apply_rule_changes(self, r: RuleDef, item, spec, file):
        what = f"rule '{r.name}'"
        for key, mode in spec.items():
            line = item.line_of(key)
            if key == "condition":
                text = self._str(item, key, what)
                if mode == "append":
                    _append_text(r, text, file, line)
                else:
                    r.condition = text
                    r.chunks = [Chunk(0, file, line)]
            elif key == "output":
                text = self._str(item, key, what)
                r.output = (r.output + " " + text) if mode == "append" else text
                r.output_line = line
            elif key == "desc":
                text = self._str(item, key, what)
                r.desc = (r.desc + " " + text) if mode == "append" else text
            elif key == "priority":
                r.priority = self._priority(item, what)
            elif key == "enabled":
                r.enabled = self._bool(item, "enabled")
            elif key == "enforce":
                self._enforce(r, item, what)
            elif key == "tags":
                tags = self._tags(item, what)
                if mode == "append":
                    r.tags.extend(t for t in tags if t not in r.tags)
                else:
                    r.tags = tags
            elif key == "exceptions":
                r.exceptions = self._exceptions(item, what, file,
                                                r.exceptions if mode == "append" else None)

    def _exceptions(self, item, what, file, existing: Optional[list]):
        if "exceptions" not in item:
            return list(existing or [])
        v = item["exceptions"]
        line = item.line_of("exceptions")
        if v is None or v == "":
            return list(existing or [])
        if not isinstance(v, list):
            raise _ItemError(f"{what}: 'exceptions' must be a list", line)
        out = list(existing or [])
        by_name = {e.name: e for e in out}
        for i, ex in enumerate(v):
            el = v.line_of(i) if isinstance(v, LList) else line
            if not isinstance(ex, dict):
                raise _ItemError(f"{what}: each exception must be a mapping", el)
            el = ex.line
            if "name" not in ex or not isinstance(ex["name"], str) or not ex["name"].strip():
                raise _ItemError(f"{what}: exception without a 'name'", el)
            ename = ex["name"].strip()
            for k in ex:
                if k not in ("name", "fields", "comps", "values"):
                    self.warn(f"{what}: exception '{ename}': unknown key '{k}' ignored", file,
                              ex.line_of(k))
            prior = by_name.get(ename)
            if prior is not None and existing is not None and "fields" not in ex:
                prior.values = prior.values + self._exc_values(ex, prior.fields, what, ename)
                continue
            if "fields" not in ex:
                if existing is not None:
                    raise _ItemError(f"{what}: exception '{ename}' is not defined in the rule being "
                                     "appended to, so it needs 'fields'", el)
                raise _ItemError(f"{what}: exception '{ename}' has no 'fields'", el)
            fields = ex["fields"]
            if isinstance(fields, str):
                fields = fields.strip()
                if not fields:
                    raise _ItemError(f"{what}: exception '{ename}': 'fields' is empty", el)
                comps = ex.get("comps", "in")
                if isinstance(comps, list) and len(comps) == 1:
                    comps = comps[0]
                if not isinstance(comps, str) or comps.strip() not in _COMPS:
                    raise _ItemError(f"{what}: exception '{ename}': invalid comparison operator "
                                     f"{_show(comps)}", ex.line_of("comps"))
                comps = comps.strip()
            elif isinstance(fields, list) and fields and all(isinstance(f, str) for f in fields):
                fields = [f.strip() for f in fields]
                comps = ex.get("comps")
                if comps is None:
                    comps = ["="] * len(fields)
                if not isinstance(comps, list) or len(comps) != len(fields):
                    raise _ItemError(f"{what}: exception '{ename}': 'comps' must be a list with one "
                                     f"operator per field ({len(fields)})", ex.line_of("comps"))
                for c in comps:
                    if not isinstance(c, str) or c.strip() not in _COMPS:
                        raise _ItemError(f"{what}: exception '{ename}': invalid comparison operator "
                                         f"{_show(c)}", ex.line_of("comps"))
                comps = [c.strip() for c in comps]
            else:
                raise _ItemError(f"{what}: exception '{ename}': 'fields' must be a field name or a "
                                 "non-empty list of field names", ex.line_of("fields"))
            values = self._exc_values(ex, fields, what, ename)
            e = ExceptionDef(ename, fields, comps, values, file, el)
            if prior is not None:
                out[out.index(prior)] = e
            else:
                out.append(e)
            by_name[ename] = e
        return out

    def _exc_values(self, ex, fields, what, ename):
        if "values" not in ex:
            return []
        v = ex["values"]
        line = ex.line_of("values")
        if v is None or v == "":
            return []
        if not isinstance(v, list):
            raise _ItemError(f"{what}: exception '{ename}': 'values' must be a list", line)
        out = []
        for i, row in enumerate(v):
            rl = v.line_of(i) if isinstance(v, LList) else line
            if isinstance(fields, str):
                if isinstance(row, dict):
                    raise _ItemError(f"{what}: exception '{ename}': value {i + 1} must be a scalar", rl)
                out.append([_scalar(x) for x in row] if isinstance(row, list) else _scalar(row))
                continue
            if not isinstance(row, list) or len(row) != len(fields):
                raise _ItemError(f"{what}: exception '{ename}': value {i + 1} must be a list of "
                                 f"{len(fields)} values (one per field)", rl)
            cells = []
            for cell in row:
                if isinstance(cell, dict):
                    raise _ItemError(f"{what}: exception '{ename}': value {i + 1} has a mapping", rl)
                if isinstance(cell, list):
                    if any(isinstance(x, (dict, list)) for x in cell):
                        raise _ItemError(f"{what}: exception '{ename}': nested lists are not allowed",
                                         rl)
                    cells.append([_scalar(x) for x in cell])
                else:
                    cells.append(_scalar(cell))
            out.append(cells)
        return out


def _append_text(obj, text, file, line):
    base = obj.condition
    obj.condition = base + " " + text
    obj.chunks.append(Chunk(len(base) + 1, file, line))


def _type(v) -> str:
    if isinstance(v, dict):
        return "mapping"
    if isinstance(v, list):
        return "list"
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    return type(v).__name__


def _show(v) -> str:
    if isinstance(v, (dict, list)):
        return f"a {_type(v)}"
    s = repr(v)
    return s if len(s) < 60 else s[:57] + "..."


def _size(n: int) -> str:
    for unit, k in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= k and n % k == 0:
            return f"{n // k} {unit}"
    return f"{n:,} bytes"


def load_rules(paths, max_file_bytes: int = RULES_MAX_BYTES) -> RuleSet:
    """Load rules files in order; raises RulesError on the first error (all in .errors)."""
    rs = RuleSet(max_file_bytes)
    for p in paths:
        rs.load_file(os.fspath(p))
    rs.raise_if_errors()
    return rs
