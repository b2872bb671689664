"""The agent's configuration: vigil.yaml, then environment, then flags.

One schema: every section is read with :class:`Section` (here for the
agent's own sections, in :mod:`vigil.alerts.outputs.config` for outputs,
store and rate_limit), sizes and durations with :mod:`vigil.config.units`,
and every mistake is one :class:`ConfigError` reported as
``file:line: key.path: what is wrong``.
"""
from __future__ import annotations

import copy
import os
from typing import Optional

from vigil.config.envsubst import expand as expand_env
from vigil.config.errors import ConfigError
from vigil.config.overrides import SOURCE as OVERRIDE_SOURCE, overrides_tree
from vigil.config.section import Section
from vigil.config.source import line_of, parse_with_lines
from vigil.config.units import parse_duration, parse_size

DEFAULT_CONFIG_PATH = "/etc/vigil/vigil.yaml"
CONFIG_MAX_BYTES = 1024 * 1024      # a config is a few KiB; refuse anything absurd

DEFAULTS: dict = {
    "rules": [],                 # empty: the shipped default ruleset
    "rules_max_size": 4 * 1024 * 1024,    # each rules file at most this big
    "min_priority": "debug",
    "rule_matching": "first",
    "sensors": {
        "ringbuf_size": 16 * 1024 * 1024,
        "ringbuf_hi_size": 4 * 1024 * 1024,
        # events/s each process may send on the bulk ring, and at once; rate 0 = no
        # budget.  Only events that pass the kernel filters spend it (a normal process
        # sends far less); one flooding process gets a small share of what the agent
        # reads (~25-50k events/s with the default rules on this 2-core machine)
        "budget": {"rate": 2000, "burst": 10000},
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
    # the JSON alert's optional properties, named and defaulted as in falco.yaml
    "json_include_output_property": True,
    "json_include_output_fields_property": True,
    "json_include_tags_property": True,
    "json_include_message_property": False,
    "watch_config_files": True,  # reload when the config, rules or policy files change
    "policies": [],              # NetworkPolicy / VigilPolicy files or directories (vigil.enforce)
    "enforce": {"protected": ["kubelet", "containerd", "runc", "crio", "conmon", "sshd"],
                "persist": False},
    # Falco's: what to do when the kernel lost events (ignore, log, alert), at
    # most `rate` reports a second, `max_burst` at once
    "syscall_event_drops": {"actions": ["log", "alert"], "rate": 0.03333, "max_burst": 1},
    # Prometheus metrics (vigil.metrics; docs/METRICS.md): "" turns the endpoint off
    "metrics": {"address": "127.0.0.1:9476", "max_destinations": 100, "max_edges": 500,
                "tcp": True,
                "packets": True, "dns": True, "block_io": True, "runqueue": True,
                "syscalls": False, "resources": True},
    # L7 (vigil.l7, docs/L7.md): requests paired with responses on the TCP connections
    # processes connect or accept; [] turns it off (nothing loaded)
    "l7": {"protocols": ["http", "redis", "postgres"], "ringbuf_size": 8 * 1024 * 1024,
           "max_connections": 16384, "max_peers": 100, "tls": True, "tls_max_libraries": 32},
    # behavioural profiles (vigil.profiles, docs/PROFILES.md)
    "profiles": {"enabled": False, "window": 86400.0, "host": False,
                 "file_prefixes": ["/etc", "/bin", "/sbin", "/usr", "/lib", "/lib64", "/root",
                                   "/home", "/var/run/secrets", "/run/secrets"],
                 "fold_after": 16, "max_entries": 10000, "cooldown": 3600.0,
                 "flush_interval": 5.0, "store": ""},
}

JSON_INCLUDE_KEYS = tuple(k for k in DEFAULTS if k.startswith("json_include_"))

SECTIONS = {k: set(v) for k, v in DEFAULTS.items()
            if k in ("sensors", "scope", "containers", "kubernetes", "enforce",
                     "syscall_event_drops", "metrics", "profiles", "l7")}
TOP_KEYS = set(DEFAULTS)
PAGE_SIZE = 4096
# the kernel's ring buffer size is a 32-bit number: 2 GiB is the largest power of two
RINGBUF_MAX = 1 << 31


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def ringbuf_size(s: Section, key: str = "ringbuf_size") -> int:
    """A ring buffer size: the kernel wants a power of two multiple of the page size."""
    rb = s.size(key)
    if rb < PAGE_SIZE or rb & (rb - 1):
        hint = ""
        if isinstance(s.get(key), str) and rb >= PAGE_SIZE:
            hint = (f" ({s.get(key)} is {rb:,} bytes; SI suffixes are powers "
                    "of 1000, use KiB/MiB/GiB)")
        raise s.bad(key, f"expected a power of two of at least {PAGE_SIZE} bytes"
                    f"{hint}")
    if rb > RINGBUF_MAX:
        raise s.bad("ringbuf_size", f"{rb:,} bytes is more than the kernel's ring buffer can "
                    "be (at most 2GiB)")
    return rb


def check_metrics(m: Section) -> None:
    """The metrics section: an address (or "" for none), the destinations bound, switches."""
    addr = m.get("address")
    if addr is None:
        m.raw["address"] = addr = ""
    if not isinstance(addr, str):
        raise m.bad("address", "expected HOST:PORT, or \"\" to turn the metrics off")
    if addr:
        from vigil.metrics.server import parse_address
        try:
            parse_address(addr)
        except ValueError as e:
            raise m.bad("address", str(e), quote=False) from None
    m.int("max_destinations", 1, maximum=10000)
    m.int("max_edges", 1, maximum=100000)
    for k in ("tcp", "packets", "dns", "block_io", "runqueue", "syscalls", "resources"):
        m.bool(k)


class Config:
    """The merged configuration (a dict) plus where each key came from."""

    def __init__(self, data: dict, path: str = "", lines: Optional[dict] = None,
                 overridden=()):
        self.data = data
        self.path = path
        self.lines = lines or {}
        self.overridden = set(overridden)   # key paths set by -o key=value

    def __getitem__(self, key):
        return self.data[key]

    def get(self, key, default=None):
        return self.data.get(key, default)

    def locate(self, err: ConfigError) -> ConfigError:
        """The error with this configuration's file and the line of its key
        (or ``-o`` for a key set on the command line)."""
        if any(err.at[:len(p)] == p for p in self.overridden):
            return err.located(OVERRIDE_SOURCE, 0)
        return err.located(self.path, line_of(self.lines, err.at))

    def validate(self) -> "Config":
        try:
            self._check()
        except ConfigError as e:
            raise self.locate(e) from None
        return self

    def _check(self) -> None:
        d = self.data
        for k in d:
            if k not in TOP_KEYS:
                raise ConfigError(f"unknown section (known: {', '.join(sorted(TOP_KEYS))})",
                                  key=(k,))
        top = Section((), d, DEFAULTS)
        for name in SECTIONS:
            if not isinstance(d.get(name), dict):
                raise top.bad(name, "expected a mapping")
        sec = {name: Section((name,), d.get(name), DEFAULTS[name], key_named_unknown=True)
               for name in SECTIONS}
        if isinstance(d.get("rules"), str):
            d["rules"] = [d["rules"]]
        if not isinstance(d.get("rules"), list):
            raise top.bad("rules", "expected a list of rules files or directories")
        top.str_list("rules", "rules files or directories")
        if isinstance(d.get("policies"), str):
            d["policies"] = [d["policies"]]
        if not isinstance(d.get("policies"), list):
            raise top.bad("policies", "expected a list of policy files or directories")
        top.str_list("policies", "policy files or directories")
        en = sec["enforce"]
        en.str_list("protected", "process names", allow_empty_items=False)
        en.bool("persist")
        d["rules_max_size"] = top.size("rules_max_size")
        if d["rules_max_size"] < 1:
            raise top.bad("rules_max_size", "expected a size of at least 1 byte")
        from vigil.alerts.alert import normalize_priority
        if normalize_priority(str(d.get("min_priority"))) is None:
            raise ConfigError(f"unknown priority {d.get('min_priority')!r}", key=("min_priority",))
        top.choice("rule_matching", ("first", "all"))
        for k in JSON_INCLUDE_KEYS + ("watch_config_files",):
            top.bool(k)

        s = sec["sensors"]
        d["sensors"]["ringbuf_size"] = ringbuf_size(s)
        d["sensors"]["ringbuf_hi_size"] = ringbuf_size(s, "ringbuf_hi_size")
        b = Section(("sensors", "budget"), s.get("budget"), DEFAULTS["sensors"]["budget"],
                    key_named_unknown=True)
        d["sensors"]["budget"] = {"rate": b.int("rate", 0), "burst": b.int("burst", 1)}

        drops = sec["syscall_event_drops"]
        acts = drops.str_list("actions", "actions (ignore, log, alert)")
        bad = [a for a in acts if a not in ("ignore", "log", "alert")]
        if bad:
            raise drops.bad("actions", f"unknown action {bad[0]!r} (known: ignore, log, alert)",
                            quote=False)
        d["syscall_event_drops"] = {"actions": acts,
                                    "rate": drops.number("rate", allow_zero=False),
                                    "max_burst": drops.int("max_burst", 1)}
        s.int("args_max", 16, maximum=4096)
        ports = s.get("dns_ports")
        if not isinstance(ports, list) or not all(
                isinstance(p, int) and not isinstance(p, bool) and 0 < p < 65536 for p in ports):
            raise s.bad("dns_ports", "expected a list of ports")
        s.str_list("ignore_comms", "process names", allow_empty_items=False)

        sc = sec["scope"]
        sc.choice("mode", ("all", "host", "containers"))
        ns = Section(("scope", "namespaces"), sc.get("namespaces"),
                     {"include": [], "exclude": []})
        d["scope"]["namespaces"] = {k: ns.str_list(k, "namespaces") for k in ("include", "exclude")}

        c = sec["containers"]
        c.bool("enabled")
        for k in ("hold", "grace"):
            d["containers"][k] = c.duration(k)

        check_metrics(sec["metrics"])
        check_profiles(sec["profiles"], d["profiles"])
        check_l7(sec["l7"], d["l7"])

        k8s = sec["kubernetes"]
        k8s.choice("enabled", (True, False, "auto"))
        nn = k8s.get("node_name")
        if nn is None:
            d["kubernetes"]["node_name"] = ""
        elif not isinstance(nn, str):
            raise k8s.bad("node_name", "expected a node name")

    def json_shape(self):
        """Which optional properties the JSON alerts carry (json_include_*)."""
        from vigil.alerts.alert import JsonShape
        d = self.data
        return JsonShape(output=d["json_include_output_property"],
                         output_fields=d["json_include_output_fields_property"],
                         tags=d["json_include_tags_property"],
                         message=d["json_include_message_property"])

    def build_alert_pipeline(self, stream=None, clock=None):
        """Rate limiter -> store -> outputs from their sections (errors get file:line).
        ``clock`` drives the rate limiter (default: monotonic time)."""
        from vigil.alerts.outputs.config import build_pipeline
        try:
            return build_pipeline({k: self.data.get(k) for k in ("outputs", "store", "rate_limit")},
                                  stream=stream, clock=clock, json_shape=self.json_shape())
        except ConfigError as e:
            raise self.locate(e) from None


def check_profiles(s: Section, d: dict) -> None:
    """The profiles: section (durations in seconds after this)."""
    s.bool("enabled")
    s.bool("host")
    for k in ("window", "cooldown", "flush_interval"):
        d[k] = s.duration(k)
        if d[k] <= 0:
            raise s.bad(k, "expected a duration above 0")
    s.int("fold_after", 2)
    s.int("max_entries", 1)
    prefixes = s.str_list("file_prefixes", "absolute path prefixes", allow_empty_items=False)
    for p in prefixes:
        if not p.startswith("/"):
            raise s.bad("file_prefixes", f"{p!r} is not an absolute path")
    if not isinstance(d.get("store") or "", str):
        raise s.bad("store", "expected a path (empty: the alert store's file)")


def check_l7(s: Section, d: dict) -> None:
    """The l7: section: protocols among the known ones, sizes."""
    from vigil.l7.record import PROTOCOLS
    protos = s.str_list("protocols", f"protocols ({', '.join(PROTOCOLS)})")
    bad = [p for p in protos if p not in PROTOCOLS]
    if bad:
        raise s.bad("protocols", f"unknown protocol {bad[0]!r} (known: {', '.join(PROTOCOLS)})",
                    quote=False)
    d["protocols"] = list(dict.fromkeys(protos))
    d["ringbuf_size"] = ringbuf_size(s)
    s.int("max_connections", 1, maximum=1 << 20)
    s.int("max_peers", 1, maximum=10000)
    s.bool("tls")
    s.int("tls_max_libraries", 1, maximum=1024)


def load_config(path: Optional[str] = None, overrides: Optional[dict] = None,
                settings=()) -> Config:
    """Defaults <- file (explicit path, else /etc/vigil/vigil.yaml if present)
    <- environment <- settings (``-o key=value`` strings) <- overrides (from flags)."""
    tree, overridden = overrides_tree(settings)
    data, lines, used = {}, {}, ""
    if path is None and os.path.exists(DEFAULT_CONFIG_PATH):
        path = DEFAULT_CONFIG_PATH
    if path is not None:
        try:
            with open(path, "rb") as f:
                raw = f.read(CONFIG_MAX_BYTES + 1)
        except OSError as e:
            raise ConfigError(f"cannot read config: {e.strerror or e}", path) from None
        if len(raw) > CONFIG_MAX_BYTES:
            raise ConfigError(f"config file larger than {CONFIG_MAX_BYTES // 1024} KiB "
                              "(the size limit)", path)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            line = raw[:e.start].count(b"\n") + 1
            raise ConfigError(f"not UTF-8 text (byte {e.start}: {e.reason})", path, line) from None
        data, lines = parse_with_lines(text, path)
        try:        # ${NAME} / ${NAME:-default} from the environment
            data = expand_env(data)
        except ConfigError as e:
            raise e.located(path, line_of(lines, e.at)) from None
        used = path
    merged = _merge(DEFAULTS, data)
    # environment (DaemonSet friendly)
    node = os.environ.get("VIGIL_NODE_NAME") or os.environ.get("NODE_NAME")
    if node and not merged["kubernetes"].get("node_name"):
        merged["kubernetes"]["node_name"] = node
    if os.environ.get("VIGIL_MIN_PRIORITY"):
        merged["min_priority"] = os.environ["VIGIL_MIN_PRIORITY"]
    if "VIGIL_METRICS_ADDRESS" in os.environ:       # "" turns the endpoint off
        merged["metrics"]["address"] = os.environ["VIGIL_METRICS_ADDRESS"]
    for over in (tree, overrides):
        if over:
            merged = _merge(merged, over)
            for replaced in ("rules", "policies"):   # lists are replaced, not merged
                if replaced in over:
                    merged[replaced] = over[replaced]
    return Config(merged, used, lines, overridden).validate()


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


__all__ = ["Config", "ConfigError", "Section", "load_config", "expand_rules_paths",
           "parse_size", "parse_duration", "DEFAULTS", "DEFAULT_CONFIG_PATH"]
