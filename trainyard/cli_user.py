"""User commands of the `trainyard` CLI: submit, jobs, estimate, costs, instance-types.

They talk to the API through the SDK only, never to the database, so they work against any
server the credentials point at. Exit codes: 0 success; 1 a job that was waited on failed or was
cancelled; 2 a usage error (a bad file, or the API refused the request with a 4xx); 3 the API
could not be reached or failed (5xx); 130 interrupted while watching.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from trainyard.sdk import (
    APIConnectionError,
    APIStatusError,
    AuthenticationError,
    CostReport,
    Estimate,
    InstanceType,
    Job,
    JobEvent,
    Trainyard,
    TrainyardError,
)

EXIT_JOB_FAILED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_INTERRUPTED = 130

# Replaced in tests (and by embedders) to point the commands at another client.
client_factory: Callable[[], Trainyard] = Trainyard

_STATUS_STYLE = {
    "queued": "cyan",
    "running": "blue",
    "cancelling": "yellow",
    "succeeded": "green",
    "failed": "red",
    "cancelled": "magenta",
}


def _console(stderr: bool = False) -> Console:
    # Built per call: the console binds the stream when it writes, so test runners that swap
    # streams see the output. Lines are never hard-wrapped (logs and grep want whole lines), and
    # piped output gets wide tables rather than the 80 columns rich assumes without a terminal,
    # so ids and prices are never cut short.
    console = Console(stderr=stderr, highlight=False, soft_wrap=True)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = 200
    return console


def _out() -> Console:
    return _console()


def _err() -> Console:
    return _console(stderr=True)


def _fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    _err().print(f"[red]error:[/red] {escape(message)}")
    return typer.Exit(code)


def _echo_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, default=str))


@contextlib.contextmanager
def _api() -> Iterator[Trainyard]:
    """A client for one command, with SDK errors turned into messages and exit codes."""
    try:
        client = client_factory()
    except TrainyardError as exc:  # e.g. an unreadable credentials file
        raise _fail(str(exc)) from None
    try:
        yield client
    except AuthenticationError as exc:
        raise _fail(f"{exc.message} (check TRAINYARD_API_KEY or the saved credentials)") from None
    except APIStatusError as exc:
        where = f" [{exc.param}]" if exc.param else ""
        code = EXIT_UNAVAILABLE if exc.status_code >= 500 else EXIT_USAGE
        raise _fail(f"{exc.message}{where} ({exc.status_code} {exc.code or 'error'})", code) from None
    except APIConnectionError as exc:
        raise _fail(f"{exc.message}; is the API running? (trainyard up)", EXIT_UNAVAILABLE) from None
    except TrainyardError as exc:
        raise _fail(str(exc), EXIT_UNAVAILABLE) from None
    finally:
        client.close()


def load_job_file(path: Path) -> dict[str, Any]:
    """Read a job spec from YAML or JSON (the API body's shape). Raises typer.Exit(2) with a
    message that names the file and the problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise _fail(f"{path}: no such file") from None
    except IsADirectoryError:
        raise _fail(f"{path} is a directory, not a job file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise _fail(f"cannot read {path}: {exc}") from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise _fail(
                f"{path} is not valid JSON: line {exc.lineno} column {exc.colno}: {exc.msg}"
            ) from None
    else:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or str(exc)
            raise _fail(f"{path} is not valid YAML{where}: {problem}") from None
    if not isinstance(data, dict):
        kind = "empty" if data is None else f"a {type(data).__name__}"
        raise _fail(f"{path} must hold a mapping of job fields (name, base_model, ...); it is {kind}")
    return absolutize_local_paths(data, path.parent)


LOCAL_PATH_FIELDS = ("base_model", "training_file", "validation_file")


def absolutize_local_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """Make relative paths to local files absolute. Workers run elsewhere (Ray moves each into
    a working directory of its own), so a relative path means nothing by the time it is read.
    A value is taken as a local path only if it exists, relative to the job file or to the
    current directory; hub ids like `gpt2` and URIs pass through untouched."""
    out = dict(data)
    for field in LOCAL_PATH_FIELDS:
        value = out.get(field)
        if not isinstance(value, str) or "://" in value or value.startswith(("/", "file-")):
            continue
        for root in (base, Path.cwd()):
            candidate = (root / value).resolve()
            if candidate.exists():
                out[field] = str(candidate)
                break
    return out


# ------------------------------------------------------------------------------------------
# Rendering


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _usd(value: float | None) -> str:
    if value is None:
        return "-"
    # Cents for real money; small figures (a CPU minute) keep enough digits to be seen.
    if value == 0 or abs(value) >= 0.01:
        return f"${value:,.2f}"
    return f"${value:.4f}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _status(status: str) -> str:
    style = _STATUS_STYLE.get(status)
    return f"[{style}]{status}[/{style}]" if style else escape(status)


def _steps(job: Job) -> str:
    total = job.progress.total_steps
    return f"{job.progress.step}/{total}" if total else str(job.progress.step or "-")


def _jobs_table(jobs: list[Job]) -> Table:
    table = Table(box=None, pad_edge=False)
    for name in ("ID", "NAME", "STATUS", "INSTANCE", "STEPS", "COST", "CREATED"):
        table.add_column(name, no_wrap=name in ("ID", "STATUS"))
    for job in jobs:
        table.add_row(
            job.id,
            escape(job.name or ""),
            _status(job.status),
            escape(job.instance_type or "-"),
            _steps(job),
            _usd(job.cost.usd),
            _when(job.created_at),
        )
    return table


def _job_detail(job: Job) -> Table:
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    p = job.progress
    rows: list[tuple[str, str]] = [
        ("id", job.id),
        ("name", escape(job.name or "")),
        ("status", _status(job.status) + (" (cancel requested)" if job.cancel_requested else "")),
        ("team", escape(job.team or "-")),
        ("base model", escape(job.base_model or "-")),
        ("task / method", f"{job.task or '-'} / {job.method or '-'}"),
        ("training file", escape(job.training_file or "-")),
        ("instance type", escape(job.instance_type or "-")),
        ("steps", _steps(job)),
        ("loss", f"{p.loss:.4f}" if p.loss is not None else "-"),
        ("tokens", f"{p.tokens:,}"),
        ("tokens/s", f"{p.tokens_per_second:,.0f}" if p.tokens_per_second else "-"),
        ("cost", f"{_usd(job.cost.usd)} (estimated {_usd(job.cost.estimated_usd)})"),
        ("attempts", str(job.attempts)),
        ("created", _when(job.created_at)),
        ("started", _when(job.started_at)),
        ("finished", _when(job.finished_at)),
    ]
    if job.plan is not None and job.plan.reason:
        rows.append(("plan", escape(job.plan.reason)))
    if job.metadata:
        rows.append(("metadata", escape(", ".join(f"{k}={v}" for k, v in job.metadata.items()))))
    if job.error:
        rows.append(
            ("error", f"[red]{escape(job.error.code or '')}[/red]: {escape(job.error.message or '')}")
        )
    if job.result:
        rows.append(("result", escape(json.dumps(job.result, default=str))))
    for key, value in rows:
        table.add_row(key, value)
    return table


def _event_line(event: JobEvent) -> str:
    level = event.level.lower()
    style = {"error": "red", "warning": "yellow"}.get(level)
    text = escape(event.message or json.dumps(event.data, default=str))
    kind = escape(f"[{event.type}]")
    return f"{_when(event.created_at)} {kind} " + (f"[{style}]{text}[/{style}]" if style else text)


# ------------------------------------------------------------------------------------------
# Watching a job: the progress bar shared by `submit --wait` and `jobs events --follow`


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.fields[status]}"),
        BarColumn(),
        TextColumn("{task.fields[steps]}"),
        TextColumn("loss {task.fields[loss]}"),
        TextColumn("{task.fields[tps]} tok/s"),
        TextColumn("{task.fields[usd]}"),
        TimeElapsedColumn(),
        console=_err(),
    )


