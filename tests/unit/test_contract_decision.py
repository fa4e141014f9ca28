"""The deadline contract's decision, without a database: when spot stays, when the job moves, what
the reason says, and that its on-time probability is what a simulation of interruptions gives."""

from __future__ import annotations

import math
import random

import pytest

from trainyard.platform.scheduling.deadline_contract import Option, decide, outlook, p_finish_by, poisson_cdf

HOUR = 3600.0
SPOT = Option(
    "p5.48xlarge",
    True,
    25.66,
    seconds=6 * HOUR,
    startup_seconds=600,
    interruptions_per_hour=0.1,
    restart_seconds=600,
    checkpoint_interval_seconds=1200,
)
ON_DEMAND = Option("p5.48xlarge", False, 55.04, seconds=6 * HOUR, startup_seconds=600)
FASTER = Option("p5e.48xlarge", False, 150.0, seconds=3 * HOUR, startup_seconds=600)


def test_poisson_cdf() -> None:
    assert poisson_cdf(0, 0.5) == pytest.approx(math.exp(-0.5))
    assert poisson_cdf(2, 1.0) == pytest.approx(math.exp(-1) * (1 + 1 + 0.5))
    assert poisson_cdf(-1, 1.0) == 0.0 and poisson_cdf(0, 0.0) == 1.0
    assert poisson_cdf(200, 50.0) == pytest.approx(1.0)


def test_on_demand_is_certain_and_spot_pays_for_interruptions() -> None:
    od = outlook(ON_DEMAND, seconds_left=7 * HOUR, confidence=0.9)
    assert od.p_on_time == 1.0 and od.expected_seconds == od.seconds_at_confidence == 6 * HOUR + 600
    assert od.expected_cost_usd == pytest.approx(55.04 * (6 * HOUR + 600) / HOUR)
    assert outlook(ON_DEMAND, seconds_left=6 * HOUR, confidence=0.9).p_on_time == 0.0
    spot = outlook(SPOT, seconds_left=7 * HOUR, confidence=0.9)
    # Each interruption: a 600 s restart and half of a 1200 s interval.
    assert SPOT.interruption_seconds == 1200
    assert spot.expected_seconds == pytest.approx((6 * HOUR + 600) / (1 - 0.1 * 1200 / HOUR))
    assert spot.seconds_at_confidence in {6 * HOUR + 600 + k * 1200 for k in range(5)}
    assert spot.expected_cost_usd < od.expected_cost_usd


def test_spot_stays_while_the_slack_absorbs_its_interruptions() -> None:
    verdict = decide(SPOT, [ON_DEMAND], objective="deadline", confidence=0.9, seconds_left=12 * HOUR)
    assert verdict.stay and verdict.chosen is verdict.current
    assert verdict.reason.startswith("spot finishes ") and "staying on spot p5.48xlarge" in verdict.reason


def test_spot_that_cannot_survive_an_interruption_moves_to_on_demand() -> None:
    # 100 s to spare: no room for one interruption (1,200 s); on demand meets it for sure.
    left = 6 * HOUR + 700
    verdict = decide(SPOT, [ON_DEMAND], objective="deadline", confidence=0.9, seconds_left=left)
    assert not verdict.stay and verdict.chosen.option is ON_DEMAND
    p_late = 1 - math.exp(-0.1 * (6 * HOUR + 600) / HOUR)
    assert verdict.current.p_on_time == pytest.approx(1 - p_late)
    extra = verdict.chosen.expected_cost_usd - verdict.current.expected_cost_usd
    # At 0.9 confidence spot plans for two interruptions: 2,400 s, 2,300 s past the deadline.
    assert verdict.current.seconds_at_confidence == 6 * HOUR + 600 + 2 * 1200
    assert verdict.reason == (
        f"spot would finish 38m20s after the deadline with p={p_late:.2f}; "
        f"moving to on-demand p5.48xlarge: +${extra:,.2f}"
    )
    # The same case with less confidence asked for stays on spot.
    assert decide(SPOT, [ON_DEMAND], objective="deadline", confidence=0.5, seconds_left=left).stay


def test_the_cheapest_option_in_time_wins_and_else_the_soonest() -> None:
    # Only the faster type makes a 4 h deadline.
    verdict = decide(SPOT, [ON_DEMAND, FASTER], objective="deadline", confidence=0.9, seconds_left=4 * HOUR)
    assert verdict.chosen.option is FASTER and "; moving to on-demand p5e.48xlarge: +$" in verdict.reason
    assert "still late" not in verdict.reason
    # With time for both, the cheaper on-demand run.
    verdict = decide(SPOT, [ON_DEMAND, FASTER], objective="deadline", confidence=0.9, seconds_left=6.3 * HOUR)
    assert verdict.chosen.option is ON_DEMAND
    # Nobody makes 2 h: the soonest finish, and the reason says it is still late.
    verdict = decide(SPOT, [ON_DEMAND, FASTER], objective="deadline", confidence=0.9, seconds_left=2 * HOUR)
    assert verdict.chosen.option is FASTER and verdict.reason.endswith(
        "still late: the soonest finish there is"
    )


def test_a_budget_moves_to_the_fastest_option_it_still_affords() -> None:
    od_cost = 55.04 * (6 * HOUR + 600) / HOUR
    assert decide(ON_DEMAND, [SPOT], objective="budget", confidence=0.9, budget_left_usd=od_cost + 1).stay
    verdict = decide(ON_DEMAND, [SPOT], objective="budget", confidence=0.9, budget_left_usd=od_cost / 2)
    assert not verdict.stay and verdict.chosen.option is SPOT
    assert verdict.reason.startswith("on-demand p5.48xlarge would cost $")
    assert "moving to spot p5.48xlarge: -$" in verdict.reason and verdict.reason.endswith("longer")


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="objective"):
        decide(SPOT, [], objective="cheapest", confidence=0.9, seconds_left=1.0)
    with pytest.raises(ValueError, match="confidence"):
        decide(SPOT, [], objective="deadline", confidence=1.0, seconds_left=1.0)
    with pytest.raises(ValueError, match="seconds_left"):
        decide(SPOT, [], objective="deadline", confidence=0.9)


def _simulated_on_time(option: Option, deadline: float, runs: int, rng: random.Random) -> float:
    """Interruptions arrive as a Poisson process while the run is up; each one loses the work since
    the last checkpoint and costs the restart."""
    rate = option.interruptions_per_hour / HOUR
    on_time = 0
    for _ in range(runs):
        clock, done = option.startup_seconds, 0.0
        while clock <= deadline:
            gap = rng.expovariate(rate)
            if done + gap >= option.seconds:
                clock += option.seconds - done
                break
            done += gap
            done -= done % option.checkpoint_interval_seconds  # back to the last checkpoint
            clock += gap + option.restart_seconds
        on_time += clock <= deadline
    return on_time / runs


@pytest.mark.parametrize("spare", [100.0, 1500.0, 4000.0, 9000.0])
def test_the_on_time_probability_is_a_lower_bound_close_to_simulation(spare: float) -> None:
    # A busy spot market (0.5 interruptions/h) so that a few hundred thousand runs are not needed.
    busy = Option(
        "x",
        True,
        1.0,
        seconds=4 * HOUR,
        startup_seconds=300,
        interruptions_per_hour=0.5,
        restart_seconds=300,
        checkpoint_interval_seconds=600,
    )
    deadline = busy.startup_seconds + busy.seconds + spare
    simulated = _simulated_on_time(busy, deadline, 4000, random.Random(7))
    bound = p_finish_by(busy, deadline)
    assert bound <= simulated + 0.03
    assert simulated - bound < 0.25
