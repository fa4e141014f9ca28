"""Scheduling: the instance catalog, the run estimator and the cost/speed policies.

Pure Python over data files; no database and no HTTP. Planning calls ``resolve_model_info`` /
``resolve_dataset_tokens`` once per job, then ``estimate_all`` + ``choose``; ``choose_many``
applies the same rules to a whole queue at once.

    catalog_files    reading the data files, CatalogError
    accelerators     the accelerator table
    instance_types   one catalog row and its checks
    constants        the estimator's assumptions
    catalog          the Catalog and load_catalog
    model_info       model size from config.json
    dataset_tokens   dataset size in tokens
    throughput       learned throughput from finished runs
    profiles         memory plan, speed and start-up per job shape and instance type
    estimator        one job's run length and price per option
    ranking          the policy rules: eligibility, fit, budget, order
    policies         choosing for one job: Decision, NoFeasibleOption
    batch            choosing for many jobs at once
    pools            the pools a deployment runs
"""

from __future__ import annotations

from trainyard.platform.scheduling.accelerators import Accelerator
from trainyard.platform.scheduling.batch import BatchChoice, choose_many
from trainyard.platform.scheduling.catalog import DEFAULT_CATALOG_PATH, Catalog, load_catalog
from trainyard.platform.scheduling.catalog_files import CatalogError
from trainyard.platform.scheduling.constants import EstimatorConstants, load_constants
from trainyard.platform.scheduling.dataset_tokens import count_dataset_tokens, resolve_dataset_tokens
from trainyard.platform.scheduling.estimator import (
    Estimate,
    estimate,
    estimate_all,
    format_duration,
    format_usd,
)
from trainyard.platform.scheduling.instance_types import InstanceType
from trainyard.platform.scheduling.model_info import (
    EstimateInputError,
    ModelInfo,
    count_parameters,
    model_info_from_config,
    read_model_config,
    resolve_model_info,
)
from trainyard.platform.scheduling.policies import Decision, NoFeasibleOption, choose
from trainyard.platform.scheduling.pools import (
    Pool,
    PoolConfigError,
    available_types,
    default_pools,
    parse_pools,
)
from trainyard.platform.scheduling.profiles import MemoryBreakdown
from trainyard.platform.scheduling.ranking import accelerator_allowed
from trainyard.platform.scheduling.throughput import LearnedThroughput, ThroughputObservation, throughput_key

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