def _bar_fields(job: Job) -> dict[str, Any]:
    p = job.progress
    return {
        "status": _status(job.status),
        "steps": _steps(job),
        "loss": f"{p.loss:.4f}" if p.loss is not None else "-",
        "tps": f"{p.tokens_per_second:,.0f}" if p.tokens_per_second else "-",
        "usd": _usd(job.cost.usd),
    }


def _update_bar(progress: Progress, task: TaskID, job: Job) -> None:
    total = job.progress.total_steps
    completed = job.progress.step if total else 0
    if job.status == "succeeded" and total:
        completed = total
    progress.update(task, total=total or None, completed=completed, **_bar_fields(job))


def _watch(client: Trainyard, job_id: str, *, interval: float, events: bool, json_lines: bool) -> Job:
    """Poll the job (and, with `events`, print its new events) until it finishes."""
    last_event: str | None = None
    out = _out()
    with _progress() as progress:
        task: TaskID | None = None
        while True:
            job = client.jobs.get(job_id)
            # Events after the job: the event that finishes a job is written with its status,
            # so a terminal job's events are complete by the time we read them.
            if events:
                for event in client.jobs.events(job_id, after=last_event, limit=100):
                    last_event = event.id
                    if json_lines:
                        typer.echo(json.dumps(event.to_dict()))
                    else:
                        out.print(_event_line(event))
            if task is None:
                task = progress.add_task("job", total=None, **_bar_fields(job))
            _update_bar(progress, task, job)
            if job.is_settled:
                return job
            time.sleep(interval)


