"""Which rows answer each part of a window: whole UTC days and hours come from the rollup, the
part of an hour at either end from the attempts billed inside it.

A window's previous period and each of its buckets is an interval [lo, hi). Its whole days are
read from the rollup's day rows, the hours around them from its hour rows, and what is left at
either end (less than an hour) from the attempts themselves, shared out to the second. Where
an interval ends at or after the database's now, its last hour row is read whole: nothing has
been billed past now, so that row holds only what the interval holds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime

from trainyard.platform.costs.windows import Window, epoch

HOUR = 3600
DAY = 86_400
PREVIOUS = (0, -1)  # (period, bucket) of the previous window


@dataclass(frozen=True)
class Segment:
    """Part of the (period, bucket) interval: a rollup row's bucket (`grain` 'd' or 'h', from
    `lo`, one grain long) or, grain 'a', the attempts' share of [lo, hi)."""

    period: int
    bucket: int
    grain: str
    lo: float
    hi: float

    @property
    def start(self) -> datetime:
        return datetime.fromtimestamp(self.lo, UTC)

    @property
    def end(self) -> datetime:
        return datetime.fromtimestamp(self.hi, UTC)


def intervals(window: Window) -> list[tuple[int, int, float, float]]:
    """(period, bucket, lo, hi) in epoch seconds: the previous window, then each bucket."""
    out = [(*PREVIOUS, epoch(window.prev_start), epoch(window.start))]
    for k in range(window.n_buckets):
        lo, hi = window.bucket_bounds(k)
        out.append((1, k, epoch(lo), epoch(hi)))
    return [i for i in out if i[3] > i[2]]


def _aligned(lo: float, hi: float, size: int) -> tuple[float, float]:
    """The first and last multiples of `size` in [lo, hi] (first > last when there are none)."""
    return math.ceil(lo / size) * size, math.floor(hi / size) * size


def split(period: int, bucket: int, lo: float, hi: float, now: float) -> list[Segment]:
    """[lo, hi) as day rows, hour rows and at most two pieces from attempts, without gaps or
    overlaps."""
    h0, h1 = _aligned(lo, hi, HOUR)
    if h1 < h0:  # inside one hour, on no boundary
        return [Segment(period, bucket, "a", lo, hi)]
    out: list[Segment] = []
    if lo < h0:
        out.append(Segment(period, bucket, "a", lo, h0))
    d0, d1 = _aligned(h0, h1, DAY)
    if d0 < d1:
        days = [(h0, d0, HOUR, "h"), (d0, d1, DAY, "d"), (d1, h1, HOUR, "h")]
    else:
        days = [(h0, h1, HOUR, "h")]
    for start, stop, size, grain in days:
        t = start
        while t < stop:
            out.append(Segment(period, bucket, grain, t, t + size))
            t += size
    if h1 < hi:
        out.append(
            Segment(period, bucket, "h", h1, h1 + HOUR) if hi >= now else Segment(period, bucket, "a", h1, hi)
        )
    return out


def plan(window: Window, now: datetime) -> list[Segment]:
    """Every segment of the window, its previous period and its buckets."""
    at = epoch(now)
    return [s for period, bucket, lo, hi in intervals(window) for s in split(period, bucket, lo, hi, at)]


def hourly(step_seconds: float | None) -> bool:
    """Whether buckets of this step start on whole hours (a window without a step has one bucket)."""
    return step_seconds is None or step_seconds % HOUR == 0
