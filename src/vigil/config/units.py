"""The one reading of sizes and durations, for vigil.yaml and the command line.

Sizes follow Kubernetes' convention: SI suffixes are powers of 1000
(``16MB`` = ``16M`` = 16,000,000; k/K, M, G, T), IEC suffixes powers of 1024
(``16MiB`` = 16,777,216; KiB, MiB, GiB, TiB); decimals are allowed
(``1.5MiB``); a plain number is bytes.  Suffixes are case-insensitive.

Durations: ``250ms``, ``1.5s``, ``10m``, ``1h``, ``2d``, ``2w`` and sums of
them (``1h30m``, ``1h 5s``); a plain number is seconds.

Both raise ValueError saying what is wrong; callers add the key
(:class:`vigil.config.section.Section`, :class:`vigil.cli.common.Duration`).

Why not a library: humanfriendly has the right SI/IEC arithmetic but takes
any word starting with a unit letter ("5 parsecs" is 5 PB) and refuses
"1h30m" and ".5s"; pydantic's ByteSize has no k/M/G.  The two tables below
are the whole grammar.
"""
from __future__ import annotations

import math
import re
from typing import Any

SIZE_UNITS = {"": 1, "b": 1}
for _i, _p in enumerate("kmgt", 1):
    SIZE_UNITS[_p] = SIZE_UNITS[_p + "b"] = 1000 ** _i
    SIZE_UNITS[_p + "ib"] = 1024 ** _i
DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}

_NUM = r"(\d+(?:\.\d*)?|\.\d+)"
_SIZE = re.compile(rf"\s*{_NUM}\s*([a-z]*)\s*", re.I)
_TERM = re.compile(rf"\s*{_NUM}\s*(ms|s|m|h|d|w)(?![a-z])\s*", re.I)
_SIZE_HINT = "use e.g. 1048576, 512KiB, 16MiB, 100MB, 1.5GiB"
_DURATION_HINT = "use e.g. 30, 250ms, 1.5s, 10m, 1h, 7d"


def _number(value: Any, what: str):
    """value itself when it is a number (else None); bool, negative, inf and nan refused."""
    if isinstance(value, bool):
        raise ValueError(f"not a {what}: {value!r}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"negative {what}: {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"not a finite {what}: {value!r}")
        return value
    return None


def parse_size(value: Any) -> int:
    """Bytes from ``1048576``, ``"512k"``, ``"100MB"``, ``"16MiB"``, ``"1.5GiB"``."""
    n = _number(value, "size")
    if n is not None:
        return int(n)
    s = str(value).strip()
    if s.startswith("-"):
        raise ValueError(f"negative size: {value!r}")
    m = _SIZE.fullmatch(s)
    if not m or m.group(2).lower() not in SIZE_UNITS:
        raise ValueError(f"not a size: {value!r} ({_SIZE_HINT})")
    return int(float(m.group(1)) * SIZE_UNITS[m.group(2).lower()])


def parse_duration(value: Any) -> float:
    """Seconds from ``30``, ``1.5``, ``"250ms"``, ``"10m"``, ``"1h30m"``, ``"7d"``."""
    n = _number(value, "duration")
    if n is not None:
        return float(n)
    s = str(value).strip()
    if s.startswith("-"):
        raise ValueError(f"negative duration: {value!r}")
    if not s:
        raise ValueError("empty duration")
    if re.fullmatch(_NUM, s):
        return float(s)
    total, pos = 0.0, 0
    for m in _TERM.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * DURATION_UNITS[m.group(2).lower()]
        pos = m.end()
    if pos == 0 or pos != len(s):
        raise ValueError(f"not a duration: {value!r} ({_DURATION_HINT})")
    return total


__all__ = ["parse_size", "parse_duration", "SIZE_UNITS", "DURATION_UNITS"]