def _finish_watch(job: Job) -> None:
    message = f"job {job.id} {_status(job.status)}"
    if job.error:
        message += f": {escape(job.error.message or job.error.code or '')}"
    _err().print(message)
    if job.status != "succeeded":
        raise typer.Exit(EXIT_JOB_FAILED)


def _watch_guarded(client: Trainyard, job_id: str, **kwargs: Any) -> Job:
    try:
        return _watch(client, job_id, **kwargs)
    except KeyboardInterrupt:
        _err().print(
            f"stopped watching; job {job_id} keeps running (trainyard jobs cancel {job_id} stops it)"
        )
        raise typer.Exit(EXIT_INTERRUPTED) from None


# ------------------------------------------------------------------------------------------
# Commands

_FileArg = typer.Argument(..., help="A job file, YAML or JSON, in the shape of the API body.")
_JsonOpt = typer.Option(False, "--json", help="Print JSON instead of a table.")
_IntervalOpt = typer.Option(2.0, "--interval", min=0.01, help="Seconds between polls while watching.")


def submit(
    file: Path = _FileArg,
    wait: bool = typer.Option(False, "--wait", help="Show progress until the job finishes."),
    idempotency_key: str = typer.Option(
        None, "--idempotency-key", help="Resubmitting with the same key returns the same job."
    ),
    as_json: bool = _JsonOpt,
    interval: float = _IntervalOpt,
) -> None:
    """Queue a job from a file. With --wait, exit 0 if it succeeds and 1 if it fails."""
    spec = load_job_file(file)
    with _api() as client:
        job = client.jobs.create(spec, idempotency_key=idempotency_key)
        if not wait:
            if as_json:
                _echo_json(job.to_dict())
            else:
                where = f" on {job.instance_type}" if job.instance_type else ""
                estimate = f", estimated {_usd(job.cost.estimated_usd)}" if job.cost.estimated_usd else ""
                _out().print(f"queued {job.id}{escape(where)}{estimate}")
            return
        _err().print(f"queued {job.id}; waiting for it to finish (Ctrl-C stops watching, not the job)")
        job = _watch_guarded(client, job.id, interval=interval, events=False, json_lines=False)
    if as_json:
        _echo_json(job.to_dict())
    _finish_watch(job)


def jobs_list(
    status: str = typer.Option(None, "--status", help="Only jobs in this state (queued, running, ...)."),
    metadata: list[str] = typer.Option(None, "--metadata", help="key=value; repeat to require several."),
    limit: int = typer.Option(20, "--limit", min=1, help="Show at most this many jobs (newest first)."),
    as_json: bool = _JsonOpt,
) -> None:
    """List jobs, newest first."""
    filters: dict[str, str] = {}
    for pair in metadata or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise _fail(f"--metadata wants key=value, got {pair!r}")
        filters[key] = value
    with _api() as client:
        pages = client.jobs.list(status=status, metadata=filters or None, limit=min(limit, 100))
        jobs = list(itertools.islice(pages, limit))
    if as_json:
        _echo_json([j.to_dict() for j in jobs])
    elif not jobs:
        _err().print("no jobs")
    else:
        _out().print(_jobs_table(jobs))


