"""The run estimator: model size from configs, dataset tokens, memory fit, time, cost, learning.

Golden figures are worked by hand from the constants file; see the comments on each.
"""

from __future__ import annotations

import json
import math
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from trainyard.platform.scheduling import (
    Catalog,
    Estimate,
    EstimateInputError,
    InstanceType,
    LearnedThroughput,
    ModelInfo,
    ThroughputObservation,
    count_dataset_tokens,
    count_parameters,
    estimate,
    estimate_all,
    load_catalog,
    model_info_from_config,
    read_model_config,
    resolve_dataset_tokens,
    resolve_model_info,
)
from trainyard.platform.spec import JobSpec

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)

GPT2 = {
    "model_type": "gpt2",
    "n_embd": 768,
    "n_layer": 12,
    "n_head": 12,
    "vocab_size": 50257,
    "n_positions": 1024,
}
BERT_BASE = {
    "model_type": "bert",
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "vocab_size": 30522,
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
}
LLAMA3_8B = {
    "model_type": "llama",
    "hidden_size": 4096,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "intermediate_size": 14336,
    "vocab_size": 128256,
    "hidden_act": "silu",
    "tie_word_embeddings": False,
}
LLAMA3_70B = LLAMA3_8B | {
    "hidden_size": 8192,
    "num_hidden_layers": 80,
    "num_attention_heads": 64,
    "intermediate_size": 28672,
}
QWEN25_05B = {
    "model_type": "qwen2",
    "hidden_size": 896,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "intermediate_size": 4864,
    "vocab_size": 151936,
    "hidden_act": "silu",
    "tie_word_embeddings": True,
}
MISTRAL_7B = LLAMA3_8B | {"model_type": "mistral", "vocab_size": 32000}


def model(config: dict[str, Any]) -> ModelInfo:
    info = model_info_from_config(config)
    assert info is not None
    return info


def job(**overrides: Any) -> JobSpec:
    fields: dict[str, Any] = {"name": "t", "base_model": "org/model", "training_file": "s3://b/train.jsonl"}
    return JobSpec(**(fields | overrides))


def spot_estimate(
    spec: JobSpec, itype: InstanceType, catalog: Catalog, m: ModelInfo, tokens: int
) -> Estimate:
    """The spot option as production plans it: from ``estimate_all``."""
    options = estimate_all(spec, catalog, m, tokens, now=NOW)
    return next(o for o in options if o.instance_type == itype.name and o.spot)


# --- model size ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (GPT2, 124_439_808),  # gpt2 on the hub
        (BERT_BASE, 109_482_240),  # bert-base-uncased, with pooler
        (LLAMA3_8B, 8_030_261_248),  # Meta-Llama-3-8B
        (LLAMA3_70B, 70_553_706_496),  # Meta-Llama-3-70B
        (MISTRAL_7B, 7_241_732_096),  # Mistral-7B-v0.1
        (QWEN25_05B, 494_032_768),  # Qwen2.5-0.5B (q/k/v biases, tied embeddings)
    ],
)
def test_parameter_count_from_architecture(config: dict[str, Any], expected: int) -> None:
    assert count_parameters(config) == expected


def test_multimodal_wrapper_and_unknown_configs() -> None:
    wrapped = {"model_type": "gemma3", "text_config": LLAMA3_8B | {"model_type": "gemma3_text"}}
    assert count_parameters(wrapped) == count_parameters(LLAMA3_8B)
    assert count_parameters({"model_type": "mystery"}) is None
    assert count_parameters({"hidden_size": "big", "num_hidden_layers": 2, "vocab_size": 10}) is None


def test_read_config_from_a_local_dir_and_file_uri(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(GPT2))
    assert read_model_config(str(tmp_path)) == GPT2
    assert read_model_config(f"file://{tmp_path}") == GPT2
    assert read_model_config(str(tmp_path / "nothing-here")) is None
    (tmp_path / "config.json").write_text("{not json")
    assert read_model_config(str(tmp_path)) is None


