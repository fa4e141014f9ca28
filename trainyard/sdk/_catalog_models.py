"""Catalog responses: instance types and the models a job may start from."""

from __future__ import annotations

from trainyard.sdk._model_base import TrainyardModel


class InstanceType(TrainyardModel):
    name: str
    object: str = "instance_type"
    kind: str | None = None
    accelerator: str | None = None
    accelerator_count: int = 0
    accelerator_memory_gb: float | None = None
    vcpus: int | None = None
    ram_gb: float | None = None
    on_demand_usd_per_hour: float | None = None
    spot_usd_per_hour: float | None = None
    nodes: int | None = None
    workers: int | None = None
    interconnect: str | None = None
    provider: str | None = None
    region: str | None = None
    # Whether this deployment has a pool that can run it, and how many at once.
    available: bool | None = None
    max_concurrent: int | None = None
    # Whether the platform has a tested way to run jobs on it (TPUs: not yet), and if not, why.
    runnable: bool | None = None
    runnable_reason: str | None = None


class Model(TrainyardModel):
    """A model a job may start from: a base model the platform knows (`source` "registry" or
    "cache") or one of the team's fine-tuned models ("fine_tuned"), as `/v1/models` lists them."""

    id: str
    object: str = "model"
    created: int | None = None
    owned_by: str | None = None
    source: str | None = None
    parameters: int | None = None
    layers: int | None = None
    hidden_size: int | None = None
    vocab_size: int | None = None
    context_length: int | None = None
    model_type: str | None = None
    license: str | None = None
    # Fine-tuned models: what they were trained from, by which job, and where the model lies.
    base_model: str | None = None
    job_id: str | None = None
    uri: str | None = None
    method: str | None = None
