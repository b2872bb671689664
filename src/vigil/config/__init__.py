"""The agent's configuration: vigil.yaml, then environment, then flags.

Every mistake is reported as ``file:line: key: what is wrong``.  The outputs,
store and rate_limit sections are checked by vigil.outputs.config; this module
checks the rest and maps those errors back to their line.
"""
from __future__ import annotations

import copy
import math
import os
import re
from typing import Optional

import yaml

DEFAULT_CONFIG_PATH = "/etc/vigil/vigil.yaml"

DEFAULTS: dict = {
    "rules": [],                 # empty: the shipped default ruleset
    "min_priority": "debug",
    "rule_matching": "first",
    "sensors": {
        "ringbuf_size": 16 * 1024 * 1024,
        "args_max": 4096,
        "dns_ports": [53],
        "ignore_comms": [],
    },
    "scope": {"mode": "all", "namespaces": {"include": [], "exclude": []}},
    "containers": {"enabled": True, "hold": 0.25, "grace": 30.0},
    "kubernetes": {"enabled": "auto", "node_name": ""},
    "outputs": {"stdout": {"enabled": True, "format": "text"}},
    "store": {"enabled": True},
    "rate_limit": {"window": 1.0},
}

SECTIONS = {
    "sensors": {"ringbuf_size", "args_max", "dns_ports", "ignore_comms"},
    "scope": {"mode", "namespaces"},
    "containers": {"enabled", "hold", "grace"},
    "kubernetes": {"enabled", "node_name"},
}
TOP_KEYS = set(DEFAULTS)


class ConfigError(ValueError):
    def __init__(self, msg: str, file: str = "", line: int = 0):
        self.file = file
        self.line = line
        where = f"{file}:{line}: " if file and line else (f"{file}: " if file else "")
        super().__init__(where + msg)


class _LineLoader(yaml.SafeLoader):
    pass


