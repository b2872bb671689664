"""Build the alert pipeline from the agent configuration.

The relevant sections of ``vigil.yaml`` (other top-level keys are ignored
here; every key *inside* these sections is checked)::

    outputs:
      stdout:  {enabled: true, format: text}            # text | json
      file:    {enabled: false, path: /var/log/vigil/alerts.jsonl,
                max_bytes: 100MiB, backups: 5, fsync: false}
      syslog:  {enabled: false, address: /dev/log, facility: local0, format: text}
      webhook: {enabled: false, url: http://falcosidekick:2801/, headers: {},
                timeout: 5, max_retries: 5, backoff: 0.5, max_backoff: 30,
                queue_size: 10000, verify: true}
    store:      {enabled: true, path: /var/lib/vigil/alerts.db, max_age: 7d,
                 max_rows: 1000000, max_bytes: null, synchronous: full}
    rate_limit: {window: 1.0}          # seconds or a duration; 0 disables

An output section that is present defaults to ``enabled: true``; ``stdout``
is enabled when absent, the others are disabled.  ``name: false`` and
``name: true`` are accepted as shorthands.  Mistakes raise
:class:`ConfigError` naming the key and the bad value.
"""
from __future__ import annotations

import re
from typing import Any, Optional, TextIO

from vigil.alerts.store import DEFAULT_STORE_PATH, AlertStore
from vigil.alerts.outputs.base import AlertPipeline, Output, OutputDispatcher
from vigil.alerts.outputs.file import FileOutput
from vigil.alerts.ratelimit import RateLimiter
from vigil.alerts.outputs.stdout import FORMATS, StdoutOutput
from vigil.alerts.outputs.syslog import FACILITIES, SyslogOutput, parse_address
from vigil.alerts.outputs.webhook import WebhookOutput

DEFAULT_FILE_PATH = "/var/log/vigil/alerts.jsonl"


class ConfigError(ValueError):
    """A bad key or value in the outputs/store/rate_limit configuration."""


# --- value parsers -------------------------------------------------------------
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d|w)", re.I)


