"""The estimator's assumptions (``estimator_constants.yaml``): FLOPs per token, utilisation, memory
per parameter, start-up, spot interruptions, billing. Data, so they can be replaced without code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from trainyard.platform.scheduling.catalog_files import HERE, CatalogError, load_yaml, non_negative, positive
from trainyard.platform.scheduling.instance_types import KINDS

DEFAULT_CONSTANTS_PATH = HERE / "estimator_constants.yaml"


@dataclass(frozen=True, slots=True)
class EstimatorConstants:
    """The estimator's assumptions, loaded from ``estimator_constants.yaml``."""

    full_flops_per_param_token: float
    lora_flops_per_param_token: float
    recompute_flops_per_param_token: float
    attention_flops_factor: float
    utilisation_by_accelerator: Mapping[str, float]
    utilisation_default_gpu: float
    utilisation_default_tpu: float
    small_model_params_per_peak_tflop: float
    small_model_exponent: float
    small_model_floor: float
    micro_batch_saturating_tokens: float
    micro_batch_exponent: float
    cpu_effective_gflops_per_vcpu: float
    scaling_efficiency: Mapping[str, float]
    fsdp_efficiency: float
    full_bytes_weights: float
    full_bytes_gradients: float
    full_bytes_optimizer: float
    lora_frozen_bytes: float
    lora_trainable_bytes_weights: float
    lora_trainable_bytes_gradients: float
    lora_trainable_bytes_optimizer: float
    lora_trainable_fraction_at_r16: float
    activation_factor: float
    checkpointed_activation_factor: float
    logits_bytes_per_element: float
    usable_memory_fraction: float
    framework_overhead_gb: float
    cpu_framework_overhead_gb: float
    fsdp_gathered_layers: float
    startup_seconds_by_kind: Mapping[str, float]
    startup_seconds_by_instance: Mapping[str, float]
    model_load_gb_per_s: float
    spot_preemptions_per_hour: Mapping[str, float]
    spot_restart_overhead_seconds: float
    spot_max_overhead_fraction: float
    min_billed_seconds: float
    chars_per_token: float
    chat_overhead_tokens_per_message: float
    learning_max_parameter_ratio: float
    source: str = ""
    as_of: str = ""

    def utilisation(self, accelerator: str, kind: str) -> float:
        if accelerator in self.utilisation_by_accelerator:
            return self.utilisation_by_accelerator[accelerator]
        return self.utilisation_default_tpu if kind == "tpu" else self.utilisation_default_gpu


