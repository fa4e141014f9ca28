"""Sweeps estimated as the trials they run: every combination is a trial, num_samples times; up
to max_concurrent_trials run at once on an instance each; the sweep costs its trials, at the
rate of the instances it holds, over the time they take laid out on those instances. Its
progress is its trials' together."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from trainyard.platform.scheduling import Catalog, estimate_all, load_catalog, model_info_from_config
from trainyard.platform.scheduling.sweeps import makespan, trial_shapes
from trainyard.platform.spec import JobSpec
from trainyard.workers.mailbox import sweep_progress

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
GPT2 = {
    "model_type": "gpt2",
    "n_embd": 768,
    "n_layer": 12,
    "n_head": 12,
    "vocab_size": 50257,
    "n_positions": 1024,
}


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog()


def spec(sweep: dict[str, Any] | None, **hp: Any) -> JobSpec:
    return JobSpec(
        name="s",
        base_model="org/gpt2",
        training_file="s3://b/t.jsonl",
        hyperparameters={"max_steps": 1000, "batch_size": 8, "seq_len": 512, **hp},
        sweep=sweep,
    )


def options(catalog: Catalog, job: JobSpec) -> dict[tuple[str, bool], Any]:
    model = model_info_from_config(GPT2)
    assert model is not None
    return {(e.instance_type, e.spot): e for e in estimate_all(job, catalog, model, 10_000_000, now=NOW)}


def test_a_sweep_counts_its_trials() -> None:
    sweep = spec(
        {"param_space": {"learning_rate": [1e-4, 1e-3], "batch_size": [8, 16, 32]}, "num_samples": 2}
    ).sweep
    assert sweep is not None
    assert sweep.trials == 12 and sweep.concurrency == 1
    assert len(sweep.overrides()) == 12 and {"learning_rate": 1e-4, "batch_size": 8} in sweep.overrides()
    wide = spec({"param_space": {"learning_rate": [1e-4]}, "max_concurrent_trials": 8}).sweep
    assert wide is not None and wide.concurrency == 1  # never more at once than there are
    with pytest.raises(ValidationError, match="the most is 1024"):
        spec({"param_space": {"learning_rate": list(range(1, 40)), "seed": list(range(30))}})
    with pytest.raises(ValidationError):
        spec({"param_space": {"learning_rate": []}})


def test_trials_that_differ_only_in_learning_rate_are_estimated_once() -> None:
    job = spec({"param_space": {"learning_rate": [1e-4, 3e-4, 1e-3], "max_steps": [500, 1000]}})
    shapes = sorted((t.hyperparameters.max_steps, n) for t, n in trial_shapes(job))
    assert shapes == [(500, 3), (1000, 3)]


def test_a_sweep_costs_its_trials_at_the_rate_of_the_instances_it_holds(catalog: Catalog) -> None:
    one = options(catalog, spec(None))
    four_at_two = options(
        catalog,
        spec({"param_space": {"learning_rate": [1e-4, 2e-4, 3e-4, 4e-4]}, "max_concurrent_trials": 2}),
    )
    for key, single in one.items():
        sweep = four_at_two[key]
        assert sweep.trials == 4 and sweep.concurrent_trials == 2
        # Two instances at once, two rounds: four trials' cost, in twice one trial's time.
        assert sweep.usd_per_hour == pytest.approx(2 * single.usd_per_hour)
        assert sweep.seconds == pytest.approx(2 * single.seconds)
        assert sweep.cost_usd == pytest.approx(4 * single.cost_usd, rel=1e-9)
        assert sweep.tokens == 4 * single.tokens and sweep.steps == 4 * single.steps
        assert sweep.on_demand_cost_usd == pytest.approx(four_at_two[(key[0], False)].cost_usd)
        assert "4 trials, 2 at a time" in sweep.reason
    # A sweep that runs one trial at a time costs the same four trials, over four times as long.
    serial = options(catalog, spec({"param_space": {"learning_rate": [1e-4, 2e-4, 3e-4, 4e-4]}}))
    for key, single in one.items():
        assert serial[key].cost_usd == pytest.approx(4 * single.cost_usd, rel=1e-9)
        assert serial[key].seconds == pytest.approx(4 * single.seconds)


def test_an_uneven_sweep_pays_for_the_instances_it_holds_while_the_last_trial_runs(catalog: Catalog) -> None:
    one = options(catalog, spec(None))
    three_at_two = options(
        catalog, spec({"param_space": {"learning_rate": [1e-4, 2e-4, 3e-4]}, "max_concurrent_trials": 2})
    )
    single = one[("g5.xlarge", False)]
    sweep = three_at_two[("g5.xlarge", False)]
    assert sweep.seconds == pytest.approx(2 * single.seconds)
    assert sweep.cost_usd == pytest.approx(2 * single.usd_per_hour * 2 * single.seconds / 3600)


def test_makespan_lays_trials_out_longest_first() -> None:
    assert makespan([3, 3, 2, 2, 2], 2) == 7  # 3+2+2 | 3+2
    assert makespan([5], 4) == 5
    assert makespan([1, 1, 1, 1], 1) == 4


def test_a_sweeps_progress_is_its_trials_together() -> None:
    trials = {
        "t1": {"step": 30, "total_steps": 100, "tokens": 3000, "loss": 2.5, "tokens_per_second": 100.0},
        "t2": {"step": 10, "total_steps": 100, "tokens": 1000, "loss": 2.0, "tokens_per_second": 50.0},
    }
    got = sweep_progress(trials, 4)
    # Two trials not heard from yet are taken to be as long as the others.
    assert got["step"] == 40 and got["tokens"] == 4000 and got["total_steps"] == 400
    assert got["loss"] == 2.0 and got["tokens_per_second"] == 150.0
    assert got["trial_steps"] == {"t1": 30, "t2": 10}
