"""Scheduling: the instance catalog, the run estimator and the cost/speed policies.

Pure Python over data files; no database and no HTTP. The job service and the dispatcher call
``resolve_model_info`` / ``resolve_dataset_tokens`` once per job, then ``decide`` (or
``estimate_all`` + ``choose``), and ``choose_many`` to plan a whole queue.
"""

from __future__ import annotations

from trainyard.platform.scheduling.catalog import (
    DEFAULT_CATALOG_PATH,
    Accelerator,
    Catalog,
    CatalogError,
    EstimatorConstants,
    InstanceType,
    load_catalog,
    load_constants,
)
from trainyard.platform.scheduling.estimator import (
    Estimate,
    LearnedThroughput,
    MemoryBreakdown,
    ThroughputObservation,
    estimate,
    estimate_all,
    format_duration,
    format_usd,
    throughput_key,
)
from trainyard.platform.scheduling.model_info import (
    EstimateInputError,
    ModelInfo,
    count_dataset_tokens,
    count_parameters,
    model_info_from_config,
    read_model_config,
    resolve_dataset_tokens,
    resolve_model_info,
)
from trainyard.platform.scheduling.policies import (
    BatchChoice,
    Decision,
    NoFeasibleOption,
    accelerator_allowed,
    choose,
    choose_many,
    decide,
)
from trainyard.platform.scheduling.pools import (
    Pool,
    PoolConfigError,
    available_types,
    default_pools,
    parse_pools,
)

__all__ = [
    "DEFAULT_CATALOG_PATH",
    "Accelerator",
    "BatchChoice",
    "Catalog",
    "CatalogError",
    "Decision",
    "Estimate",
    "EstimateInputError",
    "EstimatorConstants",
    "InstanceType",
    "LearnedThroughput",
    "MemoryBreakdown",
    "ModelInfo",
    "NoFeasibleOption",
    "Pool",
    "PoolConfigError",
    "ThroughputObservation",
    "accelerator_allowed",
    "available_types",
    "choose",
    "choose_many",
    "count_dataset_tokens",
    "count_parameters",
    "decide",
    "default_pools",
    "estimate",
    "estimate_all",
    "format_duration",
    "format_usd",
    "load_catalog",
    "load_constants",
    "model_info_from_config",
    "parse_pools",
    "read_model_config",
    "resolve_dataset_tokens",
    "resolve_model_info",
    "throughput_key",
]
