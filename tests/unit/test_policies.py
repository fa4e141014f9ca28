"""Policies: cheapest, fastest, deadline, budget; spot choice; narrowing; errors; properties."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import shipped_catalog

from trainyard.platform.scheduling import (
    Decision,
    Estimate,
    ModelInfo,
    NoFeasibleOption,
    choose,
    choose_many,
    estimate_all,
)
from trainyard.platform.scheduling.execution import runnable
from trainyard.platform.spec import JobSpec

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
GPT2 = ModelInfo(
    parameters=124_439_808, layers=12, hidden_size=768, vocab_size=50257, heads=12, model_type="gpt2"
)
LLAMA_8B = ModelInfo(
    parameters=8_030_261_248,
    layers=32,
    hidden_size=4096,
    vocab_size=128256,
    heads=32,
    kv_heads=8,
    model_type="llama",
)
LLAMA_70B = ModelInfo(
    parameters=70_553_706_496, layers=80, hidden_size=8192, vocab_size=128256, model_type="llama"
)


def job(**overrides: Any) -> JobSpec:
    fields: dict[str, Any] = {"name": "t", "base_model": "org/model", "training_file": "s3://b/train.jsonl"}
    return JobSpec(**(fields | overrides))


def options_for(spec: JobSpec, model: ModelInfo, tokens: int) -> list[Estimate]:
    return estimate_all(spec, shipped_catalog(), model, tokens, now=NOW)


def decide_now(
    spec: JobSpec, model: ModelInfo, tokens: int, *, available: set[str] | frozenset[str] | None = None
) -> Decision:
    """As planning decides one job: every catalog option estimated, then chosen among the pools."""
    return choose(spec, options_for(spec, model, tokens), available=available)


# --- each objective -----------------------------------------------------------------------


def test_cheapest_picks_the_lowest_whole_run_cost() -> None:
    spec = job(method="lora")
    options = options_for(spec, LLAMA_8B, 100_000_000)
    decision = choose(spec, options)
    fitting = [o for o in options if o.fits and runnable(o.kind)]
    assert decision.chosen.cost_usd == min(o.cost_usd for o in fitting)
    assert decision.objective == "cheapest"
    assert len(decision.alternatives) == len(fitting) - 1
    costs = [a.cost_usd for a in decision.alternatives]
    assert costs == sorted(costs)
    assert decision.reason.startswith(decision.chosen.option + ": $")
    assert "the cheapest whole run" in decision.reason and "would take" in decision.reason


def test_a_dearer_faster_gpu_can_be_the_cheapest_whole_run() -> None:
    """The product's point: $/hour is not the price of the run."""
    # A 125M full fine-tune over 50M tokens: the CPU box costs least per hour, the GPU least per run.
    spec = job(policy={"spot": "never"})
    options = options_for(spec, GPT2, 50_000_000)
    by_hour = min((o for o in options if o.fits), key=lambda o: o.usd_per_hour)
    chosen = choose(spec, options).chosen
    assert by_hour.kind == "cpu"
    assert chosen.kind != "cpu"
    assert chosen.usd_per_hour > by_hour.usd_per_hour
    assert chosen.cost_usd < by_hour.cost_usd / 10
    # Among GPUs too: LoRA on 8B costs less on one H100 ($3.99/h) than on an L4 ($0.80/h), which
    # runs 8x slower and has to recompute activations to fit.
    lora = job(method="lora", policy={"spot": "never", "allowed_accelerators": ["L4", "H100"]})
    decision = choose(lora, options_for(lora, LLAMA_8B, 100_000_000))
    l4 = next(o for o in decision.alternatives if o.instance_type == "g6.xlarge")
    assert decision.chosen.accelerator == "H100"
    assert decision.chosen.usd_per_hour > 4 * l4.usd_per_hour
    assert decision.chosen.cost_usd < l4.cost_usd


