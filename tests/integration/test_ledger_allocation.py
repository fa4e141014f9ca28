"""Allocation over random attempt histories, against real Postgres: whatever the dimension, the
window or the step, spend adds up to the ledger's total; windows cut attempts without gaps or
overlaps; a job's tokens are what it trained; nothing is negative; and spend stops where the
heartbeats stopped, however late "now" is."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from attempt_histories import History, histories
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from trainyard.platform import auth, costs
from trainyard.platform.auth import Principal
from trainyard.platform.costs import ledger
from trainyard.platform.costs.windows import ts
from trainyard.platform.models import Job

BASE = datetime(2026, 3, 1, tzinfo=UTC)
ALL = f"{ts(BASE - timedelta(days=1))},{ts(BASE + timedelta(days=30))}"
DIMENSIONS = (
    "team",
    "user",
    "instance_type",
    "accelerator",
    "model",
    "status",
    "spot",
    "job",
    "label:project",
)
MONEY = {"abs": 1e-5, "rel": 1e-9}
PARTS = ("productive_usd", "startup_usd", "recomputed_usd", "lost_usd")


@st.composite
def worlds(draw: st.DrawFn) -> list[tuple[int, str, History]]:
    """Up to four jobs of two teams, each with its own history, starting in the first days of
    March (the last ends by mid-March)."""
    jobs = []
    for _ in range(draw(st.integers(1, 4))):
        start = BASE + timedelta(hours=draw(st.floats(0, 72, allow_nan=False)))
        jobs.append((draw(st.integers(0, 1)), draw(st.sampled_from(["a", "b"])), draw(histories(start))))
    return jobs


def _seed(session: Session, world: list[tuple[int, str, History]]) -> tuple[Principal, list[str], list[str]]:
    session.execute(
        text(
            "TRUNCATE checkpoints, job_events, job_attempts, jobs, api_keys, teams, cost_rollup,"
            " cost_rollup_keys CASCADE"
        )
    )
    teams = [auth.create_team(session, name) for name in ("research", "vision")]
    keys = [auth.create_key(session, team) for team in teams]
    admin = auth.create_key(session, teams[0], role="admin")
    job_ids = []
    for team, project, history in world:
        key = auth.authenticate(session, f"Bearer {keys[team]}")
        job = Job(
            team_id=teams[team].id,
            api_key_id=key.key_id,
            name=f"job-{len(job_ids)}",
            status=history.status,
            spec={"name": "j", "base_model": f"s3://models/{project}"},
            job_metadata={"project": project},
            plan=history.plan,
            instance_type=history.plan["instance_type"],
            pool=history.plan["instance_type"],
            cost_usd=sum(a.cost_usd for a in history.attempts),
        )
        session.add(job)
        session.flush()
        for attempt in history.attempts:
            attempt.job_id = job.id
            session.add(attempt)
        job_ids.append(job.id)
    session.commit()
    return auth.authenticate(session, f"Bearer {admin}"), job_ids, [t.id for t in teams]


def _totals(world: list[tuple[int, str, History]]) -> dict[str, float]:
    attempts = [a for _, _, h in world for a in h.attempts]
    parts = {name: sum(ledger.goodput_parts(a)[name] for a in attempts) for name in ledger.GOODPUT_PARTS}
    parts.pop("checkpoint_usd")  # not measured yet, so not a measure of /v1/costs
    return {
        **parts,
        "cost_usd": sum(a.cost_usd for a in attempts),
        "billable_hours": sum(a.billable_seconds for a in attempts) / 3600,
        "gpu_hours": sum(ledger.gpu_hours(a) for a in attempts),
        "waste_usd": sum(ledger.waste_usd(a) for a in attempts),
        "spot_savings_usd": sum(ledger.spot_savings_usd(a) for a in attempts),
        "tokens_trained": sum(h.furthest_tokens for _, _, h in world),
    }


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    world=worlds(),
    dims=st.lists(st.sampled_from(DIMENSIONS), min_size=1, max_size=2, unique=True),
    cut=st.floats(0, 1, allow_nan=False),
    step=st.sampled_from(["1h", "6h", "1d", "7d"]),
    late=st.floats(0, 48, allow_nan=False),
)
def test_allocations_add_up_to_the_ledger(
    sessions: sessionmaker[Session],
    world: list[tuple[int, str, History]],
    dims: list[str],
    cut: float,
    step: str,
    late: float,
) -> None:
    with sessions() as s:
        admin, job_ids, team_ids = _seed(s, world)
    # However long after the last heartbeat we look, nothing more has been spent.
    last = max(h.end for _, _, h in world if h.end is not None)
    now = last + timedelta(hours=late)
    expected = _totals(world)

    def query(**kw: Any) -> dict[str, Any]:
        with sessions() as s:
            return costs.query_costs(s, admin, limit=10_000, now=now, **{"window": ALL, **kw})

    whole = query(aggregate=dims)
    for name, value in expected.items():
        assert whole["totals"][name] == pytest.approx(value, **MONEY), name
    # Every job started in the window, and is counted once in the totals, whatever the rows.
    assert whole["totals"]["jobs"] == len(world)
    assert sum(r["jobs"] for r in whole["data"]) >= len(world)
    for name in ("cost_usd", "waste_usd", "spot_savings_usd", "gpu_hours", "productive_usd", "lost_usd"):
        assert sum(r[name] for r in whole["data"]) == pytest.approx(whole["totals"][name], **MONEY), name
        assert all(r[name] >= -1e-9 for r in whole["data"]), name
    assert sum(r["tokens_trained"] for r in whole["data"]) == pytest.approx(
        expected["tokens_trained"], abs=2 * len(whole["data"])
    )

    # A window cut anywhere: the two halves hold the whole, no more, no less.
    lo, hi = BASE - timedelta(days=1), BASE + timedelta(days=30)
    middle = lo + (hi - lo) * cut
    if lo < middle < hi:
        left = query(window=f"{ts(lo)},{ts(middle)}", aggregate=dims)["totals"]
        right = query(window=f"{ts(middle)},{ts(hi)}", aggregate=dims)["totals"]
        for name in ("cost_usd", "billable_hours", "waste_usd", "spot_savings_usd", *PARTS):
            assert left[name] + right[name] == pytest.approx(whole["totals"][name], **MONEY), name

    # Step buckets partition the window.
    if "job" not in dims:
        series = query(aggregate=dims, step=step)["series"]
        total = sum(b["totals"]["cost_usd"] for b in series)
        assert total == pytest.approx(expected["cost_usd"], abs=1e-5 * max(1, len(series)))

    # Each job's tokens are the furthest its attempts got, however often it resumed.
    by_job = {r["key"]["job"]: r for r in query(aggregate="job")["data"]}
    for job_id, (_, _, history) in zip(job_ids, world, strict=True):
        got = by_job.get(job_id, {}).get("tokens_trained", 0)
        assert got == pytest.approx(history.furthest_tokens, abs=1)
        with sessions() as s:
            report = costs.cost_report(s, job_id)
        assert report["totals"]["tokens_trained"] == history.furthest_tokens
        assert report["totals"]["cost_usd"] == pytest.approx(
            sum(a.cost_usd for a in history.attempts), abs=1e-5
        )
        assert 0 <= report["totals"]["wasted_usd"] <= report["totals"]["cost_usd"] + 1e-6

    # This month's budget spend is the ledger's, and a day later it still is.
    for team_id, team in zip(team_ids, (0, 1), strict=True):
        spent = sum(a.cost_usd for t, _, h in world if t == team for a in h.attempts)
        with sessions() as s:
            for when in (now, now + timedelta(days=1)):
                status = costs.budget_status(s, team_id, when)
                assert status["spent_this_month"] == pytest.approx(spent, abs=1e-5)
