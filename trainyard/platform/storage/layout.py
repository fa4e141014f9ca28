"""Where the platform keeps what a job leaves behind, under the store at TRAINYARD_STORAGE_URI::

jobs/{job_id}/attempts/{n}/checkpoints/...  attempt n's Ray Train storage (RunConfig storage_path)
jobs/{job_id}/attempts/{n}/final/           the model attempt n trained (save_pretrained)
jobs/{job_id}/attempts/{n}/logs/{offset}.log attempt n's process output, in the order written
jobs/{job_id}/checkpoints/..., sweep/...    a sweep's trials (Tune restores its experiment)
jobs/{job_id}/cost_report.json
datasets/...

An attempt writes only under its own prefix, and what it wrote becomes the job's only through a
fenced database write (a checkpoint row, the job's result): a stale attempt, still running after
another took its job over, can neither overwrite nor delete the newer attempt's files.
"""

from __future__ import annotations

from trainyard.platform.storage.errors import InvalidKey
from trainyard.platform.storage.keys import safe_key

__all__ = [
    "attempt_prefix",
    "checkpoints_prefix",
    "cost_report_key",
    "dataset_key",
    "final_model_prefix",
    "job_prefix",
    "logs_prefix",
]


def _single_segment(value: str, what: str) -> str:
    # An id with a '/' would pass safe_key and quietly nest one job's objects under another's.
    if "/" in value:
        raise InvalidKey(f"{what} must not contain '/': {value!r}")
    return safe_key(value)


def job_prefix(job_id: str) -> str:
    """``jobs/{job_id}``: everything a job writes lives under this prefix."""
    return safe_key("jobs", _single_segment(job_id, "job id"))


def attempt_prefix(job_id: str, attempt: int) -> str:
    """``jobs/{job_id}/attempts/{attempt:03d}``: what attempt number ``attempt`` writes."""
    if attempt < 1:
        raise InvalidKey(f"attempt numbers start at 1: {attempt}")
    return safe_key(job_prefix(job_id), "attempts", f"{attempt:03d}")


def checkpoints_prefix(job_id: str, attempt: int | None = None) -> str:
    """Pass to ``ObjectStore.ray_storage`` for Ray Train's RunConfig: ``jobs/{job_id}/attempts/
    {n}/checkpoints`` for an attempt, ``jobs/{job_id}/checkpoints`` for a sweep's trials."""
    base = job_prefix(job_id) if attempt is None else attempt_prefix(job_id, attempt)
    return safe_key(base, "checkpoints")


def final_model_prefix(job_id: str, attempt: int) -> str:
    """``jobs/{job_id}/attempts/{n}/final``: the model an attempt trained (save_pretrained)."""
    return safe_key(attempt_prefix(job_id, attempt), "final")


def logs_prefix(job_id: str, attempt: int) -> str:
    """``jobs/{job_id}/attempts/{n}/logs``: attempt n's output, in segments named by byte offset."""
    return safe_key(attempt_prefix(job_id, attempt), "logs")


def cost_report_key(job_id: str) -> str:
    """``jobs/{job_id}/cost_report.json``: the job's cost report, as JSON."""
    return safe_key(job_prefix(job_id), "cost_report.json")


def dataset_key(*parts: str) -> str:
    """``datasets/...``: uploaded datasets."""
    return safe_key("datasets", *parts)
