"""The start estimate of a queued job: the claim's rules played over running and queued jobs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from trainyard.platform.queue.eta import (
    MIN_REMAINING_SECONDS,
    Ahead,
    pool_start,
    quota_start,
    running_remaining,
    slot_times,
)

NOW = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)


def test_slots_free_as_running_jobs_end_and_an_overfull_pool_waits_for_more_ends() -> None:
    assert slot_times(3, [100.0]) == [0.0, 0.0, 100.0]
    # Five running in two slots (capacity was lowered): a slot frees at the fourth end.
    assert slot_times(2, [50.0, 10.0, 40.0, 30.0, 20.0]) == [40.0, 50.0]


def test_jobs_ahead_take_slots_in_claim_order_and_one_in_backoff_is_passed_over() -> None:
    # One slot, busy for 100 s; two jobs ahead of 300 s and 50 s.
    assert pool_start(1, [100.0], [Ahead(300.0), Ahead(50.0)]) == pytest.approx(450.0)
    # Two slots: the second frees at 0, the first job ahead takes it; then the 100 s slot frees.
    assert pool_start(2, [100.0], [Ahead(300.0)]) == pytest.approx(100.0)
    # The job ahead waits out a backoff of 1000 s: the claim takes this one first.
    assert pool_start(1, [100.0], [Ahead(300.0, not_before=1000.0)]) == pytest.approx(100.0)
    # Its own backoff: the free slot idles until it ends.
    assert pool_start(1, [], [], not_before=70.0) == pytest.approx(70.0)
    # A job ahead with no estimate holds the only slot for ever: the start is unknown.
    assert pool_start(1, [], [Ahead(float("inf"))]) is None
    assert pool_start(0, [], []) is None


def test_jobs_ahead_that_were_not_read_pass_at_the_mean_pace() -> None:
    ahead = [Ahead(100.0), Ahead(300.0)]
    # Two read (400 s) and two more at their mean (200 s each) in one slot.
    assert pool_start(1, [], ahead, more_ahead=2) == pytest.approx(800.0)
    assert pool_start(2, [], ahead, more_ahead=100_000) == pytest.approx(200.0 * 100_002 / 2, rel=1e-3)


def test_a_team_quota_frees_as_its_running_jobs_end() -> None:
    running = [(2.0, 500.0), (1.0, 100.0), (1.0, 300.0)]
    assert quota_start(None, 8, running) == 0.0
    assert quota_start(8, 2, running) == 0.0
    assert quota_start(4, 1, running) == pytest.approx(100.0)
    assert quota_start(4, 3, running) == pytest.approx(500.0)
    assert quota_start(4, 5, running) is None, "more than the quota never fits"


def test_a_running_job_ends_by_its_pace_its_progress_or_its_estimate() -> None:
    started = NOW - timedelta(seconds=100)
    assert running_remaining(estimated_seconds=400.0, started_at=started, now=NOW) == pytest.approx(300.0)
    # A quarter of its steps done: three quarters of its estimate left.
    by_progress = running_remaining(
        estimated_seconds=400.0, started_at=started, now=NOW, step=25, total_steps=100
    )
    assert by_progress == pytest.approx(300.0)
    # Its attempt trained 20 steps in 80 s since its first progress: 4 s a step for the 60 left.
    paced = running_remaining(
        estimated_seconds=400.0,
        started_at=started,
        now=NOW,
        step=40,
        total_steps=100,
        pace_step=20,
        pace_at=NOW - timedelta(seconds=80),
        end_step=40,
    )
    assert paced == pytest.approx(240.0)
    overrun = running_remaining(estimated_seconds=50.0, started_at=started, now=NOW)
    assert overrun == MIN_REMAINING_SECONDS
    assert running_remaining(estimated_seconds=None, started_at=started, now=NOW) == float("inf")
