"""`trainyard demo`: the whole platform end to end on this machine, in a few minutes.

Starts the embedded stack, makes a tiny model and dataset (nothing is downloaded), shows the
estimate across the catalog, submits the job, follows it, prints where its checkpoints, final
model and cost report are, and stops the stack.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from trainyard.durations import format_duration
from trainyard.money import format_usd

# soft_wrap: URIs must stay whole on one line so they can be copied.
console = Console(soft_wrap=True)


def demo_spec(model_dir: Path, train_uri: str) -> dict[str, Any]:
    return {
        "name": "demo-tiny-gpt2",
        "base_model": str(model_dir),
        "task": "causal_lm",
        "method": "full",
        "training_file": train_uri,
        "hyperparameters": {"max_steps": 40, "batch_size": 8, "seq_len": 64, "learning_rate": 1e-3},
        "checkpoint": {"every_steps": 10, "keep": 2},
        "policy": {"objective": "cheapest", "spot": "auto"},
        "metadata": {"source": "demo"},
    }


def estimate_table(estimate: dict[str, Any], limit: int = 12) -> Table:
    table = Table(title="Where this job could run (whole-run estimates)")
    for col in ("instance type", "accel", "spot", "fits", "time", "cost", "$/M tokens", "here"):
        table.add_column(col, justify="right" if col in ("time", "cost", "$/M tokens") else "left")
    chosen = (estimate.get("chosen") or {}).get("instance_type")
    options = sorted(estimate["options"], key=lambda o: (not o["fits"], o["estimated_cost_usd"]))
    for o in options[:limit]:
        mark = (
            "[bold green]chosen[/]"
            if o["instance_type"] == chosen and o["available"]
            else ("yes" if o["available"] else "")
        )
        table.add_row(
            o["instance_type"],
            f"{o['count']}x {o['accelerator']}" if o["accelerator"] else "cpu",
            "spot" if o["spot"] else "",
            "yes" if o["fits"] else "no",
            format_duration(o["estimated_seconds"]),
            format_usd(o["estimated_cost_usd"]),
            format_usd(o["usd_per_million_tokens"]) if o["usd_per_million_tokens"] else "-",
            mark,
        )
    return table


def follow(client: Any, job_id: str, timeout: float = 900.0) -> Any:
    """Follow a job with a progress bar: step, loss, tokens/s, dollars so far."""
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("step {task.completed:.0f}/{task.total:.0f}"),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        bar = progress.add_task("queued", total=1, info="")
        deadline = time.monotonic() + timeout
        while True:
            job = client.jobs.get(job_id)
            p = job.progress
            total = p.total_steps or 1
            loss = f"loss {p.loss:.4g}" if p.loss is not None else ""
            tps = f"{p.tokens_per_second:,.0f} tok/s" if p.tokens_per_second else ""
            info = "  ".join(x for x in (loss, tps, format_usd(job.cost.usd)) if x)
            progress.update(bar, description=job.status, completed=p.step or 0, total=total, info=info)
            if job.is_terminal:
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} did not finish within {timeout:.0f}s")
            time.sleep(1.0)


def run_demo(data_dir: Path, port: int = 8000) -> int:
    from trainyard.cli.local import LocalStack, free_port
    from trainyard.cli.tiny_model import make_dataset, make_tiny_model_dir
    from trainyard.cli.up import configure_logging
    from trainyard.platform import storage
    from trainyard.sdk import Trainyard

    configure_logging(verbose=False)  # the demo's own lines, not Ray's start-up
    stack = LocalStack(data_dir=data_dir, port=free_port(port))
    console.print(f"[bold]Starting the embedded stack[/] (data in {data_dir})")
    t0 = time.monotonic()
    stack.start()
    try:
        console.print(
            f"API at {stack.base_url}, Postgres, object store and Ray up in {time.monotonic() - t0:.0f}s"
        )
        work = stack.data_dir / "demo"
        model_dir = make_tiny_model_dir(work / "tiny-gpt2")
        dataset = make_dataset(work / "train.jsonl", 400)
        store = storage.open_store(stack.settings.storage_uri)
        train_uri = store.put_file(storage.dataset_key("demo", "train.jsonl"), dataset)
        spec = demo_spec(model_dir, train_uri)

        client = Trainyard(stack.base_url, stack.api_key)
        estimate = client.estimates.create(spec).model_dump()
        console.print(estimate_table(estimate))
        if estimate.get("chosen"):
            console.print(f"[green]Plan:[/] {estimate['chosen']['reason']}")

        job = client.jobs.create(**spec)
        console.print(f"Submitted [bold]{job.id}[/]")
        job = follow(client, job.id)
        console.print(f"Job {job.id} [bold]{job.status}[/] after {job.attempts} attempt(s)")
        if job.status != "succeeded":
            console.print(f"[red]error:[/] {job.error}")
            return 1
        checkpoints = list(client.jobs.checkpoints(job.id))
        result = job.result
        console.print(f"Checkpoints ({len(checkpoints)}):")
        for c in checkpoints:
            console.print(f"  step {c.step}: {c.uri}")
        console.print(f"Final model:  {result.final_model_uri if result else None}")
        console.print(f"Cost report:  {result.cost_report_uri if result else None}")
        console.print(
            f"Cost: {format_usd(job.cost.usd)} for {job.cost.billable_seconds:.0f} billable seconds "
            f"(estimated {format_usd(job.cost.estimated_usd or 0)})"
        )
        console.print(
            "See it on the dashboard: run [bold]trainyard up[/] and open "
            f"{stack.base_url}/dashboard (the key is in {stack.credentials_file})"
        )
        return 0
    finally:
        console.print("Stopping the stack")
        stack.stop()
