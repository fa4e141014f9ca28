"""Which rows answer each part of a window: whole days and hours from the rollup, the rest of an
hour from the attempts; together they cover the window exactly, without gaps or overlaps."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from trainyard.platform.costs import segments
from trainyard.platform.costs.segments import DAY, HOUR, Segment, split
from trainyard.platform.costs.windows import epoch, make_window

BASE = epoch(datetime(2026, 3, 1, tzinfo=UTC))


def _covered(parts: list[Segment]) -> list[tuple[float, float]]:
    """The instants each segment stands for: a row's whole bucket, the attempts' [lo, hi)."""
    return sorted((s.lo, s.hi if s.grain == "a" else s.lo + (DAY if s.grain == "d" else HOUR)) for s in parts)


@given(
    lo=st.floats(0, 40 * DAY, allow_nan=False),
    length=st.floats(1, 40 * DAY, allow_nan=False),
    now=st.floats(0, 90 * DAY, allow_nan=False),
)
def test_segments_partition_an_interval(lo: float, length: float, now: float) -> None:
    lo, hi, now = BASE + lo, BASE + lo + length, BASE + now
    parts = split(1, 0, lo, hi, now)
    spans = _covered(parts)
    # Back to back from lo; the last ends at hi, or reads a whole hour row when hi is past now.
    assert spans[0][0] == lo
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end == start
    last, end = parts[-1], spans[-1][1]
    # It ends at hi, or is an hour row holding hi whose rest is after now (nothing billed there).
    assert end == hi or (hi >= now and last.grain == "h" and last.lo < hi < end)
    for s in parts:
        if s.grain == "d":
            assert s.lo % DAY == 0
        elif s.grain == "h":
            assert s.lo % HOUR == 0
        else:
            assert s.hi - s.lo < HOUR and s.lo // HOUR == (s.hi - 1e-6) // HOUR  # inside one hour


def test_thirty_days_is_days_hours_and_two_pieces() -> None:
    start = datetime(2026, 3, 1, 10, 20, tzinfo=UTC)
    end = start + timedelta(days=30)
    window = make_window(start, end, timedelta(days=1), step_text="1d")
    parts = segments.plan(window, end)
    grains = [s.grain for s in parts]
    # Previous and current window: a piece at each start (10:20 is mid-hour), whole days
    # between, and the hour at the end read whole (nothing is billed past now).
    assert grains.count("a") == 3  # the previous window's start, and 10:00-10:20 | 10:20-11:00
    assert grains.count("d") == 29 + 29
    assert parts[-1].grain == "h" and parts[-1].lo == epoch(end.replace(minute=0))
    assert {(s.period, s.bucket) for s in parts} == {(0, -1), *((1, k) for k in range(31))}


def test_steps_off_the_hour_are_read_from_attempts() -> None:
    assert segments.hourly(None) and segments.hourly(3600) and segments.hourly(86_400)
    assert not segments.hourly(900) and not segments.hourly(5400)
