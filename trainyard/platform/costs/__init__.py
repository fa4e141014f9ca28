"""Costs: metering, the cost report, allocation queries, CSV export and team budgets.

windows      time windows and steps, and the buckets a step cuts a window into
dimensions   what spend is grouped and filtered by, from a fixed table of SQL
queries      the allocation statement, built by functions; every value a bound parameter
figures      the figures each row of an answer carries
allocation   `query_costs`: the answer of /v1/costs
export       the same answer as CSV
budgets      monthly team budgets, the check that gates new work, warnings at a threshold
rollup       the rollup the database keeps per hour and day, and what reads it
segments     which parts of a window the rollup answers and which the attempts
ledger       what each attempt is billed on and did: the one source of every figure
metering     what a running attempt has cost, the job's totals, the budget projection
reports      the cost report written at the end of a run
"""

from __future__ import annotations

from trainyard.platform.costs import budgets, ledger, rollup
from trainyard.platform.costs.allocation import DEFAULT_LIMIT, MAX_LIMIT, query_costs
from trainyard.platform.costs.budgets import (
    BudgetExhausted,
    budget_status,
    check_budget,
    list_budgets,
    set_team_budget,
)
from trainyard.platform.costs.export import to_csv
from trainyard.platform.costs.figures import METRICS
from trainyard.platform.costs.metering import PaceRule, meter, projected_cost, total_job_cost
from trainyard.platform.costs.reports import cost_report, job_goodput
from trainyard.platform.costs.windows import month_start

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "METRICS",
    "BudgetExhausted",
    "PaceRule",
    "budget_status",
    "budgets",
    "check_budget",
    "cost_report",
    "job_goodput",
    "ledger",
    "list_budgets",
    "meter",
    "month_start",
    "projected_cost",
    "query_costs",
    "rollup",
    "set_team_budget",
    "to_csv",
    "total_job_cost",
]
