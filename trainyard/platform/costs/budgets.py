"""Team budgets: this month's spend and commitments against each team's monthly budget, and the
check that gates new work on it."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from trainyard.money import format_usd
from trainyard.platform import events, states
from trainyard.platform.auth import Principal, get_team_by_name, require_admin
from trainyard.platform.costs import queries, rollup
from trainyard.platform.costs.figures import rounded
from trainyard.platform.costs.windows import db_now, month_start, next_month_start, ts
from trainyard.platform.errors import Conflict, InvalidRequest, NotFound
from trainyard.platform.models import Job, Team
from trainyard.platform.states import sql_list

_ONE_TEAM = "j.team_id = :team_id"


class BudgetExhausted(Conflict):
    """A new job's estimate does not fit in what is left of its team's monthly budget."""

    code = "budget_exhausted"


def _committed_sql(conditions: list[str]) -> str:
    """What queued and running jobs are still expected to spend: their estimate less what they
    have spent so far. Counted against the budget so that many jobs queued at once cannot each
    fit in the same remaining dollars."""
    estimate = queries.plan_number("estimated_cost_usd")
    return f"""
    SELECT j.team_id, sum(greatest({estimate} - j.cost_usd, 0)) AS usd
    FROM jobs j
    WHERE j.status IN ({sql_list(states.PENDING)}){queries.and_conditions(conditions)}
    GROUP BY j.team_id
    """


def _month_spend(
    session: Session, now: datetime, team_id: str | None = None
) -> tuple[dict[str, float], dict[str, float]]:
    """Each team's spend this month (from the rollup) and what its pending jobs still expect."""
    conditions = [_ONE_TEAM] if team_id else []
    spent = rollup.spend(session, month_start(now), now, team_id)
    committed = session.execute(text(_committed_sql(conditions)), {"team_id": team_id}).all()
    return spent, {t: float(v or 0.0) for t, v in committed}


def _status(team: Team, spent: float, committed: float, now: datetime) -> dict[str, Any]:
    start, end = month_start(now), next_month_start(now)
    elapsed = (now - start).total_seconds()
    budget = team.monthly_budget_usd
    # A straight-line projection; before an hour has passed it says nothing useful.
    projected = spent * (end - start).total_seconds() / elapsed if elapsed >= 3600 else None
    return {
        "object": "team_budget",
        "team": team.name,
        "team_id": team.id,
        "budget": budget,
        "monthly_budget_usd": budget,
        "spent_this_month": rounded(spent),
        "committed_usd": rounded(committed),
        "remaining": None if budget is None else rounded(budget - spent),
        "available": None if budget is None else rounded(budget - spent - committed),
        "used_fraction": round(spent / budget, 6) if budget else None,
        "warn_fraction": team.budget_warn_fraction,
        # Spent past the warning threshold, and all of it: new jobs are refused then.
        "warning": budget is not None and spent >= team.budget_warn_fraction * budget,
        "exhausted": budget is not None and spent >= budget,
        "projected_month_usd": rounded(projected) if projected is not None else None,
        "month_start": ts(start),
        "month_end": ts(end),
    }


def budget_status(session: Session, team_id: str, now: datetime | None = None) -> dict[str, Any]:
    """`budget` (None when unset), `spent_this_month` (UTC calendar month, pro-rated), `remaining`
    (budget less spent; negative once overspent), plus what queued and running jobs still expect
    to spend (`committed_usd`) and what is `available` after them."""
    team = session.get(Team, team_id)
    if team is None:
        raise NotFound(f"no team {team_id!r}", param="team")
    now = now or db_now(session)
    spent, committed = _month_spend(session, now, team_id)
    return _status(team, spent.get(team_id, 0.0), committed.get(team_id, 0.0), now)


def list_budgets(session: Session, principal: Principal, now: datetime | None = None) -> list[dict[str, Any]]:
    """Budget status for every team the caller may see (admins: all; members: their own)."""
    now = now or db_now(session)
    query = select(Team).order_by(Team.name)
    if not principal.is_admin:
        query = query.where(Team.id == principal.team_id)
    teams = list(session.scalars(query))
    only = None if principal.is_admin else principal.team_id
    spent, committed = _month_spend(session, now, only)
    return [_status(t, spent.get(t.id, 0.0), committed.get(t.id, 0.0), now) for t in teams]


