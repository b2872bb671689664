"""Reading one mapping of the configuration: known keys, defaults, typed values.

Every mistake is a :class:`ConfigError` naming the key path, so whoever
knows the file can add ``file:line`` (:meth:`vigil.config.Config.locate`).
"""
from __future__ import annotations

from typing import Any, Optional

from vigil.config.errors import ConfigError
from vigil.config.units import parse_duration, parse_size


def dotted(path: tuple) -> str:
    return ".".join(map(str, path))


class Section:
    """``raw`` (a mapping, or None for empty) at key path ``path``; ``keys``
    maps each allowed key to its default.  An unknown key is reported as
    ``section: unknown key 'k'`` or, with ``key_named_unknown``, as
    ``section.k: unknown key``; either way at the unknown key's line."""

    def __init__(self, path, raw: Any, keys: dict, key_named_unknown: bool = False):
        self.path = (path,) if isinstance(path, str) else tuple(path)
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ConfigError(f"expected a mapping, got {raw!r}", key=self.path)
        unknown = sorted(set(map(str, raw)) - set(keys))
        if unknown:
            k, known = unknown[0], ", ".join(sorted(keys))
            if key_named_unknown:
                raise ConfigError(f"unknown key (known: {known})", key=self.path + (k,))
            raise ConfigError(f"unknown key {k!r} (known: {known})", key=self.path,
                              at=self.path + (k,))
        self.raw = raw
        self.keys = keys

    def get(self, key: str):
        return self.raw.get(key, self.keys[key])

    def bad(self, key: str, why: str, quote: bool = True) -> ConfigError:
        got = f", got {self.get(key)!r}" if quote else ""
        return ConfigError(why + got, key=self.path + (key,))

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

    def choice(self, key: str, choices: tuple):
        """One of ``choices`` exactly (strings or YAML values such as true)."""
        v = self.get(key)
        if not any(v is c or (type(v) is type(c) and v == c) for c in choices):
            raise self.bad(key, "expected " + _or(choices))
        return v

    def number(self, key: str, minimum: float = 0.0, allow_zero: bool = True) -> float:
        v = self.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise self.bad(key, "expected a number")
        if v < minimum or (not allow_zero and v == 0):
            raise self.bad(key, f"expected a number {'>' if not allow_zero else '>='} {minimum}")
        return float(v)

    def int(self, key: str, minimum: int = 0, optional: bool = False,
            maximum: Optional[int] = None) -> Optional[int]:
        v = self.get(key)
        if v is None and optional:
            return None
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum or (
                maximum is not None and v > maximum):
            raise self.bad(key, f"expected an integer >= {minimum}" if maximum is None
                           else f"expected {minimum}..{maximum}")
        return v

    def duration(self, key: str, optional: bool = False) -> Optional[float]:
        v = self.get(key)
        if v is None and optional:
            return None
        try:
            return parse_duration(v)
        except ValueError as exc:
            raise self.bad(key, str(exc), quote=False) from None

    def size(self, key: str, optional: bool = False) -> Optional[int]:
        v = self.get(key)
        if v is None and optional:
            return None
        try:
            return parse_size(v)
        except ValueError as exc:
            raise self.bad(key, str(exc), quote=False) from None

    def file_mode(self, mode_key: str = "file_mode", group_key: str = "group"):
        """The :class:`vigil.safe_files.FileMode` from ``file_mode`` (0600 or
        0640) and ``group`` (a group name or id; the files' group)."""
        from vigil.safe_files import FileMode
        try:
            FileMode.parse(self.get(mode_key))
        except ValueError as exc:
            raise self.bad(mode_key, str(exc), quote=False) from None
        try:
            return FileMode.parse(self.get(mode_key), self.get(group_key))
        except ValueError as exc:
            raise self.bad(group_key, str(exc), quote=False) from None

    def str_list(self, key: str, what: str, allow_empty_items: bool = True) -> list:
        v = self.get(key)
        if v is None:
            return []
        if not isinstance(v, list) or not all(
                isinstance(x, str) and (allow_empty_items or x) for x in v):
            raise self.bad(key, f"expected a list of {what}")
        return v


def _or(choices) -> str:
    words = ["true" if c is True else "false" if c is False else str(c) for c in choices]
    return ", ".join(words[:-1]) + " or " + words[-1] if len(words) > 1 else words[0]


__all__ = ["Section", "dotted"]
