"""Dollars as people read them, with a precision that follows the amount: `$0.00052`, `$3.10`,
`$12,400`. The CLI, error messages and plans use `format_usd`; the dashboard's `money()` in
`api/static/dashboard.js` follows the same rule, so a figure reads the same everywhere.

The rule, on the absolute value (a minus sign goes in front of the `$`):
- $1,000 and over: whole dollars with thousands separators ($12,400);
- $1 up to $1,000: cents ($3.10);
- under $1: two significant figures, at least cents, trailing zeros past the cents dropped
  ($0.45, $0.012, $0.00052, $0.0005); zero, or under a ten-billionth, is $0.00.

Rounding is half away from zero on the float's exact value, which is what JavaScript's
`toFixed` does, so both sides print the same digits.
"""

from __future__ import annotations

import math
from decimal import ROUND_HALF_UP, Decimal

# Past ten decimals an amount is noise (float error in a sum), not money.
MAX_DECIMALS = 10


def _fixed(value: float, decimals: int) -> str:
    quantum = Decimal(1).scaleb(-decimals)
    return f"{Decimal(value).quantize(quantum, rounding=ROUND_HALF_UP):f}"


def usd_decimals(amount: float) -> int:
    """How many decimals `format_usd` shows for `amount` (before trailing zeros are dropped)."""
    a = abs(amount)
    if a == 0 or not math.isfinite(a):
        return 2
    if float(_fixed(a, 2)) >= 1000:
        return 0
    # Two significant figures: one more decimal per power of ten below $0.10. A loop of
    # divisions rather than log10, so that JavaScript finds the same digits on every platform.
    decimals, threshold = 2, 0.1
    while a < threshold and decimals < MAX_DECIMALS:
        decimals += 1
        threshold /= 10
    return decimals


def format_usd(amount: float) -> str:
    """`amount` dollars as text: `$0.00052`, `$3.10`, `$12,400`, `-$4.20`."""
    value = float(amount)
    if not math.isfinite(value):
        return f"${value}"
    decimals = usd_decimals(value)
    digits = _fixed(abs(value), decimals)
    if decimals > 2:
        digits = digits.rstrip("0")
        whole, _, frac = digits.partition(".")
        digits = f"{whole}.{frac.ljust(2, '0')}"
    if decimals == 0:
        digits = f"{int(digits):,}"
    sign = "-" if value < 0 and float(digits.replace(",", "")) != 0 else ""
    return f"{sign}${digits}"
