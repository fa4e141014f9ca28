"""One duration rule: an estimate reads the same in plans' reasons, the CLI and the dashboard."""

from __future__ import annotations

import json
import random
import shutil
import subprocess

import pytest
from support import ROOT

from trainyard.durations import format_duration
from trainyard.platform.scheduling import format_duration as plan_duration

DURATION_JS = ROOT / "trainyard" / "api" / "static" / "duration.js"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "-"),
        (0, "0s"),
        (0.2, "<1s"),
        (0.5, "1s"),
        (15, "15s"),
        (30.5, "31s"),
        (59.4, "59s"),
        (59.6, "1m00s"),
        (250, "4m10s"),
        (3599.6, "1h00m"),
        (7500, "2h05m"),
        (86_399, "1d00h"),
        (3 * 86_400 + 4 * 3600, "3d04h"),
        (float("inf"), "never"),
        (-90, "-1m30s"),
    ],
)
def test_one_format(seconds: float | None, text: str) -> None:
    assert format_duration(seconds) == text


def test_plans_use_the_figure_they_store() -> None:
    # A plan keeps estimated_seconds to a tenth; its reason must not say 16s while it stores 16.5.
    raw = 16.49
    assert plan_duration(raw) == format_duration(round(raw, 1)) == "17s"


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_the_dashboard_prints_the_same() -> None:
    rng = random.Random(7)
    values: list[float] = [0, 0.25, 0.5, 59.5, 3599.5, 86_399.9, 1e9]
    values += [rng.uniform(0, 10) ** rng.uniform(0, 7) for _ in range(3000)]
    values += [n + 0.5 for n in range(0, 4000, 7)]  # halves: the rounding edge
    script = (
        f"require({json.dumps(str(DURATION_JS))});"
        "const values = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
        "process.stdout.write(JSON.stringify(values.map(globalThis.trainyardDuration.formatDuration)));"
    )
    done = subprocess.run(
        ["node", "-e", script],
        input=json.dumps(values),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    js = json.loads(done.stdout)
    assert [
        (v, p, j) for v, p, j in zip(values, map(format_duration, values), js, strict=True) if p != j
    ] == []
