"""Cost allocation, budgets and spend metrics against real Postgres, checked against figures
worked out by hand from the fixture below."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker
from support import headers, make_key, principal_for

from trainyard.platform import costs
from trainyard.platform.costs import ledger
from trainyard.platform.errors import TrainyardError
from trainyard.platform.models import ApiKey, Job, JobAttempt, Team


def T(day: int, hour: int = 0, month: int = 3) -> datetime:
    return datetime(2026, month, day, hour, tzinfo=UTC)


# The window the hand-worked figures are for: two days, with the two before it as the previous.
WINDOW = "2026-03-10T00:00:00Z,2026-03-12T00:00:00Z"
NOW = T(12, 2)  # the running attempt's last heartbeat was an hour ago; 4 of its 5 h are in the window


def plan(instance: str, accel: str | None, n: int, spot: bool, rate: float, od: float, est: float) -> dict:
    return {
        "instance_type": instance,
        "accelerator": accel,
        "accelerator_count": n,
        "spot": spot,
        "usd_per_hour": rate,
        "on_demand_usd_per_hour": od,
        "estimated_cost_usd": est,
        "estimated_seconds": 3600,
    }


def add_job(
    s: Session,
    team: Team,
    key_id: str | None,
    status: str,
    the_plan: dict | None,
    metadata: dict | None = None,
    model: str = "s3://models/gpt2",
    cost: float = 0.0,
    name: str = "job",
    finished: datetime | None = None,
) -> Job:
    job = Job(
        team_id=team.id,
        api_key_id=key_id,
        name=name,
        status=status,
        spec={"name": name, "base_model": model},
        job_metadata=metadata or {},
        plan=the_plan,
        instance_type=(the_plan or {}).get("instance_type"),
        pool=(the_plan or {}).get("instance_type"),
        cost_usd=cost,
        finished_at=finished,
    )
    s.add(job)
    s.flush()
    return job


def add_attempt(
    s: Session,
    job: Job,
    number: int,
    start: datetime,
    end: datetime | None,
    rate: float,
    outcome: str | None,
    *,
    spot: bool = False,
    tokens: int = 0,
    cost: float | None = None,
    heartbeat: datetime | None = None,
) -> JobAttempt:
    """An attempt as the queue leaves it: billing terms from its job's plan at claim (spot and
    price as given), metered from its start to its end (or, running, to its last heartbeat)."""
    billed_to = end or heartbeat or start
    seconds = (billed_to - start).total_seconds()
    att = JobAttempt(
        job_id=job.id,
        number=number,
        worker_id="w1",
        started_at=start,
        heartbeat_at=billed_to,
        lease_expires_at=billed_to + timedelta(minutes=1),
        ended_at=end,
        outcome=outcome,
        billable_seconds=seconds,
        cost_usd=seconds / 3600 * rate if cost is None else cost,
    )
    ledger.record_terms(att, job.plan, job.instance_type, (0, 0))
    att.spot, att.usd_per_hour = spot, rate
    ledger.record_progress(att, tokens=tokens)
    s.add(att)
    return att


@dataclass
class Seeded:
    research: str
    vision: str
    admin: str
    ids: dict[str, str]


@pytest.fixture
def seeded(sessions: sessionmaker[Session]) -> Seeded:
    research = make_key(sessions, "research")
    vision = make_key(sessions, "vision")
    admin = make_key(sessions, "ops", role="admin")
    ids: dict[str, str] = {}
    with sessions.begin() as s:
        teams = {t.name: t for t in s.scalars(select(Team))}
        keys = {k.team.name: k.id for k in s.scalars(select(ApiKey))}
        r, v = teams["research"], teams["vision"]
        # J1: two spot attempts on one A10G; the first is preempted across the window's start.
        j1 = add_job(
            s, r, keys["research"], "succeeded", plan("g5.xlarge", "A10G", 1, True, 1.0, 3.0, 10.0),
            {"project": "alpha"}, cost=12.0, name="alpha-ft", finished=T(11, 5),
        )  # fmt: skip
        add_attempt(s, j1, 1, T(9, 22), T(10, 4), 1.0, "preempted", spot=True, tokens=6_000_000)
        add_attempt(s, j1, 2, T(10, 23), T(11, 5), 1.0, "succeeded", spot=True, tokens=6_000_000)
        # J2: one failed on-demand CPU attempt inside the second day.
        j2 = add_job(
            s, r, keys["research"], "failed", plan("c7i.2xlarge", None, 0, False, 0.5, 0.5, 1.0),
            {"project": "beta"}, model="s3://models/bert", cost=2.0, name="beta-ft",
        )  # fmt: skip
        add_attempt(s, j2, 1, T(11, 10), T(11, 14), 0.5, "failed", tokens=1_000_000)
        # J3: still running on four GPUs since 20:00 on the 11th; its last heartbeat, at 01:00 on
        # the 12th, metered 5 h at $6 ($30).
        j3 = add_job(
            s, v, keys["vision"], "running", plan("g5.12xlarge", "A10G", 4, False, 6.0, 6.0, 20.0),
            model="s3://models/vit", cost=30.0, name="vit-ft",
        )  # fmt: skip
        add_attempt(s, j3, 1, T(11, 20), None, 6.0, None, tokens=3_000_000, heartbeat=T(12, 1))
        # J4: long before both windows; J5: only in the previous window.
        j4 = add_job(
            s, v, keys["vision"], "succeeded", plan("g5.xlarge", "A10G", 1, False, 1.0, 1.0, 2.0),
            cost=2.0, finished=T(5, 12),
        )  # fmt: skip
        add_attempt(s, j4, 1, T(5, 10), T(5, 12), 1.0, "succeeded")
        j5 = add_job(
            s, r, keys["research"], "succeeded", plan("g5.xlarge", "A10G", 1, False, 3.0, 3.0, 6.0),
            cost=6.0, finished=T(8, 14),
        )  # fmt: skip
        add_attempt(s, j5, 1, T(8, 12), T(8, 14), 3.0, "succeeded")
        # A queued job that has not run: no spend, but its estimate is committed against a budget.
        add_job(s, r, keys["research"], "queued", plan("g5.xlarge", "A10G", 1, False, 1.0, 1.0, 3.0))
        s.flush()
        ids.update(j1=j1.id, j2=j2.id, j3=j3.id, research=r.id, vision=v.id)
    return Seeded(research, vision, admin, ids)


def q(sessions: sessionmaker[Session], key: str, **kw: Any) -> dict[str, Any]:
    with sessions() as s:
        return costs.query_costs(s, principal_for(sessions, key), now=kw.pop("now", NOW), **kw)


def rows_by(result: dict[str, Any], dim: str) -> dict[Any, dict[str, Any]]:
    return {r["key"][dim]: r for r in result["data"]}


# --- the figures -------------------------------------------------------------------------


def test_totals_split_attempts_at_window_edges(sessions: sessionmaker[Session], seeded: Seeded) -> None:
    res = q(sessions, seeded.admin, window=WINDOW, aggregate=["team"])
    t = res["totals"]
    # A1 4 of its 6 h inside ($4), A2 all ($6), A3 all ($2), A4 4 h at $6 ($24).
    assert t["cost_usd"] == pytest.approx(36.0)
    assert t["billable_hours"] == pytest.approx(18.0)
    assert t["gpu_hours"] == pytest.approx(4 * 1 + 6 * 1 + 0 + 4 * 4)
    # Jobs started in the window: J2 and J3 (J1 started the day before, and resumed in it).
    assert t["jobs"] == 2
    # A1 4M of 6M, A2 6M, A3 1M, A4 3M x 4/5.
    assert t["tokens_trained"] == 13_400_000
    assert t["usd_per_million_tokens"] == pytest.approx(36 / 13.4, abs=1e-6)
    # Spot at $1 against $3 on demand: A1 4 h and A2 6 h save $2 an hour.
    assert t["spot_savings_usd"] == pytest.approx(20.0)
    # The preempted A1's $4 in the window and the failed A3's $2.
    assert t["waste_usd"] == pytest.approx(6.0)
    # Only J1 finished in the window, with an estimate: $10 estimated, $12 spent in all (+20%).
    assert t["estimate_actual_usd"] == pytest.approx(12.0)
    assert t["estimated_usd"] == pytest.approx(10.0)
    assert t["estimate_error"] == pytest.approx(0.2)
    assert t["estimate_jobs"] == 1
    # Previous window: A1's first 2 h ($2) and J5 ($6); J1 and J5 started in it, J5 finished in it.
    assert res["previous"]["cost_usd"] == pytest.approx(8.0)
    assert res["previous"]["jobs"] == 2
    assert res["previous"]["estimate_jobs"] == 1
    assert res["previous"]["start"] == "2026-03-08T00:00:00Z"
    assert res["change"]["cost_usd"]["delta"] == pytest.approx(28.0)
    assert res["change"]["cost_usd"]["percent"] == pytest.approx(350.0)


def test_by_team_with_previous_window(sessions: sessionmaker[Session], seeded: Seeded) -> None:
    res = q(sessions, seeded.admin, window=WINDOW, aggregate="team")
    assert [r["key"]["team"] for r in res["data"]] == ["vision", "research"]  # by cost, descending
    research, vision = rows_by(res, "team")["research"], rows_by(res, "team")["vision"]
    assert research["cost_usd"] == pytest.approx(12.0)
    assert research["billable_hours"] == pytest.approx(14.0)
    assert research["gpu_hours"] == pytest.approx(10.0)
    assert research["jobs"] == 1  # J2; J1 started in the previous window
    assert vision["jobs"] == 1
    assert research["waste_usd"] == pytest.approx(6.0)
    assert research["spot_savings_usd"] == pytest.approx(20.0)
    assert research["previous_cost_usd"] == pytest.approx(8.0)
    assert vision["cost_usd"] == pytest.approx(24.0)
    assert vision["gpu_hours"] == pytest.approx(16.0)
    assert vision["estimate_error"] is None
    assert vision["previous_cost_usd"] == 0.0


@pytest.mark.parametrize(
    ("dim", "expected"),
    [
        ("instance_type", {"g5.xlarge": 10.0, "c7i.2xlarge": 2.0, "g5.12xlarge": 24.0}),
        ("accelerator", {"A10G": 34.0, "none": 2.0}),
        ("spot", {"spot": 10.0, "on_demand": 26.0}),
        ("status", {"succeeded": 10.0, "failed": 2.0, "running": 24.0}),
        ("model", {"s3://models/gpt2": 10.0, "s3://models/bert": 2.0, "s3://models/vit": 24.0}),
        ("label:project", {"alpha": 10.0, "beta": 2.0, None: 24.0}),
    ],
)
def test_each_dimension(
    sessions: sessionmaker[Session], seeded: Seeded, dim: str, expected: dict[Any, float]
) -> None:
    res = q(sessions, seeded.admin, window=WINDOW, aggregate=dim)
    assert {k: r["cost_usd"] for k, r in rows_by(res, dim).items()} == pytest.approx(expected)


def test_by_user_and_two_dimensions(sessions: sessionmaker[Session], seeded: Seeded) -> None:
    res = q(sessions, seeded.admin, window=WINDOW, aggregate="user")
    # Both keys are called "default"; the key prefix tells them apart.
    assert {k: r["cost_usd"] for k, r in rows_by(res, "user").items()} == pytest.approx(
        {f"default ({seeded.research[:10]})": 12.0, f"default ({seeded.vision[:10]})": 24.0}
    )
    two = q(sessions, seeded.admin, window=WINDOW, aggregate="team,spot")
    got = {(r["key"]["team"], r["key"]["spot"]): r["cost_usd"] for r in two["data"]}
    assert got == pytest.approx(
        {("research", "spot"): 10.0, ("research", "on_demand"): 2.0, ("vision", "on_demand"): 24.0}
    )


def test_daily_series_is_split_by_time(sessions: sessionmaker[Session], seeded: Seeded) -> None:
    res = q(sessions, seeded.admin, window=WINDOW, aggregate="team", step="1d")
    assert [(b["start"], b["end"]) for b in res["series"]] == [
        ("2026-03-10T00:00:00Z", "2026-03-11T00:00:00Z"),
        ("2026-03-11T00:00:00Z", "2026-03-12T00:00:00Z"),
    ]
    day1, day2 = res["series"]
    # Day 1: A1's 4 h ($4) and A2's first hour ($1). Day 2: A2's 5 h, A3 and A4's 4 h.
    assert day1["totals"]["cost_usd"] == pytest.approx(5.0)
    assert {r["key"]["team"]: r["cost_usd"] for r in day1["data"]} == pytest.approx({"research": 5.0})
    assert day2["totals"]["cost_usd"] == pytest.approx(31.0)
    assert {r["key"]["team"]: r["cost_usd"] for r in day2["data"]} == pytest.approx(
        {"research": 7.0, "vision": 24.0}
    )
    # Jobs are counted where they start: J2 and J3 on day 2; J1, resumed on day 1, started before.
    assert day2["totals"]["jobs"] == 2 and day1["totals"]["jobs"] == 0
    # The whole-window rows and totals are the same as without a step.
    assert res["totals"]["cost_usd"] == pytest.approx(36.0)
    assert res["totals"]["jobs"] == 2
    assert rows_by(res, "team")["research"]["cost_usd"] == pytest.approx(12.0)


def test_buckets_sit_on_utc_step_boundaries(sessions: sessionmaker[Session], seeded: Seeded) -> None:
    res = q(
        sessions,
        seeded.admin,
        window="2026-03-10T06:00:00Z,2026-03-11T06:00:00Z",
        aggregate="team",
        step="1d",
    )
    assert [(b["start"], b["end"]) for b in res["series"]] == [
        ("2026-03-10T06:00:00Z", "2026-03-11T00:00:00Z"),
        ("2026-03-11T00:00:00Z", "2026-03-11T06:00:00Z"),
    ]
    # Only A2 (23:00 -> 05:00) touches this window: 1 h before midnight, 5 after.
    assert [b["totals"]["cost_usd"] for b in res["series"]] == pytest.approx([1.0, 5.0])
    hourly = q(
        sessions,
        seeded.admin,
        window="2026-03-10T22:00:00Z,2026-03-11T01:00:00Z",
        aggregate="team",
        step="1h",
    )
    assert [b["totals"]["cost_usd"] for b in hourly["series"]] == pytest.approx([0.0, 1.0, 1.0])


def test_a_running_attempt_accrues_only_to_its_last_heartbeat(
    sessions: sessionmaker[Session], seeded: Seeded
) -> None:
    # A4's worker has not been heard from since 01:00 on the 12th: a day later it has cost what
    # its last heartbeat metered, 5 h at $6, and no more.
    for now in (T(12, 8), T(13, 1)):
        later = q(
            sessions,
            seeded.admin,
            window="2026-03-11T00:00:00Z,2026-03-14T00:00:00Z",
            aggregate="team",
            now=now,
        )
        assert rows_by(later, "team")["vision"]["cost_usd"] == pytest.approx(30.0)
        assert rows_by(later, "team")["vision"]["tokens_trained"] == 3_000_000


def test_relative_windows_end_now(sessions: sessionmaker[Session], seeded: Seeded) -> None:
    day = q(sessions, seeded.admin, window="24h", aggregate="team")
    assert day["window"] == {"start": "2026-03-11T02:00:00Z", "end": "2026-03-12T02:00:00Z", "step": None}
    # A2's last 3 h, A3, and A4's 5 h to its last heartbeat.
    assert day["totals"]["cost_usd"] == pytest.approx(3.0 + 2.0 + 30.0)
    month = q(sessions, seeded.admin, window="month", aggregate="team")
    assert month["window"]["start"] == "2026-03-01T00:00:00Z"


def test_a_job_on_two_dimension_values_counts_once_in_totals(
    sessions: sessionmaker[Session], seeded: Seeded
) -> None:
    with sessions.begin() as s:
        job = s.get(Job, seeded.ids["j2"])
        assert job is not None
        # J2 ran again, on spot this time, an hour after its failed on-demand attempt.
        add_attempt(s, job, 2, T(11, 15), T(11, 16), 0.5, "succeeded", spot=True)
    for step in (None, "1d"):
        res = q(sessions, seeded.admin, window=WINDOW, aggregate="spot", step=step)
        assert res["totals"]["jobs"] == 2  # J2, J3 (J1 started the day before)
        # J2 started on demand and on spot in the window: it counts in both rows.
        assert {k: r["jobs"] for k, r in rows_by(res, "spot").items()} == {"spot": 1, "on_demand": 2}


def test_job_dimension_and_filters_drill_down(sessions: sessionmaker[Session], seeded: Seeded) -> None:
    res = q(sessions, seeded.admin, window=WINDOW, aggregate="job", filters={"team": "research"}, limit=1)
    assert len(res["data"]) == 1 and res["truncated"] is True
    top = res["data"][0]
    assert top["key"]["job"] == seeded.ids["j1"] and top["job_name"] == "alpha-ft"
    assert top["cost_usd"] == pytest.approx(10.0)
    assert res["totals"]["cost_usd"] == pytest.approx(12.0)  # totals are not cut by the limit
    spot = q(sessions, seeded.admin, window=WINDOW, aggregate="team", filters={"spot": "spot"})
    assert spot["totals"]["cost_usd"] == pytest.approx(10.0)


def test_a_plan_field_that_is_not_a_number_does_not_break_the_query(
    sessions: sessionmaker[Session], seeded: Seeded
) -> None:
    with sessions.begin() as s:
        job = s.get(Job, seeded.ids["j3"])
        assert job is not None
        job.plan = {
            **(job.plan or {}),
            "accelerator_count": "four",
            "on_demand_usd_per_hour": {"x": 1},
            "estimated_cost_usd": "lots",
        }
        job.status = "succeeded"
    res = q(sessions, seeded.admin, window=WINDOW, aggregate="team")
    vision = rows_by(res, "team")["vision"]
    assert vision["cost_usd"] == pytest.approx(24.0)
    # GPU hours come from what the attempt recorded at claim, whatever its job's plan says now.
    assert vision["gpu_hours"] == pytest.approx(16.0)
    assert vision["estimate_error"] is None  # the estimate is unreadable, so none is claimed


def test_a_hand_back_is_not_waste(sessions: sessionmaker[Session], seeded: Seeded) -> None:
    with sessions.begin() as s:
        job = s.get(Job, seeded.ids["j2"])
        assert job is not None
        # J2 paused after a checkpoint ($1 at $0.5/h), then failed ($2): only the failure is waste.
        add_attempt(s, job, 2, T(11, 15), T(11, 17), 0.5, "handed_back")
    res = q(sessions, seeded.admin, window=WINDOW, aggregate="job", filters={"team": "research"})
    j2 = {r["key"]["job"]: r for r in res["data"]}[seeded.ids["j2"]]
    assert j2["cost_usd"] == pytest.approx(3.0) and j2["waste_usd"] == pytest.approx(2.0)
    with sessions() as s:
        report = costs.cost_report(s, seeded.ids["j2"])
    assert [a["outcome"] for a in report["attempts"]] == ["failed", "handed_back"]
    assert report["totals"]["wasted_usd"] == pytest.approx(2.0)


def test_filter_values_are_bound_not_spliced(sessions: sessionmaker[Session], seeded: Seeded) -> None:
    sneaky = "x' OR '1'='1"
    for name in ("team", "model", "label:project"):
        res = q(sessions, seeded.admin, window=WINDOW, aggregate="team", filters={name: sneaky})
        assert res["data"] == [] and res["totals"]["cost_usd"] == 0, name


# --- who sees what --------------------------------------------------------------------------


def test_member_sees_only_own_team_admin_sees_all(
    client: Any, sessions: sessionmaker[Session], seeded: Seeded
) -> None:
    params = {"window": WINDOW, "aggregate": "team"}
    mine = client.get("/v1/costs", params=params, headers=headers(seeded.research)).json()
    assert [r["key"]["team"] for r in mine["data"]] == ["research"]
    assert mine["totals"]["cost_usd"] == pytest.approx(12.0)
    theirs = client.get("/v1/costs", params=params, headers=headers(seeded.vision)).json()
    assert [r["key"]["team"] for r in theirs["data"]] == ["vision"]
    assert theirs["totals"]["cost_usd"] == pytest.approx(24.0)  # $6/h x 4 h whatever "now" is
    # Asking for another team's figures looks like asking for a team that does not exist.
    other = client.get("/v1/costs", params={**params, "team": "vision"}, headers=headers(seeded.research))
    assert other.status_code == 404 and other.json()["error"]["param"] == "team"
    # A filter on team cannot widen a member's view either.
    sneaky = client.get(
        "/v1/costs", params={**params, "filter[team]": "vision"}, headers=headers(seeded.research)
    ).json()
    assert sneaky["data"] == [] and sneaky["totals"]["cost_usd"] == 0
    everyone = client.get("/v1/costs", params=params, headers=headers(seeded.admin)).json()
    assert {r["key"]["team"] for r in everyone["data"]} == {"research", "vision"}
    only = client.get("/v1/costs", params={**params, "team": "vision"}, headers=headers(seeded.admin)).json()
    assert [r["key"]["team"] for r in only["data"]] == ["vision"]
    assert client.get("/v1/costs", params=params).status_code == 401


def test_queue_summary_by_pool_and_team(client: Any, seeded: Seeded) -> None:
    admin = client.get("/v1/queue", headers=headers(seeded.admin)).json()
    assert admin["waiting"] == 1 and admin["running"] == 1 and admin["gpus_in_use"] == 4
    pools = {p["pool"]: p for p in admin["pools"]}
    assert pools["g5.xlarge"]["waiting"] == 1 and pools["g5.12xlarge"]["running"] == 1
    assert pools["g5.xlarge"]["oldest_waiting_seconds"] >= 0
    mine = client.get("/v1/queue", headers=headers(seeded.vision)).json()
    assert mine["waiting"] == 0 and mine["running"] == 1


# --- CSV ------------------------------------------------------------------------------------


def _csv_rows(body: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(body)))


def _num(value: str) -> float | None:
    return None if value == "" else float(value)


@pytest.mark.parametrize("step", [None, "1d"])
def test_csv_matches_json(client: Any, seeded: Seeded, step: str | None) -> None:
    params = {"window": WINDOW, "aggregate": "team,label:project", **({"step": step} if step else {})}
    h = headers(seeded.admin)
    body = client.get("/v1/costs", params=params, headers=h).json()
    r1 = client.get("/v1/costs.csv", params=params, headers=h)
    r2 = client.get("/v1/costs", params={**params, "format": "csv"}, headers=h)
    assert r1.status_code == 200 and r1.headers["content-type"].startswith("text/csv")
    assert r1.text == r2.text
    rows = _csv_rows(r1.text)
    json_rows = (
        [(b["start"], b["end"], r) for b in body["series"] for r in b["data"]]
        if step
        else [(None, None, r) for r in body["data"]]
    )
    assert len(rows) == len(json_rows) > 0
    for got, (start, end, want) in zip(rows, json_rows, strict=True):
        if step:
            assert (got["bucket_start"], got["bucket_end"]) == (start, end)
        assert got["team"] == want["key"]["team"]
        assert got["label:project"] == (want["key"]["label:project"] or "")
        for metric in costs.METRICS:
            assert _num(got[metric]) == want[metric], metric
        if not step:
            assert _num(got["previous_cost_usd"]) == want["previous_cost_usd"]


# --- bad queries ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "status", "param"),
    [
        ({"window": "fortnight"}, 400, "window"),
        ({"window": "0d"}, 400, "window"),
        ({"window": "2026-03-10T00:00:00,2026-03-11T00:00:00"}, 400, "window"),  # no offset
        ({"window": "2026-03-11T00:00:00Z,2026-03-10T00:00:00Z"}, 400, "window"),  # end first
        ({"window": "2026-03-10T00:00:00Z,yesterday"}, 400, "window"),
        ({"window": "99999d"}, 400, "window"),
        ({"aggregate": "colour"}, 400, "aggregate"),
        ({"aggregate": "team,team"}, 400, "aggregate"),
        ({"aggregate": "label:"}, 400, "aggregate"),
        ({"aggregate": "label:a b"}, 400, "aggregate"),
        ({"step": "0h"}, 400, "step"),
        ({"step": "soon"}, 400, "step"),
        ({"window": "30d", "step": "1m"}, 400, "step"),  # 43,200 buckets
        ({"aggregate": "job", "step": "1d"}, 400, "step"),
        ({"filter[colour]": "red"}, 400, "filter[colour]"),
        ({"format": "xml"}, 400, "format"),
        ({"limit": "0"}, 422, "limit"),
        ({"limit": "many"}, 422, "limit"),
        ({"team": "nobody"}, 404, "team"),
    ],
)
def test_bad_query_params(
    client: Any, seeded: Seeded, params: dict[str, str], status: int, param: str
) -> None:
    r = client.get("/v1/costs", params=params, headers=headers(seeded.admin))
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"code", "message", "param"}
    assert err["param"] == param and err["message"]


# --- budgets ------------------------------------------------------------------------------


def test_check_budget_rejects_what_does_not_fit(sessions: sessionmaker[Session], seeded: Seeded) -> None:
    team_id = seeded.ids["research"]
    with sessions.begin() as s:
        s.get(Team, team_id).monthly_budget_usd = 25.0  # type: ignore[union-attr]
    with sessions() as s:
        status = costs.budget_status(s, team_id, NOW)
    # March to NOW: A1 $6, A2 $6, A3 $2, J5 $6; the queued job expects $3.
    assert status["budget"] == 25.0
    assert status["spent_this_month"] == pytest.approx(20.0)
    assert status["remaining"] == pytest.approx(5.0)
    assert status["committed_usd"] == pytest.approx(3.0)
    assert status["available"] == pytest.approx(2.0)
    with sessions.begin() as s:
        assert costs.check_budget(s, team_id, 2.0, now=NOW) is not None
        assert costs.check_budget(s, team_id, None, now=NOW) is not None
    with sessions.begin() as s, pytest.raises(TrainyardError) as exc:
        costs.check_budget(s, team_id, 2.5, now=NOW)
    assert exc.value.code == "budget_exhausted" and exc.value.status == 409
    assert "$2.00 left of its $25.00 monthly budget" in exc.value.message
    with sessions.begin() as s:
        s.get(Team, team_id).monthly_budget_usd = 20.0  # type: ignore[union-attr]
    with sessions.begin() as s, pytest.raises(TrainyardError) as exc:
        costs.check_budget(s, team_id, None, now=NOW)  # used up: even an unestimated job waits
    assert exc.value.code == "budget_exhausted"
    # A team without a budget is never refused; a later month starts afresh.
    with sessions.begin() as s:
        assert costs.check_budget(s, seeded.ids["vision"], 1e9, now=NOW) is None
        assert costs.check_budget(s, team_id, 16.0, now=T(2, 0, month=4)) is not None


def test_budget_exhausted_maps_to_the_error_body(client: Any, sessions: sessionmaker[Session]) -> None:
    from fastapi import APIRouter

    from trainyard.platform.errors import TrainyardError as _Err

    app = client.app
    probe = APIRouter()

    @probe.get("/_probe/budget")
    def _raise() -> None:
        raise costs.BudgetExhausted("no money left", param="estimated_cost_usd")

    app.include_router(probe)
    r = client.get("/_probe/budget")
    assert r.status_code == 409
    assert r.json() == {
        "error": {"code": "budget_exhausted", "message": "no money left", "param": "estimated_cost_usd"}
    }
    assert issubclass(costs.BudgetExhausted, _Err)


def test_budget_routes(client: Any, sessions: sessionmaker[Session], seeded: Seeded) -> None:
    now = datetime.now(UTC)
    # Spend this month: an hour at $5, ended a minute ago (all of it after the 1st began, as
    # long as this does not run in the first hour of a month).
    start = max(now - timedelta(hours=1, minutes=1), costs.month_start(now))
    with sessions.begin() as s:
        team = s.get(Team, seeded.ids["research"])
        assert team is not None
        job = add_job(
            s, team, None, "succeeded", plan("g5.xlarge", "A10G", 1, False, 5.0, 5.0, 5.0), cost=5.0
        )
        add_attempt(s, job, 1, start, now - timedelta(minutes=1), 5.0, "succeeded", cost=5.0)
    member, admin = headers(seeded.research), headers(seeded.admin)
    denied = client.put("/v1/teams/research/budget", json={"monthly_budget_usd": 100}, headers=member)
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "permission_denied"
    ok = client.put("/v1/teams/research/budget", json={"monthly_budget_usd": 100}, headers=admin)
    assert ok.status_code == 200, ok.text
    assert ok.json()["budget"] == 100 and ok.json()["spent_this_month"] == pytest.approx(5.0)
    assert ok.json()["remaining"] == pytest.approx(95.0)
    for bad, code in ((-1, 400), ("lots", 422), (float("1e13"), 400)):
        r = client.put("/v1/teams/research/budget", json={"monthly_budget_usd": bad}, headers=admin)
        assert r.status_code == code and r.json()["error"]["param"] == "monthly_budget_usd", r.text
    assert (
        client.put("/v1/teams/nobody/budget", json={"monthly_budget_usd": 1}, headers=admin).status_code
        == 404
    )
    budgets = client.get("/v1/budgets", headers=member).json()["data"]
    assert [b["team"] for b in budgets] == ["research"]
    assert budgets[0]["remaining"] == pytest.approx(95.0) and budgets[0]["committed_usd"] == pytest.approx(
        3.0
    )
    everyone = client.get("/v1/budgets", headers=admin).json()["data"]
    assert [b["team"] for b in everyone] == ["ops", "research", "vision"]
    assert [t["name"] for t in client.get("/v1/teams", headers=member).json()["data"]] == ["research"]
    assert len(client.get("/v1/teams", headers=admin).json()["data"]) == 3
    cleared = client.put("/v1/teams/research/budget", json={"monthly_budget_usd": None}, headers=admin)
    assert cleared.json()["budget"] is None and cleared.json()["remaining"] is None


# --- metrics --------------------------------------------------------------------------------


def test_metrics_spend_counter(client: Any, seeded: Seeded) -> None:
    with client.app.state.sessionmaker.begin() as s:
        s.get(Team, seeded.ids["research"]).monthly_budget_usd = 50.0  # type: ignore[union-attr]
    body = client.get("/metrics", headers=headers(seeded.admin)).text
    # research on g5.xlarge: A1 $6, A2 $6, J5 $6; vision's running A4 as metered ($30).
    assert 'trainyard_spend_usd_total{instance_type="g5.xlarge",team="research"} 18.0' in body
    assert 'trainyard_spend_usd_total{instance_type="c7i.2xlarge",team="research"} 2.0' in body
    assert 'trainyard_spend_usd_total{instance_type="g5.12xlarge",team="vision"} 30.0' in body
    assert 'trainyard_team_budget_usd{team="research"} 50.0' in body
    assert "# TYPE trainyard_spend_usd_total counter" in body


def test_spend_metrics_read_the_database_at_most_once_per_interval(
    sessions: sessionmaker[Session], seeded: Seeded
) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from trainyard.api.spend_metrics import register_spend_metrics

    registry = CollectorRegistry()
    register_spend_metrics(registry, sessions, min_interval_s=3600)
    line = 'trainyard_spend_usd_total{instance_type="c7i.2xlarge",team="research"} 2.0'
    assert line in generate_latest(registry).decode()
    with sessions.begin() as s:
        s.execute(text("UPDATE job_attempts SET cost_usd = cost_usd * 10"))
    assert line in generate_latest(registry).decode()  # still the cached reading