def jobs_get(job_id: str = typer.Argument(..., help="Job id."), as_json: bool = _JsonOpt) -> None:
    """Show one job: spec, status, progress, cost, error."""
    with _api() as client:
        job = client.jobs.get(job_id)
    if as_json:
        _echo_json(job.to_dict())
    else:
        _out().print(_job_detail(job))


def jobs_cancel(job_id: str = typer.Argument(..., help="Job id."), as_json: bool = _JsonOpt) -> None:
    """Cancel a job: a queued one at once, a running one as soon as its worker sees the request."""
    with _api() as client:
        job = client.jobs.cancel(job_id)
    if as_json:
        _echo_json(job.to_dict())
    elif job.status == "cancelling":
        _out().print(f"{job.id} cancelling: the worker stops it at its next heartbeat")
    else:
        _out().print(f"{job.id} {job.status}")


def jobs_events(
    job_id: str = typer.Argument(..., help="Job id."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new events until the job ends."),
    as_json: bool = typer.Option(
        False, "--json", help="Print JSON: an array, or one object per line with --follow."
    ),
    interval: float = _IntervalOpt,
) -> None:
    """Show a job's events, oldest first: status changes, metrics, checkpoints, costs, messages."""
    with _api() as client:
        if follow:
            job = _watch_guarded(client, job_id, interval=interval, events=True, json_lines=as_json)
        else:
            events = list(client.jobs.events(job_id, limit=100))
            if as_json:
                _echo_json([e.to_dict() for e in events])
            else:
                out = _out()
                for event in events:
                    out.print(_event_line(event))
            return
    _finish_watch(job)


def _estimate_table(est: Estimate) -> Table:
    table = Table(box=None, pad_edge=False)
    for name in ("", "OPTION", "FITS", "AVAILABLE", "TIME", "COST", "TOK/S", "$/H", "NOTES"):
        table.add_column(name, no_wrap=name != "NOTES")
    for opt in est.options:
        notes = []
        if opt.meets_deadline is False:
            notes.append("misses deadline")
        if opt.within_budget is False:
            notes.append("over budget")
        if opt.strategy and opt.fits:
            notes.append(opt.strategy)
        table.add_row(
            "[green]*[/green]" if est.is_chosen(opt) else "",
            escape(opt.label),
            _yes_no(opt.fits),
            _yes_no(opt.available),
            _duration(opt.estimated_seconds) if opt.fits is not False else "-",
            _usd(opt.estimated_cost_usd) if opt.fits is not False else "-",
            f"{opt.tokens_per_second:,.0f}" if opt.tokens_per_second else "-",
            _usd(opt.usd_per_hour),
            escape(", ".join(notes)),
        )
    return table


def _yes_no(value: bool | None) -> str:
    return {True: "yes", False: "[red]no[/red]", None: "-"}[value]


def estimate(file: Path = _FileArg, as_json: bool = _JsonOpt) -> None:
    """Estimate time and cost on every instance type and show the one the policy picks.
    Exits 2 when no option is feasible for the spec."""
    spec = load_job_file(file)
    with _api() as client:
        est = client.estimates.create(spec)
    if as_json:
        _echo_json(est.to_dict())
    else:
        out = _out()
        out.print(_estimate_table(est))
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
        raise _fail(detail)


def _cell(value: Any, money: bool = False) -> str:
    if value is None:
        return "-"
    if money:
        return _usd(float(value))
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) >= 0.01 or value == 0 else "<0.01"
    return escape(str(value))


# (column, field, is money): the figures worth a column; --json has them all.
_COST_COLUMNS = (
    ("COST", "cost_usd", True),
    ("PREVIOUS", "previous_cost_usd", True),
    ("JOBS", "jobs", False),
    ("HOURS", "billable_hours", False),
    ("GPU HOURS", "gpu_hours", False),
    ("WASTE", "waste_usd", True),
    ("SPOT SAVINGS", "spot_savings_usd", True),
)


