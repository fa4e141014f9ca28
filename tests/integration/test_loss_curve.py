"""/v1/jobs/{id}/loss-curve: the training loss by step and attempt, and the checkpoints'
evaluation losses, for the job's own team; seeded by `dashboard_world`."""

from __future__ import annotations

from typing import Any

import pytest
from dashboard_world import EVAL_LOSS, LOSSES, seed
from sqlalchemy.orm import Session, sessionmaker
from support import headers

from trainyard.platform.loss_curve import thin


def test_the_curve_names_each_attempt_and_the_evaluations(
    client: Any, sessions: sessionmaker[Session]
) -> None:
    world = seed(sessions)
    r = client.get(f"/v1/jobs/{world.llama}/loss-curve", headers=headers(world.alice))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "job.loss_curve" and body["job_id"] == world.llama
    # Attempt 2 trains steps 110-120 again after its resume from step 100: both are shown.
    want = [
        {"attempt": n, "step": step, "loss": loss} for n, points in LOSSES.items() for step, loss in points
    ]
    assert body["train"] == want
    assert body["reported"] == len(want) and body["thinned"] is False
    assert body["eval"] == [
        {"attempt": 1, "trial": None, "step": 100, "eval_loss": EVAL_LOSS[100]},
        {"attempt": 2, "trial": None, "step": 300, "eval_loss": EVAL_LOSS[300]},
    ]
    # Thinned, each attempt's first and last point stay.
    few = client.get(f"/v1/jobs/{world.llama}/loss-curve?points=5", headers=headers(world.alice)).json()
    kept = [(p["attempt"], p["step"]) for p in few["train"]]
    assert kept == [(1, 10), (1, 120), (2, 110), (2, 150), (2, 300)]
    assert few["thinned"] is True and few["reported"] == 8
    # A job that never reported a loss has an empty curve, not an error.
    empty = client.get(f"/v1/jobs/{world.probe}/loss-curve", headers=headers(world.bob)).json()
    assert empty["train"] == [] and empty["eval"] == []


def test_another_team_gets_a_404(client: Any, sessions: sessionmaker[Session]) -> None:
    world = seed(sessions)
    r = client.get(f"/v1/jobs/{world.llama}/loss-curve", headers=headers(world.vision))
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "job_not_found"
    assert client.get(f"/v1/jobs/{world.llama}/loss-curve", headers=headers(world.admin)).status_code == 200
    bad = client.get(f"/v1/jobs/{world.llama}/loss-curve?points=1", headers=headers(world.alice))
    assert bad.status_code in (400, 422)


@pytest.mark.parametrize(("n", "attempts", "points"), [(1000, 1, 10), (1000, 3, 7), (50, 40, 9), (9, 2, 9)])
def test_thinning_keeps_the_ends_and_at_most_the_points(n: int, attempts: int, points: int) -> None:
    ordered = [{"attempt": 1 + i * attempts // n, "step": i, "loss": 1.0} for i in range(n)]
    kept = thin(ordered, points)
    assert len(kept) <= points and kept == sorted(kept, key=lambda p: p["step"])
    assert kept[0] is ordered[0] and kept[-1] is ordered[-1]
    if 2 * attempts <= points:
        for a in range(1, attempts + 1):
            mine = [p["step"] for p in ordered if p["attempt"] == a]
            assert {mine[0], mine[-1]} <= {p["step"] for p in kept}
    if points < n and 2 * attempts < points:
        assert len(kept) == points
