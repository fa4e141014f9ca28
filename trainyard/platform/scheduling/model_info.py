"""What the estimator needs to know about a model, read cheaply at submit time.

The model's ``config.json`` gives the architecture, from which the parameter count follows
(embeddings + per-layer attention + MLP), without downloading weights. The dataset's side is
``dataset_tokens``.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from trainyard.platform.spec import JobSpec

ReadBytes = Callable[[str], bytes]

# Llama-style models use a gated MLP (gate, up and down projections); GPT-NeoX-style ones two.
_GATED_MLP_TYPES = frozenset(
    {
        "llama",
        "mistral",
        "mixtral",
        "qwen2",
        "qwen2_moe",
        "qwen3",
        "qwen3_moe",
        "gemma",
        "gemma2",
        "gemma3",
        "gemma3_text",
        "phi3",
        "olmo",
        "olmo2",
        "granite",
        "cohere",
        "starcoder2_gated",
        "deepseek_v2",
        "deepseek_v3",
        "internlm2",
        "yi",
    }
)
_GATED_ACTIVATIONS = frozenset({"silu", "swiglu", "swish", "gelu_pytorch_tanh_gated"})
_BERT_TYPES = frozenset(
    {"bert", "roberta", "xlm-roberta", "electra", "camembert", "ernie", "deberta", "deberta-v2"}
)
# Qwen2-family attention carries q/k/v biases even though its config does not say attention_bias.
_QKV_BIAS_TYPES = frozenset({"qwen2", "qwen2_moe"})


class EstimateInputError(ValueError):
    """The estimator lacks an input it cannot guess (model size, dataset size)."""

    code = "estimate_input_missing"

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


@dataclass(frozen=True, slots=True)
class ModelInfo:
    parameters: int
    layers: int | None = None
    hidden_size: int | None = None
    vocab_size: int | None = None
    heads: int | None = None
    kv_heads: int | None = None
    intermediate_size: int | None = None
    model_type: str | None = None
    # "config" when counted from config.json, "spec" when taken from the job's model_parameters.
    source: str = "config"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------------------------
# Parameter count from a config


def _first(cfg: Mapping[str, Any], *keys: str) -> Any:
    for key in keys:
        value = cfg.get(key)
        if value is not None:
            return value
    return None


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value) if value > 0 else None


def count_parameters(config: Mapping[str, Any]) -> int | None:
    """Parameters of a GPT-2, BERT or Llama/Mistral/Qwen-like model; None if the config is not enough."""
    info = model_info_from_config(config)
    return info.parameters if info else None


def model_info_from_config(config: Mapping[str, Any]) -> ModelInfo | None:
    """Architecture and parameter count from a Hugging Face ``config.json`` mapping."""
    cfg: Mapping[str, Any] = config
    # Multimodal wrappers (Gemma 3, Llava, ...) keep the language model under text_config.
    if (
        "text_config" in cfg
        and isinstance(cfg["text_config"], Mapping)
        and _first(cfg, "hidden_size") is None
    ):
        inner = dict(cfg["text_config"])
        inner.setdefault("model_type", cfg.get("model_type"))
        inner.setdefault("vocab_size", cfg.get("vocab_size"))
        cfg = inner
    model_type = str(cfg.get("model_type") or "").lower()
    try:
        if model_type == "gpt2" or ("n_embd" in cfg and "n_layer" in cfg):
            return _gpt2(cfg, model_type or "gpt2")
        if model_type in _BERT_TYPES or model_type == "distilbert" or "type_vocab_size" in cfg:
            return _bert(cfg, model_type or "bert")
        return _decoder(cfg, model_type)
    except (TypeError, ValueError):
        return None


def _gpt2(cfg: Mapping[str, Any], model_type: str) -> ModelInfo | None:
    d = _int(cfg.get("n_embd"))
    layers = _int(cfg.get("n_layer"))
    vocab = _int(cfg.get("vocab_size"))
    heads = _int(cfg.get("n_head"))
    if not (d and layers and vocab):
        return None
    positions = _int(_first(cfg, "n_positions", "n_ctx")) or 1024
    inner = _int(cfg.get("n_inner")) or 4 * d
    per_layer = (
        2 * d  # ln_1
        + d * 3 * d
        + 3 * d  # c_attn
        + d * d
        + d  # attn c_proj
        + 2 * d  # ln_2
        + d * inner
        + inner  # mlp c_fc
        + inner * d
        + d  # mlp c_proj
    )
    total = vocab * d + positions * d + layers * per_layer + 2 * d  # wte, wpe, blocks, ln_f (lm_head tied)
    return ModelInfo(total, layers, d, vocab, heads, heads, inner, model_type)


def _bert(cfg: Mapping[str, Any], model_type: str) -> ModelInfo | None:
    d = _int(_first(cfg, "hidden_size", "dim"))
    layers = _int(_first(cfg, "num_hidden_layers", "n_layers"))
    vocab = _int(cfg.get("vocab_size"))
    heads = _int(_first(cfg, "num_attention_heads", "n_heads"))
    if not (d and layers and vocab):
        return None
    inner = _int(_first(cfg, "intermediate_size", "hidden_dim")) or 4 * d
    positions = _int(cfg.get("max_position_embeddings")) or 512
    types = int(cfg.get("type_vocab_size", 0 if model_type == "distilbert" else 2) or 0)
    embeddings = vocab * d + positions * d + types * d + 2 * d
    per_layer = 4 * (d * d + d) + 2 * d + (d * inner + inner) + (inner * d + d) + 2 * d
    pooler = 0 if model_type == "distilbert" else d * d + d
    total = embeddings + layers * per_layer + pooler
    return ModelInfo(total, layers, d, vocab, heads, heads, inner, model_type)


def _decoder(cfg: Mapping[str, Any], model_type: str) -> ModelInfo | None:
    d = _int(_first(cfg, "hidden_size", "d_model"))
    layers = _int(_first(cfg, "num_hidden_layers", "num_layers", "n_layers"))
    vocab = _int(cfg.get("vocab_size"))
    if not (d and layers and vocab):
        return None
    heads = _int(_first(cfg, "num_attention_heads", "n_heads")) or max(1, d // 128)
    kv_heads = _int(_first(cfg, "num_key_value_heads", "num_kv_heads")) or heads
    head_dim = _int(cfg.get("head_dim")) or d // heads
    inner = _int(_first(cfg, "intermediate_size", "ffn_dim", "ffn_hidden_size")) or 4 * d
    act = str(_first(cfg, "hidden_act", "activation_function") or "").lower()
    gated = model_type in _GATED_MLP_TYPES or act in _GATED_ACTIVATIONS
    mlp_bias = bool(cfg.get("mlp_bias", False)) or (not gated and model_type in {"gpt_neox", "opt", "falcon"})
    attn_bias = bool(cfg.get("attention_bias", False)) or model_type in _QKV_BIAS_TYPES

    q = d * heads * head_dim
    kv = 2 * d * kv_heads * head_dim
    o = heads * head_dim * d
    attention = q + kv + o
    if attn_bias:
        attention += heads * head_dim + 2 * kv_heads * head_dim
    mats = 3 if gated else 2
    mlp = mats * d * inner + (inner * (mats - 1) + d if mlp_bias else 0)
    experts = _int(_first(cfg, "num_local_experts", "num_experts", "n_routed_experts"))
    if experts and experts > 1:
        expert_inner = _int(cfg.get("moe_intermediate_size")) or inner
        mlp = experts * mats * d * expert_inner + d * experts  # experts + router
        shared = _int(cfg.get("shared_expert_intermediate_size"))
        if shared:
            mlp += mats * d * shared + d
    norms = 2 * d
    per_layer = attention + mlp + norms
    tied = bool(cfg.get("tie_word_embeddings", False))
    total = vocab * d + layers * per_layer + d + (0 if tied else vocab * d)
    return ModelInfo(total, layers, d, vocab, heads, kv_heads, inner, model_type or None)


# --------------------------------------------------------------------------------------------
# Reading config.json


def read_model_config(
    base_model: str,
    *,
    read_bytes: ReadBytes | None = None,
    hub_timeout_s: float = 5.0,
) -> dict[str, Any] | None:
    """The model's config.json as a dict, or None if it cannot be read. Never raises.

    ``base_model`` is a local directory (or ``file://`` URI), an ``s3://`` directory read through
    the caller's ``read_bytes``, or a Hugging Face hub id. The hub is asked with a short timeout
    and not at all (beyond the local cache) when ``HF_HUB_OFFLINE`` is set.
    """
    try:
        if base_model.startswith("s3://"):
            if read_bytes is None:
                return None
            return _parse_json(read_bytes(base_model.rstrip("/") + "/config.json"))
        local = base_model[len("file://") :] if base_model.startswith("file://") else base_model
        path = Path(local).expanduser()
        if path.is_dir():
            cfg_path = path / "config.json"
            return _parse_json(cfg_path.read_bytes()) if cfg_path.is_file() else None
        if path.is_file() and path.name == "config.json":
            return _parse_json(path.read_bytes())
        if _looks_like_hub_id(base_model):
            return _hub_config(base_model, hub_timeout_s)
    except Exception:
        # The estimate falls back to the spec's hint; a broken config must not fail a submission.
        return None
    return None


def _parse_json(data: bytes) -> dict[str, Any] | None:
    value = json.loads(data)
    return value if isinstance(value, dict) else None


def _looks_like_hub_id(value: str) -> bool:
    if "://" in value or value.startswith(("/", ".", "~")) or value.count("/") > 1:
        return False
    return all(part and all(c.isalnum() or c in "-_." for c in part) for part in value.split("/"))


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _hub_config(repo_id: str, timeout_s: float) -> dict[str, Any] | None:
    offline = _hub_offline()
    result: list[dict[str, Any] | None] = [None]

    def fetch() -> None:
        try:
            from huggingface_hub import hf_hub_download

            # Offline: only the local cache. Online: the etag check is bounded by the timeout.
            local = hf_hub_download(
                repo_id, "config.json", local_files_only=offline, etag_timeout=max(timeout_s, 0.1)
            )
            result[0] = _parse_json(Path(local).read_bytes())
        except Exception:
            result[0] = None

    # A daemon thread bounds the whole call: hub downloads can retry past their own timeouts.
    worker = threading.Thread(target=fetch, name="trainyard-hub-config", daemon=True)
    worker.start()
    worker.join(timeout_s)
    return result[0] if not worker.is_alive() else None


def resolve_model_info(
    spec: JobSpec,
    *,
    config: Mapping[str, Any] | None = None,
    read_bytes: ReadBytes | None = None,
    hub_timeout_s: float = 5.0,
) -> ModelInfo:
    """ModelInfo for a job: from its config.json if readable, else from spec.model_parameters.

    Raises EstimateInputError(param="model_parameters") when neither gives a parameter count.
    """
    cfg = (
        config
        if config is not None
        else read_model_config(spec.base_model, read_bytes=read_bytes, hub_timeout_s=hub_timeout_s)
    )
    info = model_info_from_config(cfg) if cfg else None
    if info is not None:
        return info
    if spec.model_parameters is not None:
        return ModelInfo(parameters=spec.model_parameters, source="spec")
    raise EstimateInputError(
        f"cannot tell the size of model {spec.base_model!r}: its config.json could not be read; "
        "set model_parameters on the job to estimate it",
        param="model_parameters",
    )
