"""What a job leaves behind: `jobs download JOB PATH` (its final model) and `jobs cost-report JOB`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from trainyard.cli import rendering as show
from trainyard.cli.client import JSON_OPT, api, echo_json
from trainyard.cli.tables import Column, FitTable
from trainyard.sdk import JobCostReport


def download(
    job_id: str = typer.Argument(..., help="Job id."),
    path: Path = typer.Argument(..., help="Directory to write the model into (created if needed)."),
) -> None:
    """Download a job's final model (a save_pretrained directory) through the API."""
    with api() as client:
        files = client.jobs.model_files(job_id)
        target = client.jobs.download(job_id, path)
    size = (
        f"{files.total_bytes / 1e6:,.1f} MB"
        if files.total_bytes >= 100_000
        else f"{files.total_bytes:,} bytes"
    )
    show.out().print(
        f"{len(files.data)} files ({size}) of {escape(files.uri or job_id)} in {escape(str(target))}"
    )


def cost_report(job_id: str = typer.Argument(..., help="Job id."), as_json: bool = JSON_OPT) -> None:
    """A job's cost report: what each attempt was billed on and cost, totals, goodput, and the
    estimate against the actual (the figures so far while the job runs)."""
    with api() as client:
        report = client.jobs.cost_report(job_id)
    if as_json:
        echo_json(report.to_dict())
        return
    out = show.out()
    out.print(report_view(report))
    if report.attempts:
        out.print(attempts_table(report))


def report_view(report: JobCostReport) -> Table:
    totals = report.totals
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    where = (
        f" on {escape(report.instance_type)}" + (" spot" if report.spot else "")
        if report.instance_type
        else ""
    )
    table.add_row("job", f"{escape(report.job_id)} {show.status(report.status or '-')}{where}")
    table.add_row(
        "cost",
        show.against_estimate(
            totals.cost_usd, report.estimate.estimated_cost_usd, final=report.uri is not None
        ),
    )
    billed = show.duration(totals.billable_seconds)
    if totals.gpu_hours:
        billed += f", {totals.gpu_hours:,.2f} GPU hours"
    table.add_row("billed", billed)
    if report.estimate.estimated_seconds is not None:
        table.add_row("estimated time", show.duration(report.estimate.estimated_seconds))
    tokens = f"{totals.tokens_trained:,}"
    if totals.usd_per_million_tokens is not None:
        tokens += f" ({show.usd(totals.usd_per_million_tokens)} per million)"
    table.add_row("tokens", tokens)
    waste = show.usd(totals.wasted_usd)
    if totals.steps_recomputed:
        waste += f" ({totals.steps_recomputed} steps redone, {show.usd(totals.recomputed_usd)})"
    table.add_row("waste", waste)
    table.add_row("goodput", show.goodput(report.goodput))
    if totals.spot_savings_usd:
        table.add_row("spot savings", show.usd(totals.spot_savings_usd))
    table.add_row(
        "report", escape(report.uri) if report.uri else "figures so far; published when the job ends"
    )
    return table


def attempts_table(report: JobCostReport) -> FitTable:
    table = FitTable(
        [
            Column("ATTEMPT", keep=True, right=True),
            Column("INSTANCE", keep=True),
            Column("OUTCOME", keep=True),
            Column("BILLED", keep=True, right=True),
            Column("COST", keep=True, right=True),
            Column("STEPS", rank=1, right=True),
            Column("WASTE", rank=2, right=True),
            Column("WORKER", rank=3),
        ]
    )
    for a in report.attempts:
        span = f"{a.start_step or 0}-{a.end_step}" if a.end_step is not None else "-"
        table.add_row(
            str(a.attempt),
            escape((a.instance_type or "-") + (" spot" if a.spot else "")),
            escape(a.outcome or "-"),
            show.duration(a.billable_seconds),
            show.usd(a.cost_usd),
            span,
            show.usd(a.wasted_usd),
            escape(a.worker or "-"),
        )
    return table