def parse_duration(value: Any) -> float:
    """Seconds from ``30``, ``1.5``, ``"500ms"``, ``"10m"``, ``"1h30m"``, ``"7d"``, ``"2w"``."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"negative duration: {value!r}")
        return float(value)
    s = str(value).strip()
    if not s:
        raise ValueError("empty duration")
    try:
        v = float(s)
    except ValueError:
        pass
    else:
        if v < 0:
            raise ValueError(f"negative duration: {value!r}")
        return v
    pos, total = 0, 0.0
    for m in _DURATION_RE.finditer(s):
        if s[pos:m.start()].strip():
            break
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2).lower()]
        pos = m.end()
    if pos == 0 or s[pos:].strip():
        raise ValueError(f"not a duration: {value!r} (use e.g. 30s, 10m, 1h, 7d)")
    return total


_SIZE_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000 ** 2,
               "mb": 1000 ** 2, "mib": 1024 ** 2, "g": 1000 ** 3, "gb": 1000 ** 3,
               "gib": 1024 ** 3}


def parse_size(value: Any) -> int:
    """Bytes from ``1048576``, ``"512k"``, ``"100MB"``, ``"100MiB"``, ``"1GiB"``."""
    if isinstance(value, bool):
        raise ValueError(f"not a size: {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"negative size: {value!r}")
        return value
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([a-zA-Z]*)\s*", str(value))
    if not m or m.group(2).lower() not in _SIZE_UNITS:
        raise ValueError(f"not a size: {value!r} (use e.g. 1048576, 512KiB, 100MB)")
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])


# --- section helpers -----------------------------------------------------------
class _Section:
    def __init__(self, where: str, raw: Any, keys: dict):
        """``keys`` maps allowed key -> default."""
        self.where = where
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: expected a mapping, got {raw!r}")
        unknown = sorted(set(map(str, raw)) - set(keys))
        if unknown:
            raise ConfigError(f"{where}: unknown key {unknown[0]!r} "
                              f"(known: {', '.join(sorted(keys))})")
        self.raw = raw
        self.keys = keys

    def get(self, key: str):
        return self.raw.get(key, self.keys[key])

    def bad(self, key: str, why: str) -> ConfigError:
        return ConfigError(f"{self.where}.{key}: {why}, got {self.raw.get(key)!r}")

    def bool(self, key: str) -> bool:
        v = self.get(key)
        if not isinstance(v, bool):
            raise self.bad(key, "expected true or false")
        return v

    def str(self, key: str, choices=None) -> str:
        v = self.get(key)
        if not isinstance(v, str) or not v:
            raise self.bad(key, "expected a non-empty string")
        if choices is not None and v.lower() not in choices:
            raise self.bad(key, f"expected one of {', '.join(choices)}")
        return v.lower() if choices is not None else v

    def number(self, key: str, minimum: float = 0.0, allow_zero: bool = True) -> float:
        v = self.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise self.bad(key, "expected a number")
        if v < minimum or (not allow_zero and v == 0):
            raise self.bad(key, f"expected a number {'>' if not allow_zero else '>='} {minimum}")
        return float(v)

    def int(self, key: str, minimum: int = 0, optional: bool = False) -> Optional[int]:
        v = self.get(key)
        if v is None and optional:
            return None
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            raise self.bad(key, f"expected an integer >= {minimum}")
        return v

    def duration(self, key: str, optional: bool = False) -> Optional[float]:
        v = self.get(key)
        if v is None and optional:
            return None
        try:
            return parse_duration(v)
        except ValueError as exc:
            raise self.bad(key, str(exc)) from None

    def size(self, key: str, optional: bool = False) -> Optional[int]:
        v = self.get(key)
        if v is None and optional:
            return None
        try:
            return parse_size(v)
        except ValueError as exc:
            raise self.bad(key, str(exc)) from None


def _section_raw(outputs: dict, name: str, default_enabled: bool) -> Optional[dict]:
    """The section's dict if enabled, else None.  Handles absent/true/false/None."""
    if name not in outputs:
        return {} if default_enabled else None
    raw = outputs[name]
    if raw is None or raw is True:
        return {}
    if raw is False:
        return None
    if not isinstance(raw, dict):
        raise ConfigError(f"outputs.{name}: expected a mapping or true/false, got {raw!r}")
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError(f"outputs.{name}.enabled: expected true or false, got {enabled!r}")
    return raw if enabled else None


# --- builders --------------------------------------------------------------------
OUTPUT_NAMES = ("stdout", "file", "syslog", "webhook")


def build_outputs(outputs_cfg: Optional[dict], stream: Optional[TextIO] = None) -> list:
    """The enabled outputs, in the order stdout, file, syslog, webhook."""
    if outputs_cfg is None:
        outputs_cfg = {}
    if not isinstance(outputs_cfg, dict):
        raise ConfigError(f"outputs: expected a mapping, got {outputs_cfg!r}")
    unknown = sorted(set(map(str, outputs_cfg)) - set(OUTPUT_NAMES))
    if unknown:
        raise ConfigError(f"outputs: unknown output {unknown[0]!r} "
                          f"(known: {', '.join(OUTPUT_NAMES)})")
    built: list = []
    try:
        _build_all(outputs_cfg, stream, built)
    except BaseException:
        _close_all(built)          # e.g. a webhook thread already started
        raise
    return built


def _close_all(outputs: list) -> None:
    for out in outputs:
        try:
            out.close(0)
        except Exception:
            pass


