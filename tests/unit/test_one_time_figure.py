"""One time figure per estimate: the plan's `estimated_seconds`, said in the one duration format
by the plan's own reason (the API's text), the option it chose, and the CLI's job view and
summary, whatever throughput it came from. (test_durations.py holds the format and its
dashboard twin to the same digits.)"""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from rich.console import Console
from support import TWO_POOLS, job_body

from trainyard.cli import rendering
from trainyard.cli.watch import summary
from trainyard.durations import format_duration
from trainyard.platform.deployment import load_deployment
from trainyard.platform.planning import Planned, Planner
from trainyard.platform.scheduling import (
    LearnedThroughput,
    ModelInfo,
    ThroughputObservation,
    choose,
    estimate_all,
)
from trainyard.platform.spec import JobSpec
from trainyard.sdk import Job
from trainyard.settings import get_settings

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
# Whatever reads as a time: `31s`, `4m10s`, `2h05m`, `3d04h`, `<1s`, and the old spellings.
TIME = re.compile(r"<1s|\b\d+(?:\.\d+)?\s?(?:s|min|h|d)\b|\b\d+m\d\ds\b|\b\d+h\d\dm\b|\b\d+d\d\dh\b")


def _text(renderable: Any) -> str:
    console = Console(width=200, file=io.StringIO(), color_system=None, soft_wrap=True)
    console.print(renderable)
    return console.file.getvalue()  # type: ignore[attr-defined,no-any-return]


def _plan(learned: LearnedThroughput | None) -> dict[str, Any]:
    deployment = load_deployment(get_settings(catalog_path=None, pools=TWO_POOLS))
    spec = JobSpec(**job_body())
    model = ModelInfo(parameters=2_000_000, source="spec")
    options = estimate_all(spec, deployment.catalog, model, 0, learned=learned, now=NOW)
    decision = choose(spec, options, available=deployment.available)
    return Planner(deployment).plan_dict(Planned(decision, options, None, model, 0, "max_steps", spec))


def plan_speed(measured: float | None) -> str:
    return "learned from 1 run" if measured is not None else "model"


@pytest.mark.parametrize("measured", [None, 1323.0])
def test_one_estimate_reads_as_one_duration_everywhere(measured: float | None) -> None:
    learned = None
    if measured is not None:
        itype = load_deployment(get_settings(catalog_path=None, pools=TWO_POOLS)).catalog["local-cpu"]
        run = ThroughputObservation.for_instance(
            itype, model_parameters=2_000_000, method="full", tokens_per_second=measured
        )
        learned = LearnedThroughput([run])
    plan = _plan(learned)
    figure = format_duration(plan["estimated_seconds"])
    assert plan["throughput_source"] == ("model" if measured is None else "learned")

    # The API's text: the plan's reason says the figure and no other time.
    assert TIME.findall(plan["reason"]) == [figure], plan["reason"]
    assert f"tok/s ({plan_speed(measured)})" in plan["reason"]

    # The CLI: a queued job's view, and the summary of the same job once it ran.
    queued = Job.model_validate(
        {
            "id": "job_1",
            "status": "queued",
            "plan": plan,
            "cost": {"usd": 0.0, "estimated_usd": plan["estimated_cost_usd"]},
            "created_at": NOW,
        }
    )
    view = _text(rendering.job_detail(queued))
    assert set(TIME.findall(view)) == {figure}, view
    assert str(plan["estimated_seconds"]) not in view and " min" not in view
    [estimate_row] = [line for line in view.splitlines() if line.startswith("estimate")]
    assert f"tok/s ({plan_speed(measured)})" in estimate_row

    done = queued.model_copy(
        update={"status": "succeeded", "started_at": NOW - timedelta(seconds=40), "finished_at": NOW}
    )
    end = _text(summary(done, []))
    assert f"(estimated {figure})" in end and set(TIME.findall(end)) == {"40s", figure}
