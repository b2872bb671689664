"""Build the alert pipeline from the agent configuration.

The relevant sections of ``vigil.yaml`` (other top-level keys are ignored
here; every key *inside* these sections is checked)::

    outputs:
      stdout:  {enabled: true, format: text}            # text | json
      file:    {enabled: false, path: /var/log/vigil/alerts.jsonl,
                max_bytes: 100MiB, backups: 5, fsync: false, file_mode: 0600, group: null}
      syslog:  {enabled: false, address: /dev/log, facility: local0, format: text}
      webhook: {enabled: false, url: http://falcosidekick:2801/, headers: {},
                timeout: 5, max_retries: 5, backoff: 0.5, max_backoff: 30,
                queue_size: 10000, verify: true}
    store:      {enabled: true, path: /var/lib/vigil/alerts.db, max_age: 7d,
                 max_rows: 1000000, max_bytes: null, synchronous: full,
                 file_mode: 0600, group: null}
    rate_limit: {window: 1.0}          # seconds or a duration; 0 disables

The output types, their keys and defaults come from the registry
(:mod:`vigil.alerts.outputs.registry`).  An output section that is present
defaults to ``enabled: true``; ``stdout`` is enabled when absent, the others
are disabled.  ``name: false`` and ``name: true`` are accepted as
shorthands.  Mistakes raise :class:`vigil.config.ConfigError` naming the key
and the bad value.
"""
from __future__ import annotations

import time
from typing import Callable, Optional, TextIO

from vigil.alerts.alert import FALCO_JSON, JsonShape
from vigil.alerts.outputs.base import AlertPipeline, Output, OutputDispatcher
from vigil.alerts.outputs.file import DEFAULT_FILE_PATH
from vigil.alerts.outputs.registry import output_types
from vigil.alerts.ratelimit import RateLimiter
from vigil.alerts.store import DEFAULT_STORE_PATH, AlertStore
from vigil.config.errors import ConfigError
from vigil.config.section import Section
from vigil.config.units import parse_duration, parse_size


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
        raise ConfigError(f"expected a mapping or true/false, got {raw!r}", key=("outputs", name))
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError(f"expected true or false, got {enabled!r}",
                          key=("outputs", name, "enabled"))
    return raw if enabled else None


def build_outputs(outputs_cfg: Optional[dict], stream: Optional[TextIO] = None,
                  json_shape: JsonShape = FALCO_JSON) -> list:
    """The enabled outputs, in the registry's order (stdout, file, syslog, webhook),
    writing JSON alerts in ``json_shape``."""
    if outputs_cfg is None:
        outputs_cfg = {}
    if not isinstance(outputs_cfg, dict):
        raise ConfigError(f"expected a mapping, got {outputs_cfg!r}", key=("outputs",))
    types = output_types()
    unknown = sorted(set(map(str, outputs_cfg)) - set(types))
    if unknown:
        raise ConfigError(f"unknown output {unknown[0]!r} (known: {', '.join(types)})",
                          key=("outputs",), at=("outputs", unknown[0]))
    built: list = []
    try:
        for name, t in types.items():
            raw = _section_raw(outputs_cfg, name, t.enabled_by_default)
            if raw is not None:
                out = t.build(Section(("outputs", name), raw, t.defaults), stream)
                out.json_shape = json_shape
                built.append(out)
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


def _optional_section(name: str, cfg, keys: dict) -> Optional[Section]:
    """None for ``name: false``; ``name: true`` and null are the defaults."""
    if cfg is False:
        return None
    return Section((name,), cfg if cfg not in (None, True) else {}, keys)


def build_store(store_cfg: Optional[dict]) -> Optional[AlertStore]:
    """The alert store (enabled unless ``enabled: false``), or None."""
    s = _optional_section("store", store_cfg, {
        "enabled": True, "path": DEFAULT_STORE_PATH, "max_age": "7d", "max_rows": 1_000_000,
        "max_bytes": None, "synchronous": "full", "file_mode": "0600", "group": None})
    if s is None or not s.bool("enabled"):
        return None
    path = s.str("path")
    mode = s.file_mode()
    max_age = s.duration("max_age", optional=True)
    max_rows = s.int("max_rows", 1, optional=True)
    max_bytes = s.size("max_bytes", optional=True)
    sync = s.str("synchronous", ("off", "normal", "full", "extra"))
    try:
        return AlertStore(path, max_age_s=max_age, max_rows=max_rows, max_bytes=max_bytes,
                          synchronous=sync, file_mode=mode)
    except Exception as exc:
        raise s.bad("path", f"cannot open alert store {path!r}: {exc}", quote=False) from None


def build_rate_limiter(rl_cfg: Optional[dict],
                       clock: Optional[Callable[[], float]] = None) -> Optional[RateLimiter]:
    """The rate limiter, or None when ``window`` is 0 or the section is false.
    ``clock`` gives the limiter's seconds (default monotonic time; a replay
    passes the replayed events' time)."""
    s = _optional_section("rate_limit", rl_cfg, {"window": 1.0, "max_keys": 100_000})
    if s is None:
        return None
    window = s.duration("window")
    max_keys = s.int("max_keys", 1)
    if window == 0:
        return None
    return RateLimiter(window=window, max_keys=max_keys, clock=clock or time.monotonic)


def build_pipeline(cfg: Optional[dict], stream: Optional[TextIO] = None,
                   clock: Optional[Callable[[], float]] = None,
                   json_shape: JsonShape = FALCO_JSON) -> AlertPipeline:
    """Rate limiter -> store -> outputs, from the agent config (a dict)."""
    cfg = cfg or {}
    if not isinstance(cfg, dict):
        raise ConfigError(f"expected a mapping, got {cfg!r}", key=("config",))
    limiter = build_rate_limiter(cfg.get("rate_limit"), clock=clock)
    outputs = build_outputs(cfg.get("outputs"), stream=stream, json_shape=json_shape)
    try:
        store = build_store(cfg.get("store"))
    except BaseException:
        _close_all(outputs)
        raise
    return AlertPipeline(OutputDispatcher(outputs, store=store), limiter=limiter)


__all__ = ["ConfigError", "parse_duration", "parse_size", "build_outputs", "build_store",
           "build_rate_limiter", "build_pipeline", "Output", "DEFAULT_FILE_PATH"]
