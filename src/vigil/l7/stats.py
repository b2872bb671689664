"""Latency histograms as the service map and `vigil top` keep them, and quantiles
from cumulative buckets (Prometheus' ``histogram_quantile`` arithmetic: linear
within the bucket the rank falls in; the +Inf bucket answers its lower bound)."""
from __future__ import annotations

import math
from bisect import bisect_left

# seconds; sub-millisecond buckets for calls inside a node, 0.25 s among them
DURATION_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                    0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Hist:
    """Counts per bucket (the last one is +Inf) and the sum, not cumulative."""

    __slots__ = ("counts", "sum")

    def __init__(self, n: int = len(DURATION_BUCKETS) + 1):
        self.counts = [0] * n
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        # le is inclusive: a value equal to a bound belongs to that bound's bucket
        self.counts[bisect_left(DURATION_BUCKETS, seconds)] += 1
        self.sum += seconds

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list:
        """[(le as Prometheus writes it, cumulative count)] ending with +Inf."""
        out, acc = [], 0
        for le, n in zip(DURATION_BUCKETS, self.counts):
            acc += n
            out.append((repr(le), acc))
        out.append(("+Inf", acc + self.counts[-1]))
        return out

    def to_list(self) -> list:
        return list(self.counts)


def quantile(q: float, buckets) -> float:
    """The q-quantile of cumulative ``[(le, count)]`` (le as float, +Inf as math.inf),
    sorted by le; nan when there are no samples."""
    buckets = sorted((float(le), float(c)) for le, c in buckets)
    if not buckets or buckets[-1][1] <= 0:
        return math.nan
    total = buckets[-1][1]
    rank = q * total
    lower_le, lower_c = 0.0, 0.0
    for le, c in buckets:
        if c >= rank and c > lower_c:
            if math.isinf(le):
                return lower_le
            return lower_le + (le - lower_le) * (rank - lower_c) / (c - lower_c)
        lower_le, lower_c = le, c
    return lower_le


def cumulative_of(counts: list) -> list:
    """Per-bucket counts (as Hist.to_list) -> cumulative [(le float, count)]."""
    out, acc = [], 0
    for le, n in zip(DURATION_BUCKETS + (math.inf,), counts):
        acc += n
        out.append((le, acc))
    return out


__all__ = ["DURATION_BUCKETS", "Hist", "quantile", "cumulative_of"]