def set_team_budget(
    session: Session,
    principal: Principal,
    team_name: str,
    monthly_budget_usd: float | None,
    warn_fraction: float | None = None,
) -> dict[str, Any]:
    """Set (or clear, with None) a team's monthly budget, and (when given) the share of a cap at
    which its running jobs are warned; admin keys only."""
    require_admin(principal)
    if warn_fraction is not None and (not math.isfinite(warn_fraction) or not 0 < warn_fraction <= 1):
        raise InvalidRequest("warn_fraction must be more than 0 and at most 1", param="warn_fraction")
    if monthly_budget_usd is not None and (
        not math.isfinite(monthly_budget_usd) or not 0 <= monthly_budget_usd <= 1e12
    ):
        raise InvalidRequest(
            "monthly_budget_usd must be a number from 0 to 1e12, or null to clear it",
            param="monthly_budget_usd",
        )
    team = get_team_by_name(session, team_name)
    team.monthly_budget_usd = monthly_budget_usd
    if warn_fraction is not None:
        team.budget_warn_fraction = warn_fraction
    session.flush()
    return budget_status(session, team.id)


def check_budget(
    session: Session, team_id: str, estimated_cost_usd: float | None, *, now: datetime | None = None
) -> dict[str, Any] | None:
    """Refuse a new job whose estimate does not fit in what its team has left this month.

    Call it in the transaction that creates the job: a team with a budget has its row locked
    until commit, so two jobs created at once cannot both take the last dollars. Running jobs are
    never stopped for the team budget; this only gates new work. Returns the budget status (None
    when the team has no budget); a job without an estimate is refused only once the budget is
    used up.

    A team without a budget is read, not locked: there are no dollars to race for, and its
    creates must not queue behind one another on its row. A budget set meanwhile applies from
    the next create, as if it had been set just after this one.
    """
    unlocked = session.get(Team, team_id)
    if unlocked is None:
        raise NotFound(f"no team {team_id!r}", param="team")
    if unlocked.monthly_budget_usd is None:
        return None
    team = session.execute(
        select(Team)
        .where(Team.id == team_id)
        .with_for_update(key_share=True)
        .execution_options(populate_existing=True)  # the row as it is once locked
    ).scalar_one_or_none()
    if team is None:
        raise NotFound(f"no team {team_id!r}", param="team")
    if team.monthly_budget_usd is None:
        return None
    status = budget_status(session, team_id, now)
    budget = float(team.monthly_budget_usd)
    spent, committed = status["spent_this_month"], status["committed_usd"]
    estimate = float(estimated_cost_usd) if estimated_cost_usd is not None else 0.0
    over = spent + committed + estimate > budget if estimated_cost_usd is not None else spent >= budget
    if over:
        left = max(0.0, budget - spent - committed)
        usd = format_usd
        what = (
            f"this job's estimate is {usd(estimate)}" if estimated_cost_usd is not None else "it is used up"
        )
        raise BudgetExhausted(
            f"team {team.name!r} has {usd(left)} left of its {usd(budget)} monthly budget "
            f"(spent {usd(spent)} this month, {usd(committed)} expected by queued and running jobs); "
            f"{what}. An admin can raise it with PUT /v1/teams/{team.name}/budget.",
            param="estimated_cost_usd",
        )
    return status


def warn(session: Session, job: Job, now: datetime) -> None:
    """Warn the running job, once each, when its spend passes its team's warning share of its
    own cap (`policy.max_cost_usd`) and of its team's monthly budget (this month). The caller
    holds the job's row; the team's spend is read from the rollup, a few rows."""
    team = session.get(Team, job.team_id)
    if team is None:
        return
    given = dict(job.budget_warnings or {})
    share = team.budget_warn_fraction
    cap = (job.spec.get("policy") or {}).get("max_cost_usd")
    if "job" not in given and isinstance(cap, int | float) and cap > 0 and job.cost_usd >= share * cap:
        given["job"] = ts(now)
        _warning(
            session,
            job,
            f"the job has spent {format_usd(job.cost_usd)}, {job.cost_usd / cap:.0%} of its "
            f"{format_usd(cap)} cap (max_cost_usd); it stops when its spend or pace passes the cap",
            {
                "budget_warning": "job",
                "spent_usd": rounded(job.cost_usd),
                "cap_usd": cap,
                "warn_fraction": share,
            },
        )
    month = f"team:{month_start(now).strftime('%Y-%m')}"
    budget = team.monthly_budget_usd
    if month not in given and budget is not None and budget > 0:
        spent = rollup.spend(session, month_start(now), now, team.id).get(team.id, 0.0)
        if spent >= share * budget:
            given[month] = ts(now)
            _warning(
                session,
                job,
                f"team {team.name!r} has spent {format_usd(spent)}, {spent / budget:.0%} of its "
                f"{format_usd(budget)} monthly budget; new jobs are refused once it is used up",
                {
                    "budget_warning": "team",
                    "team": team.name,
                    "spent_usd": rounded(spent),
                    "budget_usd": budget,
                    "warn_fraction": share,
                },
            )
    if given != (job.budget_warnings or {}):
        job.budget_warnings = given


def _warning(session: Session, job: Job, message: str, data: dict[str, Any]) -> None:
    events.add(
        session,
        job.id,
        events.MESSAGE,
        message,
        attempt_id=job.current_attempt_id,
        level="warning",
        data=data,
    )
