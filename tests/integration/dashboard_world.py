"""A small world for the dashboard's job page and its views by user and by label, with figures
worked out by hand (all inside the last seven days, every attempt finished):

research, key `alice`: llama-sft (label project=chat) on g5.xlarge spot at $1/h ($3/h on demand):
  attempt 1 preempted after 2 h at step 120 ($2, all lost);
  attempt 2 resumed from the step-100 checkpoint, 4 h to step 300, succeeded ($4): its first
  24 min (a tenth) started up ($0.40), 20 of its 200 steps redid attempt 1's ($0.36 of the rest),
  $3.24 productive. Goodput $3.24 / $6 = 54%.
research, key `bob`: probe (label project=chat), 90 s on a CPU at $0.168/h: $0.0042.
vision: tiny-eval (label project=vision-x), 60 s at $0.0312/h: $0.00052; no label on nothing.

By user: alice $6.00, bob $0.0042, vision's key $0.00052. By label project: chat $6.0042
($6.00), vision-x $0.00052.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from trainyard.platform import auth, events, states
from trainyard.platform.costs import ledger
from trainyard.platform.models import ApiKey, Checkpoint, Job, JobAttempt

SPOT_PLAN: dict[str, Any] = {
    "instance_type": "g5.xlarge",
    "accelerator": "A10G",
    "accelerator_count": 1,
    "spot": True,
    "usd_per_hour": 1.0,
    "on_demand_usd_per_hour": 3.0,
    "estimated_cost_usd": 5.5,
    "estimated_seconds": 19_800.0,
    "objective": "cheapest",
    "reason": "g5.xlarge spot: the cheapest option",
    "alternatives": [
        {"option": "g6.xlarge spot", "estimated_seconds": 25_200.0, "estimated_cost_usd": 6.3},
        {"option": "g5.xlarge", "estimated_seconds": 18_000.0, "estimated_cost_usd": 15.0},
    ],
}
CPU_PLAN: dict[str, Any] = {
    "instance_type": "local-cpu",
    "accelerator": None,
    "accelerator_count": 0,
    "spot": False,
    "usd_per_hour": 0.168,
    "on_demand_usd_per_hour": 0.168,
    "estimated_cost_usd": 0.004,
    "estimated_seconds": 85.0,
    "alternatives": [],
}
# Training loss each attempt reported (step, loss): attempt 2 redoes steps 100-120.
LOSSES = {
    1: [(10, 3.9), (40, 3.1), (80, 2.6), (120, 2.4)],
    2: [(110, 2.5), (150, 2.2), (220, 1.9), (300, 1.7)],
}
EVAL_LOSS = {100: 2.55, 300: 1.8}


@dataclass(frozen=True)
class World:
    alice: str
    bob: str
    vision: str
    admin: str
    llama: str
    probe: str
    tiny: str


def seed(sessions: sessionmaker[Session]) -> World:
    with sessions.begin() as s:
        teams = {}
        for name in ("research", "vision", "ops"):
            try:
                teams[name] = auth.get_team_by_name(s, name)
            except Exception:
                teams[name] = auth.create_team(s, name)
        secrets = {
            "alice": auth.create_key(s, teams["research"], name="alice"),
            "bob": auth.create_key(s, teams["research"], name="bob"),
            "vision": auth.create_key(s, teams["vision"], name="vis"),
            "admin": auth.create_key(s, teams["ops"], name="ops", role="admin"),
        }
        key_id = {
            name: s.scalar(select(ApiKey.id).where(ApiKey.key_hash == auth.hash_key(secret)))
            for name, secret in secrets.items()
        }
        now = s.scalar(select(text("now()")))
        assert isinstance(now, datetime)

        def job(team: str, key: str, name: str, plan: dict[str, Any], project: str, cost: float) -> Job:
            j = Job(
                team_id=teams[team].id,
                api_key_id=key_id[key],
                name=name,
                status=states.SUCCEEDED,
                spec={"name": name, "base_model": "s3://models/gpt2"},
                job_metadata={"project": project},
                plan=plan,
                instance_type=plan["instance_type"],
                pool=plan["instance_type"],
                cost_usd=cost,
            )
            s.add(j)
            s.flush()
            return j

        def attempt(
            j: Job, n: int, ago: timedelta, seconds: float, outcome: str, steps: tuple[int, int], **kw: Any
        ) -> JobAttempt:
            start = now - ago
            end = start + timedelta(seconds=seconds)
            att = JobAttempt(
                job_id=j.id,
                number=n,
                worker_id="w",
                started_at=start,
                heartbeat_at=end,
                lease_expires_at=end,
                ended_at=end,
                outcome=outcome,
                billable_seconds=seconds,
            )
            ledger.record_terms(att, j.plan, j.instance_type, kw.get("prior", (0, 0)))
            att.cost_usd = seconds / 3600 * att.usd_per_hour
            ledger.record_start(att, steps[0], steps[0] * 10_000)
            pace = kw.get("startup", timedelta(0))
            ledger.record_progress(att, step=steps[0] + 1, tokens=steps[0] * 10_000, now=start + pace)
            ledger.record_progress(att, step=steps[1], tokens=steps[1] * 10_000)
            s.add(att)
            j.attempt_count, j.billable_seconds = n, (j.billable_seconds or 0.0) + seconds
            s.flush()
            return att

        llama = job("research", "alice", "llama-sft", SPOT_PLAN, "chat", 6.0)
        first = attempt(
            llama, 1, timedelta(days=3), 7200, states.AttemptOutcome.PREEMPTED, (0, 120), startup=timedelta(0)
        )
        second = attempt(
            llama, 2, timedelta(days=2), 14_400, states.AttemptOutcome.SUCCEEDED, (100, 300),
            prior=(120, 1_200_000), startup=timedelta(minutes=24),
        )  # fmt: skip
        for att in (first, second):
            events.add(s, llama.id, events.STATUS, f"attempt {att.number} started", attempt_id=att.id)
            for step, loss in LOSSES[att.number]:
                data = {"step": step, "total_steps": 300, "loss": loss, "tokens": step * 10_000}
                events.add(
                    s, llama.id, events.METRICS, f"step {step}/300 loss {loss}", attempt_id=att.id, data=data
                )
        events.add(
            s, llama.id, events.MESSAGE, "spot capacity reclaimed", attempt_id=first.id, level="warning"
        )
        for step, eval_loss in EVAL_LOSS.items():
            owner = first if step <= 120 else second
            metrics = {"step": step, "loss": dict(LOSSES[owner.number]).get(step), "eval_loss": eval_loss}
            s.add(
                Checkpoint(
                    job_id=llama.id, attempt_id=owner.id, step=step, metrics=metrics, uri=f"s3://c/{step}"
                )
            )
        probe = job("research", "bob", "probe", CPU_PLAN, "chat", 0.0042)
        attempt(probe, 1, timedelta(hours=5), 90, states.AttemptOutcome.SUCCEEDED, (0, 20))
        tiny_plan = {**CPU_PLAN, "usd_per_hour": 0.0312, "on_demand_usd_per_hour": 0.0312}
        tiny = job("vision", "vision", "tiny-eval", tiny_plan, "vision-x", 0.00052)
        attempt(tiny, 1, timedelta(hours=4), 60, states.AttemptOutcome.SUCCEEDED, (0, 10))
        return World(**secrets, llama=llama.id, probe=probe.id, tiny=tiny.id)
