"""How the CLI shows things, at the widths people use (80 and 120 columns): tables keep ids,
names and instance types whole and drop lesser columns first; losses read to 4 significant
figures; the live display fits and says `-` for what is not known yet."""

from __future__ import annotations

import io
import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from rich.console import Console

from trainyard.cli import rendering, tables
from trainyard.cli.watch import JobView, summary
from trainyard.sdk import Checkpoint, Estimate, InstanceType, Job, JobEvent

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LONG_TYPE = "gpu_1x_h100_sxm5"


def render(renderable: Any, width: int) -> list[str]:
    console = Console(width=width, file=io.StringIO(), color_system=None, soft_wrap=True, highlight=False)
    console.print(renderable)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    return [line.rstrip() for line in text.splitlines()]


def job(**fields: Any) -> Job:
    base: dict[str, Any] = {
        "id": "job_0123456789abcdef01234567",
        "status": "running",
        "name": "llama-lora-sweep",
        "instance_type": LONG_TYPE,
        "progress": {"step": 10, "total_steps": 20, "loss": 3.8515220642089845, "tokens_per_second": 1323.4},
        "cost": {"usd": 0.0012, "estimated_usd": 0.005},
        "plan": {"instance_type": LONG_TYPE, "estimated_seconds": 30.5, "estimated_cost_usd": 0.005},
        "created_at": NOW - timedelta(minutes=3),
        "started_at": NOW - timedelta(minutes=2),
    }
    base.update(fields)
    return Job.model_validate(base)


def test_losses_read_to_four_significant_figures() -> None:
    assert rendering.loss(3.8515220642089845) == "3.852"
    assert rendering.loss(0.000123456) == "0.0001235"
    assert rendering.loss(12.0) == "12"
    assert rendering.loss(None) == "-"
    metrics = JobEvent(id="evt_1", type="metrics", message="step 5/20 loss 3.8515220642089845", data={})
    metrics.data.update({"step": 5, "total_steps": 20, "loss": 3.8515220642089845, "tokens_per_second": 99.4})
    assert "step 5/20 loss 3.852 99 tok/s" in rendering.event_line(metrics)
    unknown = JobEvent(id="evt_2", type="metrics", message="step 1/None loss None", data={"step": 1})
    line = rendering.event_line(unknown)
    assert "step 1 loss -" in line and "None" not in line


@pytest.mark.parametrize("width", [80, 120])
def test_the_jobs_table_keeps_ids_names_and_types_whole(width: int) -> None:
    jobs = [
        job(),
        job(
            id="job_ffffffffffffffffffffffff",
            name="a-rather-long-job-name-for-the-quarterly-eval",
            status="queued",
        ),
        job(
            id="job_eeeeeeeeeeeeeeeeeeeeeeee", name="tiny", instance_type="p4de.24xlarge", status="cancelling"
        ),
    ]
    lines = render(tables.jobs_table(jobs), width)
    assert all(len(line) <= width for line in lines), lines
    text = "\n".join(lines)
    for j in jobs:
        assert j.id in text and j.instance_type in text
    assert "llama-lora-sweep" in text and "cancelling" in text
    # A name too long for its room wraps, whole, rather than losing its end to an ellipsis.
    assert "…" not in text and "quarterly-eval" in text.replace("\n", "").replace(" ", "")
    header = lines[0].split()
    assert header[:4] == ["ID", "NAME", "STATUS", "INSTANCE"]
    # Lesser columns go first: the creation time before the cost.
    if width == 80:
        assert "CREATED" not in header
    else:
        assert {"COST", "STEPS", "CREATED"} <= set(header)


def test_columns_are_dropped_least_useful_first() -> None:
    table = tables.jobs_table([job()])
    full = [c.header for c in table.columns]
    seen = [[full[i] for i in table.shown(w)] for w in range(40, 160, 2)]
    # Each narrower width shows a subset of a wider one, and the kept columns are always there.
    for narrower, wider in itertools.pairwise(seen):
        assert set(narrower) <= set(wider)
    assert all({"ID", "NAME", "STATUS", "INSTANCE"} <= set(s) for s in seen)
    assert seen[-1] == full