def _build_all(cfg: dict, stream, built: list) -> None:
    raw = _section_raw(cfg, "stdout", True)
    if raw is not None:
        s = _Section("outputs.stdout", raw, {"enabled": True, "format": "text"})
        built.append(StdoutOutput(stream=stream, format=s.str("format", FORMATS)))

    raw = _section_raw(cfg, "file", False)
    if raw is not None:
        s = _Section("outputs.file", raw, {"enabled": True, "path": DEFAULT_FILE_PATH,
                                           "max_bytes": 100 * 1024 * 1024, "backups": 5,
                                           "fsync": False})
        path, max_bytes, backups, fsync = (s.str("path"), s.size("max_bytes"),
                                           s.int("backups"), s.bool("fsync"))
        try:
            built.append(FileOutput(path, max_bytes=max_bytes, backups=backups, fsync=fsync))
        except OSError as exc:
            raise ConfigError(f"outputs.file.path: cannot open {path!r}: {exc}") from None

    raw = _section_raw(cfg, "syslog", False)
    if raw is not None:
        s = _Section("outputs.syslog", raw, {"enabled": True, "address": "/dev/log",
                                             "facility": "local0", "format": "text"})
        address = s.get("address")
        try:
            parse_address(address)
        except (ValueError, TypeError) as exc:
            raise s.bad("address", str(exc)) from None
        facility = s.str("facility", FACILITIES)
        built.append(SyslogOutput(address=address, facility=facility,
                                  format=s.str("format", FORMATS)))

    raw = _section_raw(cfg, "webhook", False)
    if raw is not None:
        s = _Section("outputs.webhook", raw, {"enabled": True, "url": None, "headers": {},
                                              "timeout": 5.0, "max_retries": 5, "backoff": 0.5,
                                              "max_backoff": 30.0, "queue_size": 10000,
                                              "verify": True})
        url = s.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise s.bad("url", "expected an http:// or https:// URL")
        headers = s.get("headers") or {}
        if not isinstance(headers, dict) or not all(
                isinstance(k, str) and isinstance(v, (str, int, float)) and not isinstance(v, bool)
                for k, v in headers.items()):
            raise s.bad("headers", "expected a mapping of header name to string value")
        verify = s.get("verify")
        if not isinstance(verify, (bool, str)):
            raise s.bad("verify", "expected true, false or a CA bundle path")
        built.append(WebhookOutput(
            url, headers=headers, timeout=s.number("timeout", 0, allow_zero=False),
            max_retries=s.int("max_retries"), backoff=s.number("backoff"),
            max_backoff=s.number("max_backoff"), queue_size=s.int("queue_size", 1),
            verify=verify))


def build_store(store_cfg: Optional[dict]) -> Optional[AlertStore]:
    """The alert store (enabled unless ``enabled: false``), or None."""
    if store_cfg is False:
        return None
    s = _Section("store", store_cfg if store_cfg not in (None, True) else {},
                 {"enabled": True, "path": DEFAULT_STORE_PATH, "max_age": "7d",
                  "max_rows": 1_000_000, "max_bytes": None, "synchronous": "full"})
    if not s.bool("enabled"):
        return None
    path = s.str("path")
    max_age = s.duration("max_age", optional=True)
    max_rows = s.int("max_rows", 1, optional=True)
    max_bytes = s.size("max_bytes", optional=True)
    sync = s.str("synchronous", ("off", "normal", "full", "extra"))
    try:
        return AlertStore(path, max_age_s=max_age, max_rows=max_rows, max_bytes=max_bytes,
                          synchronous=sync)
    except Exception as exc:
        raise ConfigError(f"store.path: cannot open alert store {path!r}: {exc}") from None


def build_rate_limiter(rl_cfg: Optional[dict]) -> Optional[RateLimiter]:
    """The rate limiter, or None when ``window`` is 0 or the section is false."""
    if rl_cfg is False:
        return None
    s = _Section("rate_limit", rl_cfg if rl_cfg not in (None, True) else {},
                 {"window": 1.0, "max_keys": 100_000})
    window = s.duration("window")
    max_keys = s.int("max_keys", 1)
    if window == 0:
        return None
    return RateLimiter(window=window, max_keys=max_keys)


def build_pipeline(cfg: Optional[dict], stream: Optional[TextIO] = None) -> AlertPipeline:
    """Rate limiter -> store -> outputs, from the agent config (a dict)."""
    cfg = cfg or {}
    if not isinstance(cfg, dict):
        raise ConfigError(f"config: expected a mapping, got {cfg!r}")
    limiter = build_rate_limiter(cfg.get("rate_limit"))
    outputs = build_outputs(cfg.get("outputs"), stream=stream)
    try:
        store = build_store(cfg.get("store"))
    except BaseException:
        _close_all(outputs)
        raise
    return AlertPipeline(OutputDispatcher(outputs, store=store), limiter=limiter)


__all__ = ["ConfigError", "parse_duration", "parse_size", "build_outputs", "build_store",
           "build_rate_limiter", "build_pipeline", "Output", "DEFAULT_FILE_PATH"]
