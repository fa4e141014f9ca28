"""What things cost: `estimate` (a job across the catalog), `costs` (spend) and `instance-types`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from trainyard.cli import rendering as show
from trainyard.cli import tables
from trainyard.cli.client import JSON_OPT, api, echo_json, fail
from trainyard.cli.jobfile import FILE_ARG, load_job_file


def estimate(file: Path = FILE_ARG, as_json: bool = JSON_OPT) -> None:
    """Estimate a job's time and cost on every instance type.

    Shows the option the job's policy picks; exits 2 when no option is feasible for the spec."""
    spec = load_job_file(file)
    with api() as client:
        est = client.estimates.create(spec)
    if as_json:
        echo_json(est.to_dict())
    else:
        out = show.out()
        out.print(tables.estimate_table(est))
        sizes = []
        if est.model_parameters:
            sizes.append(f"{est.model_parameters / 1e6:,.1f}M parameters")
        if est.dataset_tokens:
            sizes.append(f"{est.dataset_tokens / 1e6:,.2f}M tokens")
        if sizes:
            out.print(", ".join(sizes))
        if est.chosen is not None:
            objective = f" ({est.objective})" if est.objective else ""
            out.print(f"chosen{objective}: {escape(est.reason or est.chosen.label)}")
    if est.chosen is None:
        detail = est.error.message if est.error and est.error.message else "no option fits this job"
        raise fail(detail)


def costs(
    window: str = typer.Option("7d", "--window", help="How far back: 24h, 7d, 30d, month, or start,end."),
    by: str = typer.Option(
        "team",
        "--by",
        metavar="DIMENSIONS",
        help="Group by team, user, instance_type, accelerator, model, spot, label:<key>; a,b for both.",
    ),
    step: str = typer.Option(None, "--step", help="Split the window into buckets, e.g. 1d."),
    team: str = typer.Option(None, "--team", help="Only this team's spend."),
    as_json: bool = JSON_OPT,
) -> None:
    """Spend by team (or another dimension) over a time window.

    Each group's figures are set against the window before it."""
    with api() as client:
        report = client.costs.query(window=window, by=by, step=step, team=team)
    if as_json:
        echo_json(report.to_dict())
        return
    out = show.out()
    if not report.data:
        show.err().print(f"no spend in the window ({window})")
        return
    out.print(tables.costs_table(report))
    total = f"total {show.usd(report.totals.cost_usd)}, {report.totals.jobs} job(s) started"
    change = (report.change or {}).get("cost_usd") or {}
    if change.get("percent") is not None:
        total += f", {change['percent']:+.1f}% on the window before"
    if report.truncated:
        total += " (rows truncated; narrow the query or raise its limit)"
    out.print(total)


def instance_types(
    available: bool = typer.Option(False, "--available", help="Only types this deployment can run."),
    as_json: bool = JSON_OPT,
) -> None:
    """The instance catalog, with hourly prices.

    Every type jobs are priced against, and whether this deployment can run it."""
    with api() as client:
        types = client.instance_types.list()
    if available:
        types = [t for t in types if t.available]
    if as_json:
        echo_json([t.to_dict() for t in types])
    else:
        show.out().print(tables.types_table(types))