def test_fastest_picks_the_shortest_run() -> None:
    spec = job(method="lora", policy={"objective": "fastest"})
    options = options_for(spec, LLAMA_8B, 100_000_000)
    decision = choose(spec, options)
    assert decision.chosen.seconds == min(o.seconds for o in options if o.fits)
    assert "the fastest run" in decision.reason and "would cost" in decision.reason


def test_deadline_picks_the_cheapest_option_in_time() -> None:
    spec = job(method="lora", policy={"objective": "deadline", "deadline": NOW + timedelta(hours=2)})
    options = options_for(spec, LLAMA_8B, 100_000_000)
    decision = choose(spec, options)
    in_time = [o for o in options if o.fits and o.meets_deadline and runnable(o.kind)]
    assert decision.chosen.meets_deadline
    assert decision.chosen.cost_usd == min(o.cost_usd for o in in_time)
    # The cheapest option overall is too slow for this deadline.
    assert min((o for o in options if o.fits), key=lambda o: o.cost_usd).meets_deadline is False
    assert "meets the 2h00m deadline" in decision.reason


def test_deadline_nobody_meets_falls_back_to_the_fastest() -> None:
    spec = job(method="lora", policy={"objective": "deadline", "deadline": NOW + timedelta(minutes=5)})
    options = options_for(spec, LLAMA_8B, 100_000_000)
    decision = choose(spec, options)
    assert decision.chosen.meets_deadline is False
    assert decision.chosen.seconds == min(o.seconds for o in options if o.fits)
    assert "misses the 5m00s deadline" in decision.reason


def test_budget_picks_the_fastest_within_it() -> None:
    spec = job(method="lora", policy={"objective": "budget", "max_cost_usd": 12.0})
    options = options_for(spec, LLAMA_8B, 100_000_000)
    decision = choose(spec, options)
    within = [o for o in options if o.fits and o.cost_usd <= 12.0]
    assert decision.chosen.cost_usd <= 12.0 and decision.chosen.within_budget
    assert decision.chosen.seconds == min(o.seconds for o in within)
    assert "within the $12.00 budget" in decision.reason and "over budget" in decision.reason


def test_budget_that_nothing_meets_is_refused() -> None:
    spec = job(method="lora", policy={"objective": "budget", "max_cost_usd": 0.5})
    with pytest.raises(NoFeasibleOption) as info:
        choose(spec, options_for(spec, LLAMA_8B, 100_000_000))
    assert info.value.code == "budget_infeasible"
    assert info.value.param == "policy.max_cost_usd"
    assert "$0.50 budget" in info.value.message and "cheapest is" in info.value.message


def test_nothing_fits() -> None:
    spec = job()
    with pytest.raises(NoFeasibleOption) as info:
        choose(spec, options_for(spec, LLAMA_70B, 1_000_000))
    assert info.value.code == "no_instance_fits"
    assert "does not fit" in info.value.message


# --- narrowing ----------------------------------------------------------------------------


def test_spot_choice() -> None:
    for mode, allowed in (("never", {False}), ("always", {True}), ("auto", {False, True})):
        spec = job(method="lora", policy={"spot": mode})
        decision = choose(spec, options_for(spec, LLAMA_8B, 100_000_000))
        seen = {decision.chosen.spot} | {a.spot for a in decision.alternatives}
        assert seen == allowed, mode
    # auto takes spot when its expected cost is lower, interruptions included.
    auto = choose(job(policy={"spot": "auto"}), options_for(job(), GPT2, 50_000_000))
    assert auto.chosen.spot


