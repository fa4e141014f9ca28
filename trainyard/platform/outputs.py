"""What a job leaves behind, read back for its own team: the final model's files and the cost
report.

A job's final model is the `save_pretrained` directory its result names; it is served only when
it lies under the job's own prefix in this deployment's store (`jobs/{id}/...`), whatever the
result says, so a key reaches no object but its team's jobs' outputs. The cost report is the one
published at the job's end (`jobs/{id}/cost_report.json`) or, before then, the same report built
from the ledger as it stands.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from trainyard.platform import db, jobs, storage
from trainyard.platform.auth import Principal
from trainyard.platform.costs import reports
from trainyard.platform.errors import NotFound
from trainyard.platform.models import Job
from trainyard.platform.storage.keys import join_uri

__all__ = ["cost_report", "fetch_final_model_file", "final_model_files"]


def _final_model_prefix(store: storage.ObjectStore, job: Job) -> tuple[str, str]:
    """(key prefix, URI) of the job's final model in `store`; NotFound while there is none."""
    uri = (job.result or {}).get("final_model_uri")
    if not uri:
        raise NotFound(
            f"job {job.id} has no final model (it is {job.status})",
            code="final_model_not_found",
            param="job_id",
        )
    own = join_uri(store.root_uri, storage.job_prefix(job.id)) + "/"
    if not str(uri).startswith(own):
        # Written by an older layout or another store: not something this API may hand out.
        raise NotFound(
            f"job {job.id}'s final model is not in this deployment's store",
            code="final_model_not_found",
            param="job_id",
        )
    key = str(uri)[len(store.root_uri) :].lstrip("/").rstrip("/")
    return storage.safe_key(key), str(uri)


def final_model_files(
    session: Session, principal: Principal, store: storage.ObjectStore, job_id: str
) -> dict[str, Any]:
    """The final model's files, each with its path relative to the model directory and its size."""
    job = jobs.get_job(session, principal, job_id)
    prefix, uri = _final_model_prefix(store, job)
    db.release(session)  # the listing and the HEADs hold no connection
    keys = store.list(prefix)
    if not keys:
        raise NotFound(f"job {job.id}'s final model has no files", code="final_model_not_found")
    data = [{"path": key[len(prefix) + 1 :], "bytes": store.size(key)} for key in keys]
    return {
        "object": "list",
        "job_id": job.id,
        "uri": uri,
        "data": data,
        "has_more": False,
        "total_bytes": sum(f["bytes"] for f in data),
    }


def fetch_final_model_file(
    session: Session,
    principal: Principal,
    store: storage.ObjectStore,
    job_id: str,
    path: str,
    dest: str | Path,
) -> Path:
    """Copy one file of the job's final model (`path`, relative to the model directory) to the
    local `dest`; NotFound when the model has no such file."""
    job = jobs.get_job(session, principal, job_id)
    prefix, _uri = _final_model_prefix(store, job)
    try:
        key = storage.safe_key(prefix, path)
    except storage.InvalidKey as exc:
        raise NotFound(f"no file {path!r} in job {job.id}'s final model", param="path") from exc
    db.release(session)
    try:
        store.get_file(key, dest)
    except storage.ObjectNotFound:
        raise NotFound(
            f"no file {path!r} in job {job.id}'s final model", code="final_model_not_found", param="path"
        ) from None
    return Path(dest)


def cost_report(
    session: Session, principal: Principal, store: storage.ObjectStore, job_id: str
) -> dict[str, Any]:
    """The job's cost report with `uri` (where it was published, None before the job ended)."""
    job = jobs.get_job(session, principal, job_id)
    if (job.result or {}).get("cost_report_uri"):
        # Read at the job's own key, never at a URI taken from a column.
        key = storage.cost_report_key(job.id)
        db.release(session)
        try:
            report: dict[str, Any] = json.loads(store.get_bytes(key))
            return {**report, "uri": store.uri_for(key)}
        except (storage.ObjectNotFound, ValueError):
            pass  # lost or unreadable in the store: the ledger still has every figure
    return {**reports.cost_report(session, job.id), "uri": None}
