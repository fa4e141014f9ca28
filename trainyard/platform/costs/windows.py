"""Time windows and steps: what `window=` and `step=` mean, and the buckets a step cuts a window into.

Instants are UTC throughout; a bucket sits on a UTC multiple of its step, so a day starts at
midnight whatever the window.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from trainyard.platform.errors import InvalidRequest

NAMED_WINDOWS = ("24h", "7d", "30d", "month")
MAX_WINDOW = timedelta(days=3660)
MAX_BUCKETS = 1000
MIN_STEP = timedelta(minutes=1)

_DURATION = re.compile(r"^(\d{1,5})([mhdw])$")
_UNITS = {"m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}


def parse_duration(value: str, *, param: str) -> timedelta:
    m = _DURATION.match(value.strip())
    if not m or int(m.group(1)) == 0:
        raise InvalidRequest(
            f"{param} must be a positive duration such as 15m, 6h, 1d or 1w, not {value!r}", param=param
        )
    return timedelta(seconds=int(m.group(1)) * _UNITS[m.group(2)])


def parse_step(value: str | None) -> timedelta | None:
    """`step=`: a duration of at least a minute, or None for one bucket over the whole window."""
    if not value:
        return None
    step = parse_duration(value, param="step")
    if step < MIN_STEP:
        raise InvalidRequest("step must be at least 1m", param="step")
    return step


def _parse_instant(value: str, *, param: str) -> datetime:
    raw = value.strip()
    try:
        parsed = datetime.fromisoformat(raw[:-1] + "+00:00" if raw.endswith(("Z", "z")) else raw)
    except ValueError:
        raise InvalidRequest(f"{param}: {value!r} is not an RFC 3339 timestamp", param=param) from None
    if parsed.tzinfo is None:
        # RFC 3339 requires an offset; guessing the server's zone would shift every bucket.
        raise InvalidRequest(f"{param}: {value!r} needs a UTC offset (Z or +hh:mm)", param=param)
    return parsed.astimezone(UTC)


def month_start(now: datetime) -> datetime:
    now = now.astimezone(UTC)
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def next_month_start(now: datetime) -> datetime:
    start = month_start(now)
    return (
        start.replace(year=start.year + 1, month=1)
        if start.month == 12
        else start.replace(month=start.month + 1)
    )


def parse_window(value: str, now: datetime) -> tuple[datetime, datetime]:
    """`24h`, `7d`, `30d` (or any `<n>h`/`<n>d`), `month` (this calendar month so far, UTC), or an
    RFC 3339 `start,end` pair. Relative windows end now."""
    raw = (value or "").strip()
    if raw == "month":
        start, end = month_start(now), now
    elif "," in raw:
        left, _, right = raw.partition(",")
        start, end = _parse_instant(left, param="window"), _parse_instant(right, param="window")
        if end <= start:
            raise InvalidRequest("window: the end must come after the start", param="window")
    else:
        m = _DURATION.match(raw)
        if not m or m.group(2) not in "hdw" or int(m.group(1)) == 0:
            raise InvalidRequest(
                f"window must be one of {', '.join(NAMED_WINDOWS)}, another '<n>h'/'<n>d', or an "
                f"RFC 3339 'start,end' pair; got {value!r}",
                param="window",
            )
        length = timedelta(seconds=int(m.group(1)) * _UNITS[m.group(2)])
        if length > MAX_WINDOW:
            raise InvalidRequest("window is longer than ten years", param="window")
        start, end = now - length, now
    if end - start > MAX_WINDOW:
        raise InvalidRequest("window is longer than ten years", param="window")
    if start.year < 1971 or end.year > 9000:
        raise InvalidRequest("window is outside the range this service keeps", param="window")
    return start, end


@dataclass(frozen=True)
class Window:
    """[start, end) cut into `n_buckets` buckets, and the window of the same length before it.

    Bucket k is [aligned + k*step_seconds, aligned + (k+1)*step_seconds) clipped to [start, end);
    without a step there is one bucket, the whole window."""

    start: datetime
    end: datetime
    prev_start: datetime
    step: timedelta | None
    aligned: float
    step_seconds: float
    n_buckets: int

    def bucket_bounds(self, k: int) -> tuple[datetime, datetime]:
        lo = max(self.aligned + k * self.step_seconds, epoch(self.start))
        hi = min(self.aligned + (k + 1) * self.step_seconds, epoch(self.end))
        return datetime.fromtimestamp(lo, UTC), datetime.fromtimestamp(hi, UTC)

    def params(self) -> dict[str, Any]:
        """The bound parameters the allocation query reads the window from (epoch seconds)."""
        return {
            "w1": self.end,
            "p0": self.prev_start,
            "p0e": epoch(self.prev_start),
            "w0e": epoch(self.start),
            "w1e": epoch(self.end),
            "a0e": self.aligned,
            "st": self.step_seconds,
            "n_buckets": self.n_buckets,
        }


def make_window(start: datetime, end: datetime, step: timedelta | None, *, step_text: str = "") -> Window:
    """The buckets of [start, end) per `step` (as parsed from `step_text`)."""
    # `month` asked at the very first instant of a month would be empty; give it a second.
    end = max(end, start + timedelta(seconds=1))
    length = end - start
    if step is None:
        return Window(start, end, start - length, None, epoch(start), length.total_seconds(), 1)
    step_seconds = step.total_seconds()
    aligned = math.floor(epoch(start) / step_seconds) * step_seconds
    n_buckets = math.ceil((epoch(end) - aligned) / step_seconds)
    if n_buckets > MAX_BUCKETS:
        raise InvalidRequest(
            f"step {step_text} makes {n_buckets} buckets over this window; the most is {MAX_BUCKETS}",
            param="step",
        )
    return Window(start, end, start - length, step, aligned, step_seconds, n_buckets)


def epoch(value: datetime) -> float:
    return value.timestamp()


def ts(value: datetime) -> str:
    """RFC 3339 in UTC with a `Z`, as every cost answer spells an instant."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def db_now(session: Session) -> datetime:
    """The database's clock: every figure is "as of" the same instant the rows were written by."""
    now = session.scalar(select(func.now()))
    assert isinstance(now, datetime)
    return now
