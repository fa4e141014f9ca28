"""Resource namespaces: `client.jobs`, `client.estimates`, `client.costs`, `client.instance_types`,
`client.queue`."""

from __future__ import annotations

from trainyard.sdk.resources.costs import AsyncCosts, Costs
from trainyard.sdk.resources.estimates import AsyncEstimates, Estimates
from trainyard.sdk.resources.instance_types import AsyncInstanceTypes, InstanceTypes
from trainyard.sdk.resources.jobs import AsyncJobs, Jobs
from trainyard.sdk.resources.queue import AsyncQueue, Queue

__all__ = [
    "AsyncCosts",
    "AsyncEstimates",
    "AsyncInstanceTypes",
    "AsyncJobs",
    "AsyncQueue",
    "Costs",
    "Estimates",
    "InstanceTypes",
    "Jobs",
    "Queue",
]