def test_read_config_from_s3_through_the_injected_reader() -> None:
    seen: list[str] = []

    def read_bytes(uri: str) -> bytes:
        seen.append(uri)
        return json.dumps(LLAMA3_8B).encode()

    assert read_model_config("s3://bucket/models/llama/", read_bytes=read_bytes) == LLAMA3_8B
    assert seen == ["s3://bucket/models/llama/config.json"]
    assert read_model_config("s3://bucket/models/llama") is None  # no reader: unknown, not an error

    def broken(uri: str) -> bytes:
        raise OSError("denied")

    assert read_model_config("s3://bucket/x", read_bytes=broken) is None


def test_hub_lookup_honours_offline_mode(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    started = time.monotonic()
    assert read_model_config("some-org/not-cached-model", hub_timeout_s=2.0) is None
    assert time.monotonic() - started < 2.5


def test_resolve_model_info_falls_back_to_the_hint(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(GPT2))
    assert resolve_model_info(job(base_model=str(tmp_path))).parameters == 124_439_808
    hinted = resolve_model_info(job(base_model=str(tmp_path / "missing"), model_parameters=7_000_000_000))
    assert hinted == ModelInfo(parameters=7_000_000_000, source="spec")
    with pytest.raises(EstimateInputError) as info:
        resolve_model_info(job(base_model=str(tmp_path / "missing")))
    assert info.value.param == "model_parameters"
    assert isinstance(info.value, ValueError)


# --- dataset tokens -----------------------------------------------------------------------


def test_dataset_tokens_from_jsonl() -> None:
    lines = [
        {"text": "a" * 400},  # 100 tokens at 4 chars/token
        {"text": "b" * 40, "label": 1},  # 10
        {
            "messages": [{"role": "user", "content": "c" * 80}, {"role": "assistant", "content": "d" * 80}]
        },  # 40 + 2x4
        {"prompt": "e" * 20, "completion": "f" * 20},  # 10
    ]
    data = ("\n".join(json.dumps(x) for x in lines) + "\nnot json\n\n[1,2]\n").encode()
    assert count_dataset_tokens(data, chars_per_token=4.0) == 100 + 10 + 48 + 10
    # Each example is truncated to seq_len, as training does.
    assert count_dataset_tokens(data, chars_per_token=4.0, seq_len=20) == 20 + 10 + 20 + 10


def test_dataset_tokens_count_only_what_uploads_and_training_accept() -> None:
    # The estimate reads records as uploads and training do: a shape they refuse trains nothing.
    refused = [{"input": "a" * 400, "output": "b" * 400}, {"completion": "c" * 400}]
    accepted = {"prompt": "d" * 20, "completion": "e" * 20}
    data = "\n".join(json.dumps(x) for x in [*refused, accepted]).encode()
    assert count_dataset_tokens(data, chars_per_token=4.0) == 10


def test_resolve_dataset_tokens() -> None:
    data = json.dumps({"text": "x" * 4000}).encode()
    assert resolve_dataset_tokens(job(), data) == 512  # 1000 tokens, capped at the default seq_len
    assert resolve_dataset_tokens(job(dataset_tokens=5_000), None) == 5_000
    assert resolve_dataset_tokens(job(dataset_tokens=5_000), b"garbage") == 5_000
    assert resolve_dataset_tokens(job(hyperparameters={"max_steps": 10}), None) == 0
    with pytest.raises(EstimateInputError) as info:
        resolve_dataset_tokens(job(), None)
    assert info.value.param == "dataset_tokens"


# --- memory fit ---------------------------------------------------------------------------


def test_125m_full_fine_tune_fits_a_24gb_gpu(catalog: Catalog) -> None:
    # 124.4M params x (4 weights + 4 grads + 8 Adam) = 1.99 GB; activations 34 x (8 x 512) x 768 x 12
    # = 1.28 GB; fp32 logits 4096 x 50257 x 4 = 0.82 GB; 1 GB framework: 5.1 GB of 22.8 usable.
    for name in ("g6.xlarge", "g5.xlarge"):
        e = estimate(job(), catalog[name], catalog, model(GPT2), 10_000_000, now=NOW)
        assert e.fits and e.strategy == "single" and not e.gradient_checkpointing
        assert e.memory.weights_gb == pytest.approx(0.498, abs=0.001)
        assert e.memory.gradients_gb == pytest.approx(0.498, abs=0.001)
        assert e.memory.optimizer_gb == pytest.approx(0.996, abs=0.001)
        assert e.memory.activations_gb == pytest.approx(1.284 + 0.823, abs=0.01)
        assert e.memory.total_gb == pytest.approx(5.1, abs=0.05)
        assert e.memory.capacity_gb == pytest.approx(22.8)


def test_70b_full_fine_tune_fits_no_single_gpu(catalog: Catalog) -> None:
    # 70.6B x 16 bytes = 1.13 TB of model state: more than any device, even sharded over 8 H200s.
    options = estimate_all(job(), catalog, model(LLAMA3_70B), 10_000_000, now=NOW)
    assert not any(e.fits for e in options if e.kind == "gpu")
    assert not any(e.fits for e in options)
    single = next(e for e in options if e.instance_type == "p5e.48xlarge")
    assert single.memory.total_gb > single.memory.capacity_gb
    assert "does not fit" in single.reason


def test_lora_on_8b_fits_an_a10g_with_bf16_weights(catalog: Catalog) -> None:
    # Frozen base in bf16: 8.03B x 2 = 16.06 GB; the adapter (0.5% at r=16) adds ~0.6 GB of state.
    # Full activations of the asked-for micro-batch (8 x 512 tokens, 18 GB) would not fit 22.8 GB;
    # micro-batch 2 with 4 accumulation steps (the same 8 sequences per step) does, and its shorter
    # kernels (0.71 x) cost less than recomputing every layer (4/6 = 0.67 x).
    e = estimate(job(method="lora"), catalog["g5.xlarge"], catalog, model(LLAMA3_8B), 10_000_000, now=NOW)
    assert e.fits
    assert e.memory.weights_gb == pytest.approx(16.06 + 0.16, abs=0.05)
    assert e.trainable_parameters == pytest.approx(0.005 * 8_030_261_248, rel=1e-6)
    assert (e.micro_batch_size, e.gradient_accumulation_steps, e.gradient_checkpointing) == (2, 4, False)
    assert e.memory.total_gb <= e.memory.capacity_gb
    full = estimate(job(method="full"), catalog["g5.xlarge"], catalog, model(LLAMA3_8B), 10_000_000, now=NOW)
    assert not full.fits


def test_multi_gpu_full_fine_tune_shards_when_replicas_do_not_fit(catalog: Catalog) -> None:
    # 8B full = 128 GB of state: no replica fits an 80 GB A100, an 8-way shard (16 GB) does.
    e = estimate(job(), catalog["p4de.24xlarge"], catalog, model(LLAMA3_8B), 10_000_000, now=NOW)
    assert e.fits and e.strategy == "fsdp"
    assert e.memory.optimizer_gb == pytest.approx(8_030_261_248 * 8 / 8 / 1e9, rel=1e-6)
    small = estimate(job(), catalog["p4de.24xlarge"], catalog, model(GPT2), 10_000_000, now=NOW)
    assert small.fits and small.strategy == "ddp"
    assert small.memory.weights_gb == pytest.approx(0.498, abs=0.001)  # replicated, not divided


# --- time and cost ------------------------------------------------------------------------


def test_tokens_flops_and_seconds_by_hand(catalog: Catalog) -> None:
    spec = job(method="lora", hyperparameters={"epochs": 2})
    e = estimate(spec, catalog["gpu_1x_h100_sxm5"], catalog, model(LLAMA3_8B), 50_000_000, now=NOW)
    params = 8_030_261_248
    assert e.tokens == 100_000_000
    # LoRA: 4 x N per token, attention 6 x layers x seq x hidden, adapter 6 x trainable.
    per_token = 4 * params + 6 * 32 * 512 * 4096 + 6 * e.trainable_parameters
    if e.gradient_checkpointing:
        per_token += 2 * params
    assert e.flops == pytest.approx(per_token * 1e8, rel=1e-9)
    # One H100 at 989 TFLOP/s x 0.40 utilisation (8B saturates it: no small-model penalty).
    assert e.tokens_per_second == pytest.approx(989e12 * 0.40 / per_token, rel=1e-9)
    assert e.compute_seconds == pytest.approx(1e8 / e.tokens_per_second)
    # Start-up: 180 s for a GPU plus the bf16 model at 0.5 GB/s.
    assert e.startup_seconds == pytest.approx(180 + params * 2 / 0.5e9)
    assert e.seconds == pytest.approx(e.startup_seconds + e.compute_seconds)
    assert e.cost_usd == pytest.approx(e.seconds / 3600 * 3.99)
    assert e.usd_per_million_tokens == pytest.approx(e.cost_usd / 100)
    assert e.throughput_source == "model"


def test_full_fine_tune_costs_six_flops_per_parameter_token(catalog: Catalog) -> None:
    e = estimate(job(), catalog["p5.48xlarge"], catalog, model(LLAMA3_8B), 1_000_000, now=NOW)
    attention = 6 * 32 * 512 * 4096
    extra = 2 * 8_030_261_248 if e.gradient_checkpointing else 0
    assert e.flops == pytest.approx((6 * 8_030_261_248 + attention + extra) * 1_000_000)


def test_max_steps_tokens_count_every_worker(catalog: Catalog) -> None:
    spec = job(
        hyperparameters={"max_steps": 100, "batch_size": 4, "gradient_accumulation_steps": 2, "seq_len": 256}
    )
    single = estimate(spec, catalog["g6.xlarge"], catalog, model(GPT2), 0, now=NOW)
    eight = estimate(spec, catalog["p4d.24xlarge"], catalog, model(GPT2), 0, now=NOW)
    assert single.tokens == 100 * 4 * 2 * 256
    assert eight.tokens == 8 * single.tokens
    assert single.steps == eight.steps == 100


def test_no_tokens_is_an_input_error(catalog: Catalog) -> None:
    with pytest.raises(EstimateInputError):
        estimate(job(), catalog["g6.xlarge"], catalog, model(GPT2), 0, now=NOW)


def test_spot_pays_for_interruptions(catalog: Catalog) -> None:
    itype = catalog["g6.xlarge"]
    spec = job(method="lora", checkpoint={"every_steps": 500})
    od = estimate(spec, itype, catalog, model(LLAMA3_8B), 20_000_000, now=NOW)
    spot = spot_estimate(spec, itype, catalog, model(LLAMA3_8B), 20_000_000)
    assert spot.spot and not od.spot
    assert spot.seconds > od.seconds
    # Each interruption: 300 s restart + model reload + half a checkpoint interval of lost work.
    step = 8 * 512 / od.tokens_per_second
    per_interruption = 300 + 8_030_261_248 * 2 / 0.5e9 + 0.5 * 500 * step
    rate = 0.05 / 3600
    assert spot.seconds == pytest.approx(od.seconds / (1 - rate * per_interruption))
    assert spot.expected_preemptions == pytest.approx(rate * spot.seconds)
    assert spot.cost_usd == pytest.approx(spot.seconds / 3600 * 0.40)
    assert od.spot_cost_usd == pytest.approx(spot.cost_usd) and spot.on_demand_cost_usd == pytest.approx(
        od.cost_usd
    )
    assert spot.cost_usd < od.cost_usd
    # Checkpointing less often loses more work per interruption.
    rare = spot_estimate(
        job(method="lora", checkpoint={"every_steps": 5000}), itype, catalog, model(LLAMA3_8B), 20_000_000
    )
    assert rare.seconds > spot.seconds
    # A type without a spot price has no spot option, and no spot price to charge.
    h100 = catalog["gpu_1x_h100_sxm5"]
    assert not any(
        o.spot
        for o in estimate_all(spec, catalog, model(LLAMA3_8B), 1_000, now=NOW)
        if o.instance_type == h100.name
    )
    with pytest.raises(ValueError, match="no spot price"):
        h100.price(spot=True)


def test_deadline_and_budget_flags(catalog: Catalog) -> None:
    spec = job(policy={"objective": "deadline", "deadline": NOW + timedelta(hours=2), "max_cost_usd": 1.0})
    fast = estimate(spec, catalog["g6.xlarge"], catalog, model(GPT2), 1_000_000, now=NOW)
    assert fast.deadline_seconds == 7200 and fast.meets_deadline and fast.within_budget
    slow = estimate(spec, catalog["c7i.2xlarge"], catalog, model(GPT2), 100_000_000, now=NOW)
    assert slow.meets_deadline is False
    plain = estimate(job(), catalog["g6.xlarge"], catalog, model(GPT2), 1_000_000, now=NOW)
    assert plain.meets_deadline is None and plain.within_budget is None


def test_cpu_is_orders_of_magnitude_slower(catalog: Catalog) -> None:
    cpu = estimate(job(), catalog["c7i.8xlarge"], catalog, model(GPT2), 1_000_000, now=NOW)
    gpu = estimate(job(), catalog["g6.xlarge"], catalog, model(GPT2), 1_000_000, now=NOW)
    assert cpu.fits and cpu.strategy == "ddp" and cpu.workers == 4
    assert gpu.tokens_per_second > 20 * cpu.tokens_per_second


def test_estimate_all_lists_on_demand_and_spot(catalog: Catalog) -> None:
    options = estimate_all(job(), catalog, model(GPT2), 1_000_000, now=NOW)
    spot_priced = sum(1 for t in catalog if t.spot_usd_per_hour is not None)
    assert len(options) == len(catalog) + spot_priced
    assert [o.option for o in options[:3]] == ["local-cpu", "c7i.2xlarge", "c7i.2xlarge spot"]
    # Each type's spot option is its on-demand run with the spot figures: the same tokens, plan and speed.
    od, spot = (o for o in options if o.instance_type == "c7i.2xlarge")
    assert (spot.seconds, spot.cost_usd) == (od.spot_seconds, od.spot_cost_usd)
    assert (spot.tokens, spot.strategy, spot.tokens_per_second) == (
        od.tokens,
        od.strategy,
        od.tokens_per_second,
    )
    json.dumps(options[0].to_dict())  # serialisable as is
    assert options[0].to_dict()["memory"]["capacity_gb"] > 0


# --- learning from measured runs ----------------------------------------------------------


def test_measured_throughput_at_half_speed_doubles_the_run(catalog: Catalog) -> None:
    itype = catalog["g5.xlarge"]
    spec = job(method="lora")
    m = model(LLAMA3_8B)
    assumed = estimate(spec, itype, catalog, m, 200_000_000, now=NOW)
    observations = [
        ThroughputObservation.for_instance(
            itype,
            model_parameters=m.parameters,
            method="lora",
            tokens_per_second=assumed.tokens_per_second / 2,
        ),
        # A 7B run at half speed, scaled by the parameter ratio, says the same.
        ThroughputObservation(7_000_000_000, "lora", "A10G", 1, assumed.tokens_per_second / 2 * 8.03 / 7.0),
        # Not comparable: other method, other accelerator, a model 3x the size.
        ThroughputObservation(m.parameters, "full", "A10G", 1, 1.0),
        ThroughputObservation(m.parameters, "lora", "L4", 1, 1.0),
        ThroughputObservation(3 * m.parameters, "lora", "A10G", 1, 1.0),
    ]
    learned = LearnedThroughput.from_observations(observations)
    measured = estimate(spec, itype, catalog, m, 200_000_000, now=NOW, learned=learned)
    assert measured.throughput_source == "learned" and measured.throughput_runs == 2
    assert "tok/s (learned from 2 runs)" in measured.reason
    assert measured.tokens_per_second == pytest.approx(assumed.tokens_per_second / 2, rel=0.01)
    assert measured.seconds == pytest.approx(2 * assumed.seconds, rel=0.10)
    # Types with no comparable observation keep the model's prediction.
    other = estimate(spec, catalog["gpu_1x_a100_sxm4"], catalog, m, 200_000_000, now=NOW, learned=learned)
    assert other.throughput_source == "model" and other.throughput_runs == 0
    assert "tok/s (model)" in other.reason


def test_learned_throughput_uses_the_median_and_scales_device_count() -> None:
    learned = LearnedThroughput(
        [
            ThroughputObservation(1_000_000_000, "full", "H100", 8, 80_000.0),
            ThroughputObservation(1_000_000_000, "full", "H100", 8, 100_000.0),
            ThroughputObservation(1_000_000_000, "full", "H100", 8, 1_000_000.0),  # an outlier
        ]
    )
    tps = learned.tokens_per_second(
        model_parameters=1_000_000_000, method="full", accelerator="H100", accelerator_count=8
    )
    assert tps == 100_000.0
    found = learned.lookup(model_parameters=10**9, method="full", accelerator="H100", accelerator_count=8)
    assert found is not None and found.runs == 3
    half_size = learned.tokens_per_second(
        model_parameters=2_000_000_000, method="full", accelerator="H100", accelerator_count=8
    )
    assert half_size == 50_000.0
    one_gpu = learned.tokens_per_second(
        model_parameters=1_000_000_000, method="full", accelerator="H100", accelerator_count=1
    )
    assert one_gpu == pytest.approx(12_500.0)
    assert (
        learned.tokens_per_second(
            model_parameters=10**9, method="lora", accelerator="H100", accelerator_count=8
        )
        is None
    )
    assert len(learned) == 3


def test_estimates_are_quick(catalog: Catalog) -> None:
    specs = [job(hyperparameters={"batch_size": b}) for b in (1, 2, 4, 8)]
    started = time.perf_counter()
    for _ in range(25):
        for spec in specs:
            estimate_all(spec, catalog, model(GPT2), 1_000_000, now=NOW)
    per_job = (time.perf_counter() - started) / 100
    assert per_job < 0.01
    assert math.isfinite(per_job)


def test_the_estimate_cache_is_bounded_and_keyed_by_what_was_learned() -> None:
    catalog = load_catalog()
    catalog.estimate_cache.max_entries = 2 * len(catalog)
    m = ModelInfo(parameters=124_000_000, source="spec")
    runs = [ThroughputObservation(m.parameters, "full", "cpu", 8, 500.0)]
    for batch in (1, 2, 4, 8, 16):
        estimate_all(job(hyperparameters={"batch_size": batch}), catalog, m, 10**6, now=NOW)
    # Many shapes keep only the newest: a long-running API does not grow without bound.
    assert len(catalog.estimate_cache) == 2 * len(catalog)
    spec = job(hyperparameters={"batch_size": 16})
    misses = catalog.estimate_cache.misses
    estimate_all(spec, catalog, m, 10**6, now=NOW)
    assert catalog.estimate_cache.misses == misses
    # Learned throughput read again from the same runs is the same key; other runs are not.
    estimate_all(spec, catalog, m, 10**6, now=NOW, learned=LearnedThroughput(runs))
    misses = catalog.estimate_cache.misses
    estimate_all(spec, catalog, m, 10**6, now=NOW, learned=LearnedThroughput(list(runs)))
    assert catalog.estimate_cache.misses == misses
    faster = [ThroughputObservation(m.parameters, "full", "cpu", 8, 900.0)]
    estimate_all(spec, catalog, m, 10**6, now=NOW, learned=LearnedThroughput(faster))
    assert catalog.estimate_cache.misses == misses + len(catalog)
