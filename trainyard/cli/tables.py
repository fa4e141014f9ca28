"""The list tables of the user commands, fitted to the terminal when they are printed.

`FitTable` keeps its essential columns (ids, names, instance types, the figure the table is
for) whole at any width from 80 columns up, and drops lesser columns, least useful first, until
the rest fits; `--json` always has every field. Nothing is cut with an ellipsis: a name longer
than its room wraps onto a second line instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rich.console import Console, ConsoleOptions, RenderResult
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from trainyard.cli.rendering import cell, duration, status, steps, usd, when, yes_no
from trainyard.sdk import CostReport, Estimate, FileObject, InstanceType, Job, TeamBudget

# A wrapping column (a name, notes) counts as this wide when the table is fitted: it takes what
# room is left and wraps within it, rather than pushing other columns out.
WRAP_ROOM = 16
GAP = 2  # rich puts one space either side of each column boundary


@dataclass(frozen=True)
class Column:
    header: str
    # Never dropped; shown whole (a wrapping one wraps, the others keep their full width).
    keep: bool = False
    # Of the droppable columns, the highest rank goes first.
    rank: int = 0
    wrap: bool = False
    right: bool = False


class FitTable:
    """A rich renderable: a borderless table whose columns are chosen at the width it is
    printed at."""

    def __init__(self, columns: Sequence[Column]) -> None:
        self.columns = list(columns)
        self.rows: list[list[str]] = []

    def add_row(self, *cells: str) -> None:
        if len(cells) != len(self.columns):
            raise ValueError(f"{len(cells)} cells for {len(self.columns)} columns")
        self.rows.append(list(cells))

    def _natural(self, index: int) -> int:
        texts = [self.columns[index].header, *(row[index] for row in self.rows)]
        return max(Text.from_markup(t).cell_len for t in texts)

    def shown(self, width: int) -> list[int]:
        """The indexes of the columns that fit in `width`, in order."""
        natural = [self._natural(i) for i in range(len(self.columns))]
        room = [min(n, WRAP_ROOM) if c.wrap else n for c, n in zip(self.columns, natural, strict=True)]
        keep = list(range(len(self.columns)))

        def total() -> int:
            return sum(room[i] for i in keep) + GAP * (len(keep) - 1)

        droppable = sorted(
            (i for i, c in enumerate(self.columns) if not c.keep),
            key=lambda i: (self.columns[i].rank, i),
        )
        while total() > width and droppable:
            keep.remove(droppable.pop())
        return keep

    def build(self, width: int) -> Table:
        indexes = self.shown(width)
        table = Table(box=None, pad_edge=False)
        for i in indexes:
            c = self.columns[i]
            table.add_column(
                c.header,
                justify="right" if c.right else "left",
                no_wrap=not c.wrap,
                # Kept whole: rich may narrow only the wrapping columns.
                min_width=None if c.wrap else self._natural(i),
                overflow="fold",
            )
        for row in self.rows:
            table.add_row(*(row[i] for i in indexes))
        return table

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.build(options.max_width)


# ------------------------------------------------------------------------------------------
# The tables


def jobs_table(jobs: list[Job]) -> FitTable:
    table = FitTable(
        [
            Column("ID", keep=True),
            Column("NAME", keep=True, wrap=True),
            Column("STATUS", keep=True),
            Column("INSTANCE", keep=True),
            Column("COST", rank=1, right=True),
            Column("STEPS", rank=2, right=True),
            Column("CREATED", rank=3),
        ]
    )
    for job in jobs:
        table.add_row(
            job.id,
            escape(job.name or ""),
            status(job.status),
            escape(job.instance_type or "-"),
            usd(job.cost.usd),
            steps(job),
            when(job.created_at),
        )
    return table


def estimate_table(est: Estimate) -> FitTable:
    table = FitTable(
        [
            Column("", keep=True),
            Column("OPTION", keep=True),
            Column("TIME", keep=True, right=True),
            Column("COST", keep=True, right=True),
            Column("FITS", rank=1),
            Column("AVAILABLE", rank=2),
            Column("NOTES", rank=3, wrap=True),
            Column("$/H", rank=4, right=True),
            Column("TOK/S", rank=5, right=True),
        ]
    )
    for opt in est.options:
        notes = []
        if opt.meets_deadline is False:
            notes.append("misses deadline")
        if opt.within_budget is False:
            notes.append("over budget")
        if opt.runnable is False:
            notes.append("not runnable here")
        if opt.strategy and opt.fits:
            plan = opt.strategy
            if opt.micro_batch_size and opt.gradient_accumulation_steps:
                plan += f", micro-batch {opt.micro_batch_size} x {opt.gradient_accumulation_steps}"
            if opt.gradient_checkpointing:
                plan += ", checkpointed"
            notes.append(plan)
        fits = opt.fits is not False
        table.add_row(
            "[green]*[/green]" if est.is_chosen(opt) else "",
            escape(opt.label),
            duration(opt.estimated_seconds) if fits else "-",
            usd(opt.estimated_cost_usd) if fits else "-",
            yes_no(opt.fits),
            yes_no(opt.available),
            escape(", ".join(notes)),
            usd(opt.usd_per_hour),
            f"{opt.tokens_per_second:,.0f}" if opt.tokens_per_second else "-",
        )
    return table


# (column, field, is money, rank): the figures worth a column; --json has them all.
COST_COLUMNS = (
    ("COST", "cost_usd", True, 0),
    ("JOBS", "jobs", False, 1),
    ("PREVIOUS", "previous_cost_usd", True, 3),
    ("WASTE", "waste_usd", True, 2),
    ("HOURS", "billable_hours", False, 4),
    ("GPU HOURS", "gpu_hours", False, 5),
    ("SPOT SAVINGS", "spot_savings_usd", True, 6),
)


def costs_table(report: CostReport) -> FitTable:
    dims = list(report.aggregate) or sorted({k for row in report.data for k in row.key})
    bucketed = bool(report.series)
    figures = [c for c in COST_COLUMNS if not (bucketed and c[1] == "previous_cost_usd")]
    columns = [Column("FROM", keep=True)] if bucketed else []
    columns += [Column(dim.upper(), keep=True) for dim in dims]
    columns += [Column(title, keep=rank == 0, rank=rank, right=True) for title, _, _, rank in figures]
    table = FitTable(columns)

    def add(row: Any, *lead: str) -> None:
        values = row.model_dump()
        cells = [cell(values.get(fld), money) for _, fld, money, _ in figures]
        table.add_row(*lead, *(escape(str(row.key.get(d, "-"))) for d in dims), *cells)

    if bucketed:
        for bucket in report.series or []:
            start = bucket.start
            label = start.strftime("%Y-%m-%d %H:%M") if isinstance(start, datetime) else str(start)
            for row in bucket.data:
                add(row, escape(label))
    else:
        for row in report.data:
            add(row)
    return table


def types_table(types: list[InstanceType]) -> FitTable:
    table = FitTable(
        [
            Column("NAME", keep=True),
            Column("KIND", rank=2),
            Column("ACCELERATORS", keep=True),
            Column("$/H", keep=True, right=True),
            Column("SPOT $/H", rank=1, right=True),
            Column("AVAILABLE", rank=3),
            Column("RUNNABLE", rank=3),
            Column("ACC MEM", rank=4, right=True),
            Column("RAM", rank=5, right=True),
            Column("VCPUS", rank=6, right=True),
        ]
    )
    for t in types:
        acc = f"{t.accelerator_count} x {t.accelerator}" if t.accelerator and t.accelerator_count else "-"
        table.add_row(
            escape(t.name),
            escape(t.kind or "-"),
            escape(acc),
            usd(t.on_demand_usd_per_hour),
            usd(t.spot_usd_per_hour),
            yes_no(t.available),
            yes_no(t.runnable),
            f"{t.accelerator_memory_gb:g} GB" if t.accelerator_memory_gb else "-",
            f"{t.ram_gb:g} GB" if t.ram_gb is not None else "-",
            str(t.vcpus) if t.vcpus is not None else "-",
        )
    return table


def files_table(files: list[FileObject]) -> FitTable:
    table = FitTable(
        [
            Column("ID", keep=True),
            Column("FILENAME", keep=True, wrap=True),
            Column("BYTES", rank=1, right=True),
            Column("LINES", rank=2, right=True),
            Column("STATUS", rank=3),
            Column("CREATED", rank=4),
            Column("PURPOSE", rank=5),
        ]
    )
    for f in files:
        table.add_row(
            escape(f.id),
            escape(f.filename or ""),
            f"{f.bytes:,}",
            f"{f.line_count:,}" if f.line_count is not None else "-",
            escape(f.status or "-"),
            when(f.created),
            escape(f.purpose or "-"),
        )
    return table


def budgets_table(budgets: list[TeamBudget]) -> FitTable:
    table = FitTable(
        [
            Column("TEAM", keep=True),
            Column("BUDGET", keep=True, right=True),
            Column("SPENT", keep=True, right=True),
            Column("AVAILABLE", rank=1, right=True),
            Column("COMMITTED", rank=2, right=True),
            Column("USED", rank=3, right=True),
            Column("PROJECTED", rank=4, right=True),
        ]
    )
    for b in budgets:
        table.add_row(
            escape(b.team),
            usd(b.monthly_budget_usd) if b.monthly_budget_usd is not None else "none",
            usd(b.spent_this_month),
            usd(b.available),
            usd(b.committed_usd),
            f"{b.used_fraction:.0%}" if b.used_fraction is not None else "-",
            usd(b.projected_month_usd),
        )
    return table
