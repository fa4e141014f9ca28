"""One money rule: the precision follows the amount, and the dashboard's JavaScript prints the
same digits as the Python the CLI and the API's messages use."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from support import ROOT

from trainyard.money import format_usd

MONEY_JS = ROOT / "trainyard" / "api" / "static" / "money.js"


@pytest.mark.parametrize(
    ("amount", "text"),
    [
        (0, "$0.00"),
        (0.00052, "$0.00052"),
        (0.0005, "$0.0005"),
        (0.0123, "$0.012"),
        (0.45, "$0.45"),
        (0.5, "$0.50"),
        (0.999, "$1.00"),
        (3.1, "$3.10"),
        (999.99, "$999.99"),
        (999.996, "$1,000"),
        (12_400, "$12,400"),
        (1_234_567.89, "$1,234,568"),
        (-4.2, "-$4.20"),
        (-0.001, "-$0.001"),
        (1e-12, "$0.00"),
        (-1e-12, "$0.00"),
    ],
)
def test_precision_follows_the_amount(amount: float, text: str) -> None:
    assert format_usd(amount) == text


def _value(text: str) -> float:
    sign = -1.0 if text.startswith("-") else 1.0
    return sign * float(text.lstrip("-").lstrip("$").replace(",", ""))


@given(st.floats(min_value=-1e9, max_value=1e9, allow_nan=False))
def test_a_figure_reads_back_close_to_its_amount(amount: float) -> None:
    text = format_usd(amount)
    shown = _value(text)
    a = abs(amount)
    # Whole dollars from $1,000, cents from $1, two significant figures below (or $0.00 for dust).
    allowed = 0.5 if a >= 999.995 else 0.005 if a >= 1 else max(a * 0.05, 5e-11)
    assert abs(shown - amount) <= allowed + 1e-9 * a, text
    assert not (amount != 0 and shown != 0 and (shown < 0) != (amount < 0)), text
    # Never "$0.00" for an amount a person would call money.
    assert shown != 0 or a < 1e-10, text


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_the_dashboard_prints_the_same_digits() -> None:
    rng = random.Random(12)
    amounts = [0.0, 0.125, 0.000525, 2.675, 999.995, 1e-10, 5e-11, -3.005, 1e15]
    for _ in range(3000):
        exponent = rng.uniform(-11, 9)
        amounts.append(rng.choice((1, -1)) * 10**exponent)
    # Amounts on rounding edges: the digit after the last shown is a 5.
    amounts += [float(Decimal(f"{rng.randint(1, 999)}.{rng.randint(0, 99):02d}5")) for _ in range(500)]
    script = (
        f"require({json.dumps(str(MONEY_JS))});"
        "const amounts = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
        "process.stdout.write(JSON.stringify(amounts.map(globalThis.trainyardMoney.formatUsd)));"
    )
    done = subprocess.run(
        ["node", "-e", script],
        input=json.dumps(amounts),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    js = json.loads(done.stdout)
    mismatched = [(a, p, j) for a, p, j in zip(amounts, map(format_usd, amounts), js, strict=True) if p != j]
    assert mismatched == []