def test_allowed_accelerators_and_pinned_type() -> None:
    spec = job(method="lora", policy={"allowed_accelerators": ["a100"]})
    decision = choose(spec, options_for(spec, LLAMA_8B, 100_000_000))
    assert {decision.chosen.accelerator} | {a.accelerator for a in decision.alternatives} <= {
        "A100-40GB",
        "A100-80GB",
    }
    # TPU types are estimated but never chosen: no tested execution path runs them yet.
    tpu = job(method="lora", policy={"allowed_accelerators": ["tpu"]})
    with pytest.raises(NoFeasibleOption) as info:
        decide_now(tpu, LLAMA_8B, 100_000_000)
    assert info.value.code == "no_eligible_instance"
    pinned = job(method="lora", instance_type="p4d.24xlarge", policy={"spot": "never"})
    decision = decide_now(pinned, LLAMA_8B, 100_000_000)
    assert decision.chosen.instance_type == "p4d.24xlarge" and not decision.chosen.spot
    assert decision.alternatives == ()


def test_available_pools_narrow_the_choice() -> None:
    spec = job()
    decision = decide_now(spec, GPT2, 1_000_000, available={"local-cpu", "c7i.2xlarge"})
    assert decision.chosen.instance_type in {"local-cpu", "c7i.2xlarge"}
    # A pinned type that no pool runs: nothing is eligible, and the message names both constraints.
    with pytest.raises(NoFeasibleOption) as info:
        decide_now(job(instance_type="g5.xlarge"), GPT2, 1_000_000, available={"local-cpu"})
    assert info.value.code == "no_eligible_instance" and info.value.param == "policy"
    assert "instance_type 'g5.xlarge'" in info.value.message
    assert "the pools that exist (local-cpu)" in info.value.message


def test_tpu_types_are_estimated_but_never_chosen() -> None:
    # A 70B LoRA fits a v6e-8 (32 GB chips) with micro-batch 1 x 8; still no policy places it, and
    # pinning it says why.
    spec = job(method="lora", hyperparameters={"batch_size": 8, "seq_len": 2048})
    options = options_for(spec, LLAMA_70B, 100_000_000)
    v6e = next(o for o in options if o.instance_type == "v6e-8" and not o.spot)
    assert v6e.fits and (v6e.micro_batch_size, v6e.gradient_accumulation_steps) == (1, 8)
    for objective in ({"objective": "cheapest"}, {"objective": "fastest"}):
        s = job(method="lora", hyperparameters={"batch_size": 8, "seq_len": 2048}, policy=objective)
        decision = choose(s, options_for(s, LLAMA_70B, 100_000_000))
        assert decision.chosen.kind != "tpu" and all(a.kind != "tpu" for a in decision.alternatives)
    assert (
        choose_many([(spec, LLAMA_70B, 100_000_000)], shipped_catalog(), now=NOW)[0].instance_type != "v6e-8"
    )
    # GPUs run on the same torch code path as CPUs (CUDA): they stay choosable.
    gpu = job(
        method="lora",
        hyperparameters={"batch_size": 8, "seq_len": 2048},
        policy={"allowed_accelerators": ["gpu"]},
    )
    assert decide_now(gpu, LLAMA_70B, 100_000_000).chosen.kind == "multi_gpu"
    assert decide_now(job(method="lora", instance_type="g5.xlarge"), LLAMA_8B, 1_000_000).chosen.kind == "gpu"
    with pytest.raises(NoFeasibleOption) as info:
        decide_now(job(method="lora", instance_type="v6e-8"), LLAMA_70B, 100_000_000)
    assert info.value.code == "no_eligible_instance" and info.value.param == "instance_type"
    assert "no tested XLA execution path" in info.value.message


def test_narrowing_errors() -> None:
    with pytest.raises(NoFeasibleOption) as info:
        decide_now(job(instance_type="x9.mega"), GPT2, 1_000_000)
    assert info.value.code == "instance_type_unknown"
    with pytest.raises(NoFeasibleOption) as info:
        decide_now(job(instance_type="gpu_1x_h100_sxm5", policy={"spot": "always"}), GPT2, 1_000_000)
    assert info.value.code == "no_eligible_instance"
    assert "spot 'always'" in info.value.message
    with pytest.raises(NoFeasibleOption) as info:
        decide_now(job(policy={"allowed_accelerators": ["B200"]}), GPT2, 1_000_000)
    assert info.value.code == "no_eligible_instance" and "B200" in info.value.message
    with pytest.raises(NoFeasibleOption) as info:
        decide_now(job(policy={"allowed_accelerators": ["cpu"]}), LLAMA_8B, 1_000_000)
    assert info.value.code == "no_instance_fits"