def load_constants(path: str | Path | None = None) -> EstimatorConstants:
    const_path = Path(path) if path is not None else DEFAULT_CONSTANTS_PATH
    doc = load_yaml(const_path)
    p = str(const_path)

    def get(dotted: str) -> Any:
        node: Any = doc
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                raise CatalogError("is required", path=p, field=dotted)
            node = node[part]
        return node

    def pos(dotted: str) -> float:
        return positive(get(dotted), path=p, field=dotted)

    def frac(dotted: str) -> float:
        value = pos(dotted)
        if value > 1:
            raise CatalogError(f"must be a fraction in (0, 1], got {value}", path=p, field=dotted)
        return value

    def table(dotted: str, *, fraction: bool = False, keys: tuple[str, ...] = ()) -> Mapping[str, float]:
        raw = get(dotted)
        if not isinstance(raw, dict):
            raise CatalogError("expected a mapping", path=p, field=dotted)
        out = {}
        for key, value in raw.items():
            fld = f"{dotted}.{key}"
            out[str(key)] = (
                positive(value, path=p, field=fld) if fraction else non_negative(value, path=p, field=fld)
            )
            if fraction and out[str(key)] > 1:
                raise CatalogError(f"must be a fraction in (0, 1], got {value}", path=p, field=fld)
        for key in keys:
            if key not in out:
                raise CatalogError("is required", path=p, field=f"{dotted}.{key}")
        return MappingProxyType(out)

    return EstimatorConstants(
        full_flops_per_param_token=pos("flops.full_per_param_token"),
        lora_flops_per_param_token=pos("flops.lora_per_param_token"),
        recompute_flops_per_param_token=non_negative(
            get("flops.recompute_per_param_token"), path=p, field="flops.recompute_per_param_token"
        ),
        attention_flops_factor=non_negative(
            get("flops.attention_per_layer_seq_hidden"), path=p, field="flops.attention_per_layer_seq_hidden"
        ),
        utilisation_by_accelerator=table("utilisation.by_accelerator", fraction=True),
        utilisation_default_gpu=frac("utilisation.default_gpu"),
        utilisation_default_tpu=frac("utilisation.default_tpu"),
        small_model_params_per_peak_tflop=pos("utilisation.small_model_params_per_peak_tflop"),
        small_model_exponent=pos("utilisation.small_model_exponent"),
        small_model_floor=frac("utilisation.small_model_floor"),
        micro_batch_saturating_tokens=pos("utilisation.micro_batch_saturating_tokens"),
        micro_batch_exponent=pos("utilisation.micro_batch_exponent"),
        cpu_effective_gflops_per_vcpu=pos("cpu_effective_gflops_per_vcpu"),
        scaling_efficiency=table("scaling_efficiency", fraction=True),
        fsdp_efficiency=frac("fsdp_efficiency"),
        full_bytes_weights=pos("memory.full.weights"),
        full_bytes_gradients=pos("memory.full.gradients"),
        full_bytes_optimizer=pos("memory.full.optimizer"),
        lora_frozen_bytes=pos("memory.lora_frozen_weights"),
        lora_trainable_bytes_weights=pos("memory.lora_trainable.weights"),
        lora_trainable_bytes_gradients=pos("memory.lora_trainable.gradients"),
        lora_trainable_bytes_optimizer=pos("memory.lora_trainable.optimizer"),
        lora_trainable_fraction_at_r16=frac("memory.lora_trainable_fraction_at_r16"),
        activation_factor=pos("memory.activation_factor"),
        checkpointed_activation_factor=pos("memory.checkpointed_activation_factor"),
        logits_bytes_per_element=pos("memory.logits_bytes_per_element"),
        usable_memory_fraction=frac("memory.usable_fraction"),
        framework_overhead_gb=non_negative(
            get("memory.framework_overhead_gb"), path=p, field="memory.framework_overhead_gb"
        ),
        cpu_framework_overhead_gb=non_negative(
            get("memory.cpu_framework_overhead_gb"), path=p, field="memory.cpu_framework_overhead_gb"
        ),
        fsdp_gathered_layers=pos("memory.fsdp_gathered_layers"),
        startup_seconds_by_kind=table("startup_seconds.by_kind", keys=KINDS),
        startup_seconds_by_instance=table("startup_seconds.by_instance"),
        model_load_gb_per_s=pos("model_load_gb_per_s"),
        spot_preemptions_per_hour=table("spot.preemptions_per_hour", keys=KINDS),
        spot_restart_overhead_seconds=non_negative(
            get("spot.restart_overhead_seconds"), path=p, field="spot.restart_overhead_seconds"
        ),
        spot_max_overhead_fraction=frac("spot.max_overhead_fraction"),
        min_billed_seconds=non_negative(
            get("billing.min_billed_seconds"), path=p, field="billing.min_billed_seconds"
        ),
        chars_per_token=pos("dataset.chars_per_token"),
        chat_overhead_tokens_per_message=non_negative(
            get("dataset.chat_overhead_tokens_per_message"),
            path=p,
            field="dataset.chat_overhead_tokens_per_message",
        ),
        learning_max_parameter_ratio=pos("learning.max_parameter_ratio"),
        source=str(doc.get("source", "")),
        as_of=str(doc.get("as_of", "")),
    )


_DEFAULT_CONSTANTS: list[EstimatorConstants] = []


def default_constants() -> EstimatorConstants:
    """The shipped constants, loaded once on first use (never at import)."""
    if not _DEFAULT_CONSTANTS:
        _DEFAULT_CONSTANTS.append(load_constants())
    return _DEFAULT_CONSTANTS[0]
