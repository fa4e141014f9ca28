"""When to try a request again, and how long to wait first."""

from __future__ import annotations

import email.utils
import random
import time
from datetime import UTC

import httpx

__all__ = ["retry_after_seconds", "retry_delay", "should_retry"]

INITIAL_RETRY_DELAY = 0.5
MAX_RETRY_DELAY = 8.0
# A Retry-After longer than this is clamped: a client call should not hang for minutes unasked.
MAX_RETRY_AFTER = 60.0


def retry_after_seconds(response: httpx.Response | None) -> float | None:
    """The server's Retry-After, in seconds (a number or an HTTP date), or None."""
    if response is None:
        return None
    raw = response.headers.get("retry-after")
    if not raw:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        try:
            parsed = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None  # neither a number nor a date: fall back to our own backoff
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        seconds = parsed.timestamp() - time.time()
    if seconds != seconds or seconds < 0:  # NaN or a date in the past
        return 0.0
    return min(seconds, MAX_RETRY_AFTER)


def retry_delay(retries_taken: int, response: httpx.Response | None) -> float:
    """Seconds to wait before the next try: the server's Retry-After when given, else
    exponential backoff with jitter (so that many clients do not come back in step)."""
    after = retry_after_seconds(response)
    if after is not None:
        return after
    delay = min(INITIAL_RETRY_DELAY * 2.0**retries_taken, MAX_RETRY_DELAY)
    return delay * (1.0 - 0.25 * random.random())


def should_retry(response: httpx.Response) -> bool:
    # 408 and 429 say "try again later"; 5xx may be a passing fault. Other 4xx will not change.
    return response.status_code in (408, 429) or response.status_code >= 500