@pytest.mark.parametrize("width", [80, 120])
def test_estimate_and_instance_type_tables_fit(width: int) -> None:
    est = Estimate.model_validate(
        {
            "chosen": {"instance_type": "local-cpu", "spot": False},
            "options": [
                {
                    "instance_type": "local-cpu",
                    "fits": True,
                    "available": True,
                    "estimated_seconds": 15.2,
                    "estimated_cost_usd": 0.00083,
                    "usd_per_hour": 0.05,
                    "tokens_per_second": 398119.0,
                    "strategy": "ddp",
                },
                {
                    "instance_type": "p4de.24xlarge",
                    "spot": True,
                    "fits": True,
                    "available": False,
                    "estimated_seconds": 303.0,
                    "estimated_cost_usd": 0.57,
                    "usd_per_hour": 6.83,
                    "meets_deadline": False,
                    "strategy": "ddp",
                },
                {"instance_type": LONG_TYPE, "fits": False, "available": False, "usd_per_hour": 3.99},
            ],
        }
    )
    lines = render(tables.estimate_table(est), width)
    text = "\n".join(lines)
    assert all(len(line) <= width for line in lines), lines
    assert "p4de.24xlarge spot" in text and LONG_TYPE in text and "15s" in text and "5m03s" in text
    types = [
        InstanceType(
            name=LONG_TYPE,
            kind="gpu",
            accelerator="H100",
            accelerator_count=1,
            accelerator_memory_gb=80,
            vcpus=26,
            ram_gb=225,
            on_demand_usd_per_hour=3.99,
            available=False,
        ),
        InstanceType(
            name="p5e.48xlarge",
            kind="multi_gpu",
            accelerator="H200",
            accelerator_count=8,
            accelerator_memory_gb=141,
            vcpus=192,
            ram_gb=2048,
            on_demand_usd_per_hour=43.26,
            spot_usd_per_hour=20.1,
            available=True,
        ),
    ]
    lines = render(tables.types_table(types), width)
    assert all(len(line) <= width for line in lines), lines
    text = "\n".join(lines)
    assert LONG_TYPE in text and "p5e.48xlarge" in text and "8 x H200" in text and "$43.26" in text


@pytest.mark.parametrize("width", [80, 120])
def test_the_live_display_fits_and_says_dash_until_known(width: int) -> None:
    view = JobView(job())
    lines = render(view, width)
    assert len(lines) == 2 and all(len(line) <= width for line in lines), lines
    assert lines[0].startswith("running") and "10/20 steps" in lines[0]
    assert "loss 3.852" in lines[1] and "1,323 tok/s" in lines[1]
    assert lines[1].endswith("$0.0012 of $0.005 estimated"), "no share of the estimate before the end"

    fresh = JobView(job(status="queued", started_at=None, progress={"step": 0, "total_steps": 20}))
    lines = render(fresh, width)
    assert lines[0].startswith("queued") and "0/20 steps" in lines[0] and "waiting" in lines[0]
    assert "loss -" in lines[1] and "- tok/s" in lines[1] and "None" not in "".join(lines)


@pytest.mark.parametrize("width", [80, 120])
def test_before_the_first_step_the_display_says_the_phase_and_the_trial(width: int) -> None:
    # Where the steps will be, what the run is doing: not a blank, not "0/20 steps".
    starting = JobView(job(progress={"step": 0, "total_steps": 20, "phase": "loading_model"}))
    [head, _] = render(starting, width)
    assert head.startswith("running ") and "loading model" in head and "steps" not in head
    assert "loading_model" not in head and ": loading" not in head, "the phase is said once"
    # A sweep says which trial it has got to, before its first step and after.
    sweep = {"step": 0, "total_steps": 20, "phase": "starting_workers", "trial": 1, "trials": 4}
    [head, _] = render(JobView(job(progress=sweep)), width)
    assert "trial 1/4" in head and "starting workers" in head
    [head, _] = render(JobView(job(progress={**sweep, "step": 7, "phase": "training", "trial": 3})), width)
    assert head.startswith("running: training") and "trial 3/4" in head and "7/20 steps" in head
    # Once a step is done the phase goes with the state; a finished job's last phase is history.
    [head, _] = render(
        JobView(job(progress={"step": 10, "total_steps": 20, "phase": "checkpointing"})), width
    )
    assert head.startswith("running: checkpointing") and "10/20 steps" in head
    done = job(
        status="succeeded", finished_at=NOW, progress={"step": 20, "total_steps": 20, "phase": "saving"}
    )
    assert rendering.stage(done) == "[green]succeeded[/green]"


def test_the_summary_says_cost_model_and_checkpoints() -> None:
    done = job(
        status="succeeded",
        finished_at=NOW,
        result={
            "final_model_uri": "s3://b/jobs/job_0123456789abcdef01234567/attempts/001/final",
            "cost_report_uri": "s3://b/jobs/job_0123456789abcdef01234567/cost_report.json",
        },
    )
    ckpts = [
        Checkpoint(id="c2", step=20, uri="s3://b/ckpt/20"),
        Checkpoint(id="c1", step=10, uri="s3://b/ckpt/10"),
    ]
    text = "\n".join(render(summary(done, ckpts), 120))
    assert "succeeded in 2m00s (estimated 31s)" in text
    assert "$0.0012 of $0.005 estimated (76% under)" in text
    assert "attempts/001/final" in text and "cost_report.json" in text
    assert "2, last at step 20: s3://b/ckpt/20" in text
    failed = job(status="failed", finished_at=NOW, error={"code": "user_error", "message": "bad data"})
    text = "\n".join(render(summary(failed, []), 80))
    assert "user_error: bad data" in text and "checkpoints  none" in text and "model" not in text


def test_the_job_view_shows_one_time_figure() -> None:
    text = "\n".join(render(rendering.job_detail(job()), 120))
    # The plan's 30.5 s shows as 31s, the one format, and the loss to 4 significant figures.
    assert "estimate       31s, $0.005" in text and "loss           3.852" in text
    assert " min" not in text and "30.5" not in text
