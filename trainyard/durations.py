"""Durations as people read them, in one format everywhere: `15s`, `4m10s`, `2h05m`, `3d04h`.

Plans' reasons, the CLI's tables, the job view and the demo use `format_duration`; the
dashboard's `formatDuration()` in `api/static/duration.js` follows the same rule, so a job's
estimate reads the same wherever it is shown.

The rule: under a minute, whole seconds (`<1s` for a sliver above zero); under an hour, minutes
and seconds; under a day, hours and minutes; beyond, days and hours. Each figure is rounded half
up to its last unit before the unit is chosen, so 59.6 s is `1m00s`, never `60s`.
"""

from __future__ import annotations

import math

__all__ = ["format_duration"]


def _round(value: float) -> int:
    # Half up, as JavaScript's Math.round, so that both sides print the same digits.
    return math.floor(value + 0.5)


def format_duration(seconds: float | None) -> str:
    """`seconds` as text: `15s`, `4m10s`, `2h05m`, `3d04h`; `never` for an infinite span, `-`
    for None."""
    if seconds is None:
        return "-"
    value = float(seconds)
    if math.isnan(value) or math.isinf(value):
        return "never" if value > 0 or math.isnan(value) else "-never"
    if value < 0:
        return "-" + format_duration(-value)
    if 0 < value < 0.5:
        return "<1s"
    whole = _round(value)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        minutes, secs = divmod(whole, 60)
        return f"{minutes}m{secs:02d}s"
    total_minutes = _round(value / 60)
    if total_minutes < 24 * 60:
        hours, minutes = divmod(total_minutes, 60)
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(_round(value / 3600), 24)
    return f"{days}d{hours:02d}h"
