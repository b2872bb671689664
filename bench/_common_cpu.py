"""System-wide CPU accounting, to tell how busy the machine was with other
work while a measurement ran (the benches share the machine)."""
from __future__ import annotations

import os

_TICK = os.sysconf("SC_CLK_TCK")


def busy_seconds() -> float:
    """CPU seconds spent not idle, summed over all CPUs, since boot."""
    with open("/proc/stat") as f:
        parts = f.readline().split()[1:]
    v = [int(x) for x in parts]
    idle = v[3] + (v[4] if len(v) > 4 else 0)     # idle + iowait
    steal = v[7] if len(v) > 7 else 0
    return (sum(v[:8]) - idle - steal) / _TICK