def _costs_table(report: CostReport) -> Table:
    dims = list(report.aggregate) or sorted({k for row in report.data for k in row.key})
    bucketed = bool(report.series)
    table = Table(box=None, pad_edge=False)
    if bucketed:
        table.add_column("FROM", no_wrap=True)
    for dim in dims:
        table.add_column(dim.upper(), no_wrap=True)
    columns = [c for c in _COST_COLUMNS if not (bucketed and c[1] == "previous_cost_usd")]
    for title, _, _ in columns:
        table.add_column(title, justify="right", no_wrap=True)

    def add(row: Any, *lead: str) -> None:
        figures = row.model_dump()
        cells = [_cell(figures.get(fld), money) for _, fld, money in columns]
        table.add_row(*lead, *(escape(str(row.key.get(d, "-"))) for d in dims), *cells)

    if bucketed:
        for bucket in report.series or []:
            start = (
                bucket.start.strftime("%Y-%m-%d %H:%M")
                if isinstance(bucket.start, datetime)
                else bucket.start
            )
            for row in bucket.data:
                add(row, escape(str(start)))
    else:
        for row in report.data:
            add(row)
    return table


def costs(
    window: str = typer.Option("7d", "--window", help="How far back: 24h, 7d, 30d, month, or start,end."),
    by: str = typer.Option(
        "team",
        "--by",
        help="Group by team, user, instance_type, accelerator, model, spot, label:<key>; a,b for both.",
    ),
    step: str = typer.Option(None, "--step", help="Split the window into buckets, e.g. 1d."),
    team: str = typer.Option(None, "--team", help="Only this team's spend."),
    as_json: bool = _JsonOpt,
) -> None:
    """Spend over a time window, grouped, against the window before it."""
    with _api() as client:
        report = client.costs.query(window=window, aggregate=by, step=step, team=team)
    if as_json:
        _echo_json(report.to_dict())
        return
    out = _out()
    if not report.data:
        _err().print(f"no spend in the window ({window})")
        return
    out.print(_costs_table(report))
    total = f"total {_usd(report.totals.cost_usd)} over {report.totals.jobs} job(s)"
    change = (report.change or {}).get("cost_usd") or {}
    if change.get("percent") is not None:
        total += f", {change['percent']:+.1f}% on the window before"
    if report.truncated:
        total += " (rows truncated; narrow the query or raise its limit)"
    out.print(total)


def _types_table(types: list[InstanceType]) -> Table:
    table = Table(box=None, pad_edge=False)
    for name in ("NAME", "KIND", "ACCELERATORS", "ACC MEM", "VCPUS", "RAM", "$/H", "SPOT $/H", "AVAILABLE"):
        table.add_column(name, no_wrap=True)
    for t in types:
        acc = f"{t.accelerator_count} x {t.accelerator}" if t.accelerator and t.accelerator_count else "-"
        table.add_row(
            escape(t.name),
            escape(t.kind or "-"),
            escape(acc),
            f"{t.accelerator_memory_gb:g} GB" if t.accelerator_memory_gb else "-",
            str(t.vcpus) if t.vcpus is not None else "-",
            f"{t.ram_gb:g} GB" if t.ram_gb is not None else "-",
            _usd(t.on_demand_usd_per_hour),
            _usd(t.spot_usd_per_hour),
            _yes_no(t.available),
        )
    return table


def instance_types(
    available: bool = typer.Option(False, "--available", help="Only types this deployment can run."),
    as_json: bool = _JsonOpt,
) -> None:
    """The instance types this deployment prices jobs against, with their hourly prices."""
    with _api() as client:
        types = client.instance_types.list()
    if available:
        types = [t for t in types if t.available]
    if as_json:
        _echo_json([t.to_dict() for t in types])
    else:
        _out().print(_types_table(types))


def register(app: typer.Typer) -> None:
    """Add the user commands to `app` (the main `trainyard` app, or a test's own)."""
    app.command("submit")(submit)
    app.command("estimate")(estimate)
    app.command("costs")(costs)
    app.command("instance-types")(instance_types)
    # A fresh sub-app per call, so registering on several apps (tests do) shares no state.
    jobs_app = typer.Typer(no_args_is_help=True, help="List, inspect, cancel and follow jobs.")
    jobs_app.command("list")(jobs_list)
    jobs_app.command("get")(jobs_get)
    jobs_app.command("cancel")(jobs_cancel)
    jobs_app.command("events")(jobs_events)
    app.add_typer(jobs_app, name="jobs")