def _parse_with_lines(text: str, name: str):
    """(data, {key path tuple: line}) for a YAML mapping."""
    try:
        node = yaml.compose(text, Loader=_LineLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark else 0
        raise ConfigError(f"not valid YAML: {getattr(e, 'problem', e)}", name, line) from None
    if node is None:
        return {}, {}
    lines = {}

    def walk(n, path):
        lines.setdefault(path, n.start_mark.line + 1)   # a key's own line wins
        if isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                if not isinstance(k, yaml.ScalarNode):
                    continue        # not a usable key; loading below says so
                key = k.value
                lines[path + (key,)] = k.start_mark.line + 1
                walk(v, path + (key,))
        elif isinstance(n, yaml.SequenceNode):
            for i, v in enumerate(n.value):
                walk(v, path + (i,))

    walk(node, ())
    try:
        data = yaml.load(text, Loader=yaml.SafeLoader)
    except (yaml.YAMLError, TypeError, ValueError) as e:
        # e.g. a tag the safe loader refuses, a key YAML cannot hash
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark else 0
        raise ConfigError(f"not valid YAML: {getattr(e, 'problem', None) or e}", name, line) from None
    if not isinstance(data, dict):
        raise ConfigError("the configuration must be a mapping of sections", name, 1)
    return data, lines


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


_SIZE = re.compile(r"^\s*(\d+)\s*([kmg]i?b?)?\s*$", re.I)


def _size(v) -> Optional[int]:
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    if isinstance(v, str):
        m = _SIZE.match(v)
        if m:
            mult = {"k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}.get((m.group(2) or " ")[0].lower(), 1)
            return int(m.group(1)) * mult
    return None


class Config:
    """The merged configuration (a dict) plus where each key came from."""

    def __init__(self, data: dict, path: str = "", lines: Optional[dict] = None):
        self.data = data
        self.path = path
        self.lines = lines or {}

    def __getitem__(self, key):
        return self.data[key]

    def get(self, key, default=None):
        return self.data.get(key, default)

    def _line(self, keypath: tuple) -> int:
        """The file line of the key, else of its nearest parent that has one (0: none)."""
        for i in range(len(keypath), 0, -1):
            if keypath[:i] in self.lines:
                return self.lines[keypath[:i]]
        return 0

    def error(self, keypath: tuple, msg: str) -> ConfigError:
        return ConfigError(f"{'.'.join(map(str, keypath))}: {msg}", self.path, self._line(keypath))

    def validate(self) -> "Config":
        d = self.data
        for k in d:
            if k not in TOP_KEYS:
                raise self.error((k,), f"unknown section (known: {', '.join(sorted(TOP_KEYS))})")
        for sec, keys in SECTIONS.items():
            v = d.get(sec)
            if not isinstance(v, dict):
                raise self.error((sec,), "expected a mapping")
            for k in v:
                if k not in keys:
                    raise self.error((sec, k), f"unknown key (known: {', '.join(sorted(keys))})")
        rules = d.get("rules")
        if isinstance(rules, str):
            d["rules"] = rules = [rules]
        if not isinstance(rules, list) or not all(isinstance(r, str) for r in rules):
            raise self.error(("rules",), "expected a list of rules files or directories")
        from vigil.alerts.alert import normalize_priority
        if normalize_priority(str(d.get("min_priority"))) is None:
            raise self.error(("min_priority",), f"unknown priority {d.get('min_priority')!r}")
        if d.get("rule_matching") not in ("first", "all"):
            raise self.error(("rule_matching",), "expected first or all")
        s = d["sensors"]
        rb = _size(s.get("ringbuf_size"))
        if rb is None or rb < 4096 or rb & (rb - 1):
            raise self.error(("sensors", "ringbuf_size"),
                             f"expected a power of two of at least 4096 bytes, got {s.get('ringbuf_size')!r}")
        s["ringbuf_size"] = rb
        am = s.get("args_max")
        if not isinstance(am, int) or not 16 <= am <= 4096:
            raise self.error(("sensors", "args_max"), f"expected 16..4096, got {am!r}")
        ports = s.get("dns_ports")
        if not isinstance(ports, list) or not all(
                isinstance(p, int) and not isinstance(p, bool) and 0 < p < 65536 for p in ports):
            raise self.error(("sensors", "dns_ports"), f"expected a list of ports, got {ports!r}")
        ic = s.get("ignore_comms")
        if not isinstance(ic, list) or not all(isinstance(c, str) and c for c in ic):
            raise self.error(("sensors", "ignore_comms"), "expected a list of process names")
        mode = d["scope"].get("mode")
        if mode not in ("all", "host", "containers"):
            raise self.error(("scope", "mode"), f"expected all, host or containers, got {mode!r}")
        ns = d["scope"].get("namespaces") or {}
        if not isinstance(ns, dict) or set(ns) - {"include", "exclude"}:
            raise self.error(("scope", "namespaces"), "expected {include: [...], exclude: [...]}")
        for k in ("include", "exclude"):
            v = ns.get(k)
            if v is None:
                ns[k] = []
            elif not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                raise self.error(("scope", "namespaces", k), f"expected a list of namespaces, got {v!r}")
        c = d["containers"]
        if not isinstance(c.get("enabled"), bool):
            raise self.error(("containers", "enabled"), "expected true or false")
        from vigil.alerts.outputs.config import ConfigError as OutErr, parse_duration
        for k in ("hold", "grace"):
            try:
                c[k] = parse_duration(c.get(k))
            except (OutErr, ValueError, TypeError) as e:
                raise self.error(("containers", k), str(e)) from None
            if not math.isfinite(c[k]):
                raise self.error(("containers", k), f"expected a finite duration, got {c[k]!r}")
        ke = d["kubernetes"].get("enabled")
        if ke not in (True, False, "auto"):
            raise self.error(("kubernetes", "enabled"), "expected true, false or auto")
        nn = d["kubernetes"].get("node_name")
        if nn is None:
            d["kubernetes"]["node_name"] = ""
        elif not isinstance(nn, str):
            raise self.error(("kubernetes", "node_name"), f"expected a node name, got {nn!r}")
        return self

    def build_alert_pipeline(self, stream=None):
        """Outputs/store/rate limiter from their sections; errors get a line."""
        from vigil.alerts.outputs.config import ConfigError as OutErr, build_pipeline
        try:
            return build_pipeline({k: self.data.get(k) for k in ("outputs", "store", "rate_limit")},
                                  stream=stream)
        except OutErr as e:
            msg = str(e)
            key = msg.split(":", 1)[0].strip()
            path = tuple(key.split(".")) if key else ()
            m = re.search(r"unknown (?:key|output) '([^']*)'", msg)
            if m and path + (m.group(1),) in self.lines:
                path += (m.group(1),)       # point at the unknown key itself
            raise ConfigError(msg, self.path, self._line(path)) from None


def load_config(path: Optional[str] = None, overrides: Optional[dict] = None) -> Config:
    """Defaults <- file (explicit path, else /etc/vigil/vigil.yaml if present)
    <- environment <- overrides (from flags)."""
    data, lines, used = {}, {}, ""
    if path is None and os.path.exists(DEFAULT_CONFIG_PATH):
        path = DEFAULT_CONFIG_PATH
    if path is not None:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            raise ConfigError(f"cannot read config: {e.strerror}", path) from None
        data, lines = _parse_with_lines(text, path)
        used = path
    merged = _merge(DEFAULTS, data)
    # environment (DaemonSet friendly)
    node = os.environ.get("VIGIL_NODE_NAME") or os.environ.get("NODE_NAME")
    if node and not merged["kubernetes"].get("node_name"):
        merged["kubernetes"]["node_name"] = node
    if os.environ.get("VIGIL_MIN_PRIORITY"):
        merged["min_priority"] = os.environ["VIGIL_MIN_PRIORITY"]
    if overrides:
        merged = _merge(merged, overrides)
        if "rules" in overrides:
            merged["rules"] = overrides["rules"]
    return Config(merged, used, lines).validate()


def expand_rules_paths(paths: list) -> list:
    """Files as given; directories expand to their *.yaml/*.yml in name order."""
    out = []
    for p in paths:
        if os.path.isdir(p):
            out.extend(sorted(os.path.join(p, f) for f in os.listdir(p)
                              if f.endswith((".yaml", ".yml"))))
        else:
            out.append(p)
    return out


def kubernetes_enabled(cfg: Config) -> bool:
    v = cfg["kubernetes"].get("enabled")
    if v == "auto":
        return bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
    return bool(v)


__all__ = ["Config", "ConfigError", "load_config", "expand_rules_paths", "DEFAULTS",
           "DEFAULT_CONFIG_PATH"]
