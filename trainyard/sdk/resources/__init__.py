"""Resource namespaces: `client.jobs`, `client.estimates`, `client.costs`, `client.instance_types`,
`client.queue`, `client.files`, `client.budgets`, `client.models`."""

from __future__ import annotations

from trainyard.sdk.resources.budgets import AsyncBudgets, Budgets
from trainyard.sdk.resources.costs import AsyncCosts, Costs
from trainyard.sdk.resources.estimates import AsyncEstimates, Estimates
from trainyard.sdk.resources.files import AsyncFiles, Files
from trainyard.sdk.resources.instance_types import AsyncInstanceTypes, InstanceTypes
from trainyard.sdk.resources.jobs import AsyncJobs, Jobs
from trainyard.sdk.resources.models import AsyncModels, Models
from trainyard.sdk.resources.queue import AsyncQueue, Queue

__all__ = [
    "AsyncBudgets",
    "AsyncCosts",
    "AsyncEstimates",
    "AsyncFiles",
    "AsyncInstanceTypes",
    "AsyncJobs",
    "AsyncModels",
    "AsyncQueue",
    "Budgets",
    "Costs",
    "Estimates",
    "Files",
    "InstanceTypes",
    "Jobs",
    "Models",
    "Queue",
]
