"""The attempt ledger over random histories (pauses, resumes, crashes, rescues, plans that change
between attempts): a job's tokens are what it trained, counted once however often it resumed;
recomputed work is counted; no figure is negative; waste never exceeds spend."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from attempt_histories import History, histories
from hypothesis import given, settings
from hypothesis import strategies as st

from trainyard.platform import states
from trainyard.platform.costs import ledger
from trainyard.platform.models import JobAttempt

START = datetime(2026, 3, 1, tzinfo=UTC)


@settings(max_examples=300, deadline=None)
@given(histories(START))
def test_a_jobs_tokens_are_what_it_trained_counted_once(h: History) -> None:
    trained = sum(ledger.new_tokens(a) for a in h.attempts)
    assert trained == h.furthest_tokens
    last = h.attempts[-1]
    if last.outcome == states.AttemptOutcome.SUCCEEDED:
        # The tokens the last attempt reached: the whole run, once.
        assert trained == last.end_tokens == h.cumulative[h.total_steps]
    # Each attempt's own count is a delta from where it resumed, never the restored total.
    for a in h.attempts:
        assert a.tokens_trained == a.end_tokens - a.start_tokens >= 0
        assert 0 <= a.tokens_recomputed <= a.tokens_trained
    # Redone work is what the attempts trained beyond what the job did.
    redone = sum(a.tokens_recomputed for a in h.attempts)
    assert sum(a.tokens_trained for a in h.attempts) - redone <= trained


@settings(max_examples=300, deadline=None)
@given(histories(START, checkpoint_tokens=True))
def test_recomputed_steps_are_those_an_earlier_attempt_had_done(h: History) -> None:
    furthest = 0
    for a in h.attempts:
        assert a.steps_recomputed == max(0, min(a.end_step, furthest) - a.start_step)
        furthest = max(furthest, a.end_step)
    # The new steps of all attempts add up to how far the job got.
    assert sum(a.end_step - a.start_step - a.steps_recomputed for a in h.attempts) == furthest


@settings(max_examples=300, deadline=None)
@given(histories(START))
def test_no_negative_money_and_waste_within_spend(h: History) -> None:
    for a in h.attempts:
        assert a.cost_usd >= 0 and a.billable_seconds >= 0
        assert 0 <= ledger.waste_usd(a) <= a.cost_usd + 1e-12
        assert 0.0 <= ledger.recomputed_fraction(a) <= 1.0
        assert ledger.spot_savings_usd(a) >= 0
        assert ledger.gpu_hours(a) >= 0
        if a.outcome in states.WASTED:
            assert ledger.waste_usd(a) == a.cost_usd
        elif a.outcome == states.AttemptOutcome.HANDED_BACK and a.steps_recomputed == 0:
            assert ledger.waste_usd(a) == 0.0  # a pause keeps its checkpoint
        # Goodput: every dollar is productive, start-up, checkpointing, redone or lost; once.
        parts = ledger.goodput_parts(a)
        assert set(parts) == set(ledger.GOODPUT_PARTS)
        assert all(v >= 0 for v in parts.values())
        assert sum(parts.values()) == pytest.approx(a.cost_usd, rel=1e-9, abs=1e-12)
        assert parts["lost_usd"] + parts["recomputed_usd"] == pytest.approx(ledger.waste_usd(a), abs=1e-12)


@given(
    st.integers(0, 3),
    st.booleans(),
    st.sampled_from([None, "x", float("nan"), -1.0, False, {"a": 1}]),
)
def test_terms_come_from_the_plan_at_claim_and_survive_a_bad_one(
    instance: int, spot: bool, junk: object
) -> None:
    from attempt_histories import plan

    good = plan(instance, spot)
    attempt = JobAttempt(number=1)
    ledger.record_terms(attempt, good, good["instance_type"], (0, 0))
    assert (attempt.usd_per_hour, attempt.on_demand_usd_per_hour) == (
        good["usd_per_hour"],
        good["on_demand_usd_per_hour"],
    )
    assert attempt.accelerator_count == good["accelerator_count"] and attempt.spot is spot
    # A plan changed afterwards (dispatch) leaves the attempt's terms as they were.
    good.update(usd_per_hour=99.0, accelerator_count=64, spot=not spot)
    assert attempt.usd_per_hour != 99.0 and attempt.accelerator_count != 64 and attempt.spot is spot
    # A hand-edited plan never breaks a claim: unreadable numbers count as unknown.
    bad = JobAttempt(number=1)
    ledger.record_terms(bad, {"usd_per_hour": junk, "accelerator_count": junk, "spot": junk}, None, (0, 0))
    assert bad.usd_per_hour == 0.0 and bad.accelerator_count == 0 and bad.spot is False
