"""A job's loss curve: the training loss by step, as its attempts reported it, and the losses
its checkpoints recorded (an evaluation loss among them where the run had validation data).

The training loss comes from the `metrics` events the worker's heartbeat writes as the run goes
(about one each 10 s, `workers.heartbeat`), from each checkpoint's metrics and from the job's
latest progress, which may be newer than its last event. Each point names its attempt: after a
resume the next attempt trains some steps again, and the curve shows both rather than hiding
the work redone. A long run has thousands of points; they are thinned to evenly spaced ones,
each attempt's first and last always kept, so a chart gets the shape without the bulk.
"""

from __future__ import annotations

import math
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from trainyard.platform import events, jobs
from trainyard.platform.auth import Principal
from trainyard.platform.errors import InvalidRequest
from trainyard.platform.models import Checkpoint, JobAttempt, JobEvent

MAX_POINTS = 5000
DEFAULT_POINTS = 1000


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _step(value: Any) -> int | None:
    number = _number(value)
    return int(number) if number is not None and number >= 0 else None


def loss_curve(
    session: Session, principal: Principal, job_id: str, *, points: int = DEFAULT_POINTS
) -> dict[str, Any]:
    """`{object, job_id, train: [{attempt, step, loss}], eval: [{attempt, trial, step, eval_loss}],
    reported, thinned}`: train by attempt, then step; `reported` is how many training points there
    were before thinning to at most `points`. 404 for a job the caller's team does not own."""
    if not 2 <= points <= MAX_POINTS:
        raise InvalidRequest(f"points must be between 2 and {MAX_POINTS}", param="points")
    job = jobs.get_job(session, principal, job_id)
    attempts = select(JobAttempt.id, JobAttempt.number).where(JobAttempt.job_id == job.id)
    number = {attempt_id: n for attempt_id, n in session.execute(attempts).tuples()}
    train: dict[tuple[int | None, int], float] = {}

    def add(attempt_id: str | None, step: Any, loss: Any) -> None:
        at, value = _step(step), _number(loss)
        if at is not None and value is not None:
            # The first report of a step stands: a heartbeat repeats the latest progress while
            # a slow step runs on.
            train.setdefault((number.get(attempt_id or ""), at), value)

    reported = session.execute(
        select(JobEvent.attempt_id, JobEvent.data["step"], JobEvent.data["loss"])
        .where(JobEvent.job_id == job.id, JobEvent.type == events.METRICS)
        .order_by(JobEvent.id)
    ).tuples()
    for attempt_id, step, loss in reported:
        add(attempt_id, step, loss)
    saved = session.execute(
        select(Checkpoint.attempt_id, Checkpoint.trial, Checkpoint.step, Checkpoint.metrics)
        .where(Checkpoint.job_id == job.id)
        .order_by(Checkpoint.step, Checkpoint.trial)
    ).tuples()
    evals: list[dict[str, Any]] = []
    for attempt_id, trial, step, metrics in saved:
        metrics = metrics or {}
        if not trial:  # a sweep's trials each count their own steps: not one curve
            add(attempt_id, step, metrics.get("loss"))
        eval_loss = _number(metrics.get("eval_loss"))
        if eval_loss is not None:
            evals.append(
                {
                    "attempt": number.get(attempt_id),
                    "trial": trial or None,
                    "step": step,
                    "eval_loss": eval_loss,
                }
            )
    if number and job.progress:
        latest = max(number, key=lambda a: number[a])
        add(latest, job.progress.get("step"), job.progress.get("loss"))
    ordered = [
        {"attempt": attempt, "step": step, "loss": loss}
        for (attempt, step), loss in sorted(train.items(), key=lambda kv: (kv[0][0] or 0, kv[0][1]))
    ]
    kept = thin(ordered, points)
    return {
        "object": "job.loss_curve",
        "job_id": job.id,
        "train": kept,
        "eval": evals,
        "reported": len(ordered),
        "thinned": len(kept) < len(ordered),
    }


def thin(ordered: list[dict[str, Any]], points: int) -> list[dict[str, Any]]:
    """At most `points` of `ordered` (by attempt, then step), evenly spaced; each attempt's first
    and last are kept too, so where one attempt stopped and the next resumed stays visible."""
    n = len(ordered)
    if n <= points:
        return ordered
    starts = [i for i in range(n) if i == 0 or ordered[i - 1]["attempt"] != ordered[i]["attempt"]]
    ends = sorted({*starts, *(i - 1 for i in starts if i), n - 1})
    if len(ends) >= points:
        picked = {ends[round(k * (len(ends) - 1) / (points - 1))] for k in range(points)}
    else:
        # The rest evenly spaced among the other points (more of them than room: n > points).
        kept = set(ends)
        others = [i for i in range(n) if i not in kept]
        room = points - len(ends)
        picked = {*ends, *(others[int((k + 0.5) * len(others) / room)] for k in range(room))}
    return [ordered[i] for i in sorted(picked)]
