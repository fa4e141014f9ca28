"""Where the platform keeps what a job leaves behind, under the store at TRAINYARD_STORAGE_URI::

jobs/{job_id}/checkpoints/...     Ray Train's storage (RunConfig storage_path/storage_filesystem)
jobs/{job_id}/final/              the trained model, a save_pretrained directory
jobs/{job_id}/cost_report.json
datasets/...
"""

from __future__ import annotations

from trainyard.platform.storage.errors import InvalidKey
from trainyard.platform.storage.keys import safe_key

__all__ = ["checkpoints_prefix", "cost_report_key", "dataset_key", "final_model_prefix", "job_prefix"]


def _single_segment(value: str, what: str) -> str:
    # An id with a '/' would pass safe_key and quietly nest one job's objects under another's.
    if "/" in value:
        raise InvalidKey(f"{what} must not contain '/': {value!r}")
    return safe_key(value)


def job_prefix(job_id: str) -> str:
    """``jobs/{job_id}``: everything a job writes lives under this prefix."""
    return safe_key("jobs", _single_segment(job_id, "job id"))


def checkpoints_prefix(job_id: str) -> str:
    """``jobs/{job_id}/checkpoints``: pass to ``ObjectStore.ray_storage`` for Ray Train's RunConfig."""
    return safe_key(job_prefix(job_id), "checkpoints")


def final_model_prefix(job_id: str) -> str:
    """``jobs/{job_id}/final``: the trained model as a save_pretrained directory."""
    return safe_key(job_prefix(job_id), "final")


def cost_report_key(job_id: str) -> str:
    """``jobs/{job_id}/cost_report.json``: the job's cost report, as JSON."""
    return safe_key(job_prefix(job_id), "cost_report.json")


def dataset_key(*parts: str) -> str:
    """``datasets/...``: uploaded datasets."""
    return safe_key("datasets", *parts)
