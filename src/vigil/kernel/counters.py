"""The kernel's counters (map ``stats``, per CPU), read from user space.

Index ``kind * STAT_SLOTS + slot`` (enum stat_slot in kernel/bpf/events.h;
tests/test_kinds.py checks both sides agree).  Kind 0, which no event has,
sums every loss, so noticing a loss costs one lookup.
"""
from __future__ import annotations

import struct

from vigil.events import Kind

# enum stat_slot
STAT_SLOTS_ENUM = {"STAT_SENT": 0, "STAT_LOST": 1, "STAT_LOST_HI": 2, "STAT_BUDGET": 3,
                   "STAT_NO_STASH": 4, "STAT_SLOTS": 8}
SENT, LOST, LOST_HI, BUDGET, NO_STASH = (STAT_SLOTS_ENUM[k] for k in (
    "STAT_SENT", "STAT_LOST", "STAT_LOST_HI", "STAT_BUDGET", "STAT_NO_STASH"))
SLOTS = STAT_SLOTS_ENUM["STAT_SLOTS"]

# names in stats(): a lost event is "dropped" (bulk ring full), "dropped_hi"
# (high-priority ring full), "no_stash" (no enter->exit slot); "over_budget"
# is an event its process's budget held back
SLOT_NAMES = {SENT: "sent", LOST: "dropped", LOST_HI: "dropped_hi", BUDGET: "over_budget",
              NO_STASH: "no_stash"}
LOSS_SLOTS = (LOST, LOST_HI, BUDGET, NO_STASH)
_U64 = struct.Struct("<Q")
_KEY = struct.Struct("<I")


def _sum(stats_map, index: int) -> int:
    return sum(_U64.unpack(v)[0] for v in stats_map.percpu_values(_KEY.pack(index)))


def losses(stats_map) -> dict:
    """{slot name: total} of the loss slots over every kind (kind 0's entries)."""
    return {SLOT_NAMES[s]: _sum(stats_map, s) for s in LOSS_SLOTS}


def loss_total(stats_map) -> int:
    """Every event not sent, whatever the reason (a few lookups)."""
    return sum(losses(stats_map).values())


def by_kind(stats_map) -> dict:
    """{kind label: {"sent", "dropped", ...}} summed over CPUs; only the
    counters that are not 0 besides "sent" and "dropped", only kinds with any."""
    out = {}
    for k in Kind:
        base = int(k) * SLOTS
        row = {name: _sum(stats_map, base + s) for s, name in SLOT_NAMES.items()}
        if any(row.values()):
            out[k.label] = {n: v for n, v in row.items() if v or n in ("sent", "dropped")}
    return out


def lost_of(row: dict) -> int:
    """The events of one by_kind() row that were lost (not over budget)."""
    return row.get("dropped", 0) + row.get("dropped_hi", 0) + row.get("no_stash", 0)