def test_decision_to_dict() -> None:
    decision = decide_now(job(), GPT2, 1_000_000)
    data = decision.to_dict()
    assert data["instance_type"] == decision.instance_type and data["reason"] == decision.reason
    assert len(data["alternatives"]) == len(decision.alternatives)


# --- properties ---------------------------------------------------------------------------

MODELS = [
    GPT2,
    ModelInfo(parameters=355_000_000, source="spec"),
    ModelInfo(parameters=1_300_000_000, source="spec"),
    ModelInfo(parameters=3_000_000_000, source="spec"),
    LLAMA_8B,
    ModelInfo(parameters=13_000_000_000, source="spec"),
    LLAMA_70B,
]


@st.composite
def jobs(draw: st.DrawFn, objective: str | None = None) -> tuple[JobSpec, ModelInfo, int]:
    objective = objective or draw(st.sampled_from(["cheapest", "fastest", "deadline", "budget"]))
    policy: dict[str, Any] = {
        "objective": objective,
        "spot": draw(st.sampled_from(["never", "auto", "always"])),
    }
    if objective == "deadline" or draw(st.booleans()):
        policy["deadline"] = NOW + timedelta(minutes=draw(st.floats(5, 7 * 24 * 60)))
    if objective == "budget" or draw(st.integers(0, 3)) == 0:
        policy["max_cost_usd"] = draw(st.floats(0.05, 2000))
    if draw(st.integers(0, 4)) == 0:
        policy["allowed_accelerators"] = draw(
            st.lists(
                st.sampled_from(["A100", "H100", "L4", "A10G", "cpu", "tpu", "H200"]), min_size=1, max_size=3
            )
        )
    hyper: dict[str, Any] = {
        "batch_size": draw(st.sampled_from([1, 4, 8, 16])),
        "seq_len": draw(st.sampled_from([256, 512, 2048])),
    }
    if draw(st.integers(0, 4)) == 0:
        hyper["max_steps"] = draw(st.integers(10, 50_000))
    else:
        hyper["epochs"] = draw(st.sampled_from([1, 2, 3]))
    spec = job(
        method=draw(st.sampled_from(["full", "lora"])),
        policy=policy,
        hyperparameters=hyper,
        checkpoint={"every_steps": draw(st.sampled_from([50, 500, 5000]))},
    )
    return spec, draw(st.sampled_from(MODELS)), draw(st.integers(10_000, 5_000_000_000))


def eligible(spec: JobSpec, options: list[Estimate]) -> list[Estimate]:
    """Options the policy may pick, by the rules the module documents, computed independently."""
    out = []
    for o in options:
        if (
            not o.fits
            or o.kind == "tpu"
            or (spec.policy.spot == "never" and o.spot)
            or (spec.policy.spot == "always" and not o.spot)
        ):
            continue
        allowed = spec.policy.allowed_accelerators
        if allowed is not None:
            names = {a.lower() for a in allowed}
            if not (
                (o.kind == "cpu" and "cpu" in names)
                or (o.kind == "tpu" and "tpu" in names)
                or (o.accelerator_family or "").lower() in names
                or (o.accelerator or "").lower() in names
            ):
                continue
        if spec.policy.max_cost_usd is not None and o.cost_usd > spec.policy.max_cost_usd:
            continue
        out.append(o)
    return out


PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(jobs(objective="budget"))
def test_budget_never_exceeds_the_budget(case: tuple[JobSpec, ModelInfo, int]) -> None:
    spec, model, tokens = case
    options = options_for(spec, model, tokens)
    try:
        decision = choose(spec, options)
    except NoFeasibleOption as exc:
        assert not eligible(spec, options), exc.message
        return
    assert spec.policy.max_cost_usd is not None
    assert decision.chosen.cost_usd <= spec.policy.max_cost_usd
    assert decision.chosen.seconds == min(o.seconds for o in eligible(spec, options))


@PROPERTY
@given(jobs(objective="deadline"))
def test_deadline_never_misses_when_an_option_meets_it(case: tuple[JobSpec, ModelInfo, int]) -> None:
    spec, model, tokens = case
    options = options_for(spec, model, tokens)
    try:
        decision = choose(spec, options)
    except NoFeasibleOption:
        assert not eligible(spec, options)
        return
    candidates = eligible(spec, options)
    in_time = [o for o in candidates if o.meets_deadline]
    if in_time:
        assert decision.chosen.meets_deadline
        assert decision.chosen.cost_usd == min(o.cost_usd for o in in_time)
    else:
        assert decision.chosen.seconds == min(o.seconds for o in candidates)


@PROPERTY
@given(jobs(objective="cheapest"))
def test_cheapest_is_never_dearer_than_any_eligible_option(case: tuple[JobSpec, ModelInfo, int]) -> None:
    spec, model, tokens = case
    options = options_for(spec, model, tokens)
    try:
        decision = choose(spec, options)
    except NoFeasibleOption:
        assert not eligible(spec, options)
        return
    assert all(decision.chosen.cost_usd <= o.cost_usd for o in eligible(spec, options))


@PROPERTY
@given(st.lists(jobs(), min_size=1, max_size=8))
def test_choose_many_agrees_with_choose(cases: list[tuple[JobSpec, ModelInfo, int]]) -> None:
    batch = choose_many(cases, shipped_catalog(), now=NOW)
    for (spec, model, tokens), got in zip(cases, batch, strict=True):
        try:
            decision = choose(spec, options_for(spec, model, tokens))
        except NoFeasibleOption as exc:
            assert got.error_code == exc.code
            continue
        assert got.error_code is None
        assert (got.instance_type, got.spot) == (decision.chosen.instance_type, decision.chosen.spot)
        assert got.seconds == decision.chosen.seconds and got.cost_usd == decision.chosen.cost_usd
        assert got.meets_deadline == decision.chosen.meets_deadline


@PROPERTY
@given(
    st.lists(jobs(), min_size=1, max_size=8),
    st.lists(
        st.sampled_from([None, "local-cpu", "g5.xlarge", "p5.48xlarge", "v6e-8", "x9.mega"]), min_size=8
    ),
    st.sampled_from(
        [None, frozenset({"local-cpu", "c7i.2xlarge"}), frozenset({"g5.xlarge", "p5.48xlarge", "v6e-8"})]
    ),
)
def test_choose_many_agrees_with_choose_among_pools_and_pins(
    cases: list[tuple[JobSpec, ModelInfo, int]], pins: list[str | None], available: frozenset[str] | None
) -> None:
    pinned = [
        (spec.model_copy(update={"instance_type": pin}), model, tokens)
        for (spec, model, tokens), pin in zip(cases, pins, strict=False)
    ]
    batch = choose_many(pinned, shipped_catalog(), now=NOW, available=available)
    for (spec, model, tokens), got in zip(pinned, batch, strict=True):
        try:
            decision = decide_now(spec, model, tokens, available=available)
        except NoFeasibleOption as exc:
            assert got.error_code == exc.code
            continue
        assert got.error_code is None
        assert (got.instance_type, got.spot) == (decision.chosen.instance_type, decision.chosen.spot)
        assert got.seconds == decision.chosen.seconds and got.cost_usd == decision.chosen.cost_usd
