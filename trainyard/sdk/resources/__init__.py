"""Resource namespaces: `client.jobs`, `client.estimates`, `client.costs`, `client.instance_types`,
`client.models`."""

from __future__ import annotations

from trainyard.sdk.resources.costs import AsyncCosts, Costs
from trainyard.sdk.resources.estimates import AsyncEstimates, Estimates
from trainyard.sdk.resources.instance_types import AsyncInstanceTypes, InstanceTypes
from trainyard.sdk.resources.jobs import AsyncJobs, Jobs
from trainyard.sdk.resources.models import AsyncModels, Models

__all__ = [
    "AsyncCosts",
    "AsyncEstimates",
    "AsyncInstanceTypes",
    "AsyncJobs",
    "AsyncModels",
    "Costs",
    "Estimates",
    "InstanceTypes",
    "Jobs",
    "Models",
]
