"""The file service behind the OpenAI-compatible `/v1/files`: upload (validated line by line), list,
get, content, delete, and the mapping from `file-...` ids to the storage URIs jobs read.

Files live in the object store under ``files/{id}/`` and are described by a `File` row. Jobs never
hold a file id: `resolve_file_uri` turns one into the URI at submit time, so workers, the planner
and cost reports only ever see URIs, as they do for jobs that name ``s3://`` data directly.
Like jobs, a key sees its own team's files (another team's file is a 404); admin keys see all.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TypeVar

from sqlalchemy import Select, select, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from trainyard.platform import db, records, states, storage
from trainyard.platform.auth import Principal
from trainyard.platform.errors import Conflict, InvalidRequest, NotFound, PayloadTooLarge
from trainyard.platform.models import Job
from trainyard.platform.models_files import FILE_ID_PREFIX, File, new_file_id
from trainyard.platform.spec import JobSpec

# OpenAI's limit for one fine-tuning file; TRAINYARD_MAX_FILE_BYTES changes it.
DEFAULT_MAX_FILE_BYTES = 512 * storage.MB
MAX_FILE_PAGE = 10_000  # OpenAI's file list allows up to 10,000 per page
PURPOSE_FINE_TUNE = "fine-tune"
PURPOSE_RESULTS = "fine-tune-results"
UPLOAD_PURPOSES = (PURPOSE_FINE_TUNE,)
MAX_FILENAME_CHARS = 255
# Each uploaded file is the one object under its own prefix, so delete_prefix removes exactly it.
_OBJECT_NAME = "data.jsonl"

S = TypeVar("S", bound=JobSpec)


def max_file_bytes(settings: object) -> int:
    """The upload limit: `settings.max_file_bytes` when the settings carry one, else the default."""
    value = getattr(settings, "max_file_bytes", None)
    return int(value) if value else DEFAULT_MAX_FILE_BYTES


def file_key(file_id: str) -> str:
    return storage.safe_key("files", file_id, _OBJECT_NAME)


# ------------------------------------------------------------------------------------ validation


def validate_jsonl(lines: Iterable[bytes], *, filename: str = "file") -> int:
    """Check every line of a fine-tuning JSONL file (`records.read_records`); return how many
    records it holds. Raises InvalidRequest naming the first bad line."""
    try:
        return sum(1 for _ in records.read_records(lines))
    except records.RecordError as exc:
        raise InvalidRequest(exc.describe(filename), code="invalid_file_format", param="file") from None


# -------------------------------------------------------------------------------------- service


def _clean_filename(filename: str | None) -> str:
    # Browsers and clients may send a path; only its last part names the file.
    name = (filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if c.isprintable()).strip()
    return (name or "upload.jsonl")[:MAX_FILENAME_CHARS]


def upload_file(
    session: Session,
    principal: Principal,
    store: storage.ObjectStore,
    stream: IO[bytes],
    *,
    filename: str | None,
    purpose: str,
    max_bytes: int = DEFAULT_MAX_FILE_BYTES,
) -> File:
    """Validate and store an uploaded JSONL file; nothing is stored when any line is bad."""
    if purpose not in UPLOAD_PURPOSES:
        raise InvalidRequest(
            f"purpose must be one of {', '.join(UPLOAD_PURPOSES)}, got {purpose!r}",
            code="invalid_purpose",
            param="purpose",
        )
    name = _clean_filename(filename)
    fd, tmp_name = tempfile.mkstemp(prefix="trainyard-upload-", suffix=".jsonl")
    try:
        with os.fdopen(fd, "wb") as tmp:
            size = 0

            def lines() -> Iterable[bytes]:
                nonlocal size
                for raw in stream:
                    size += len(raw)
                    if size > max_bytes:
                        raise PayloadTooLarge(
                            f"{name} is larger than the {max_bytes}-byte limit for files",
                            code="file_too_large",
                            param="file",
                        )
                    tmp.write(raw)
                    yield raw

            count = validate_jsonl(lines(), filename=name)
        file_id = new_file_id()
        uri = store.put_file(file_key(file_id), tmp_name)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
    row = File(
        id=file_id,
        team_id=principal.team_id,
        api_key_id=principal.key_id,
        filename=name,
        purpose=purpose,
        bytes=size,
        uri=uri,
        status="processed",
        line_count=count,
    )
    session.add(row)
    session.flush()
    session.refresh(row)  # created_at comes from the database
    return row


def _visible(principal: Principal) -> Select[File]:
    query = select(File).where(File.deleted_at.is_(None))
    if not principal.is_admin:
        query = query.where(File.team_id == principal.team_id)
    return query


def get_file(session: Session, principal: Principal, file_id: str, *, param: str = "file_id") -> File:
    row = session.scalar(_visible(principal).where(File.id == file_id))
    if row is None:
        raise NotFound(f"no file {file_id!r}", code="file_not_found", param=param)
    return row


def list_files(
    session: Session,
    principal: Principal,
    *,
    purpose: str | None = None,
    after: str | None = None,
    limit: int = MAX_FILE_PAGE,
    order: str = "desc",
) -> tuple[list[File], bool]:
    """Files by creation time (newest first by default), keyset-paginated by `after` (a file id)."""
    if not 1 <= limit <= MAX_FILE_PAGE:
        raise InvalidRequest(f"limit must be between 1 and {MAX_FILE_PAGE}", param="limit")
    if order not in ("asc", "desc"):
        raise InvalidRequest("order must be 'asc' or 'desc'", param="order")
    query = _visible(principal)
    if purpose is not None:
        query = query.where(File.purpose == purpose)
    key = tuple_(File.created_at, File.id)
    if after is not None:
        cursor = session.scalar(_visible(principal).where(File.id == after))
        if cursor is None:
            raise InvalidRequest(f"no file {after!r} to page after", param="after")
        mark = tuple_(cursor.created_at, cursor.id)
        query = query.where(key < mark if order == "desc" else key > mark)
    if order == "desc":
        query = query.order_by(File.created_at.desc(), File.id.desc())
    else:
        query = query.order_by(File.created_at.asc(), File.id.asc())
    rows = list(session.scalars(query.limit(limit + 1)))
    return rows[:limit], len(rows) > limit


def _uri_in_use(session: Session, uri: str) -> Job | None:
    """An unfinished job that will read `uri`, if any."""
    return session.scalar(
        select(Job)
        .where(
            Job.status.not_in(states.TERMINAL),
            (Job.spec.op("->>")("training_file") == uri) | (Job.spec.op("->>")("validation_file") == uri),
        )
        .limit(1)
    )


def delete_file(session: Session, principal: Principal, store: storage.ObjectStore, file_id: str) -> File:
    """Forget a file and remove its object. A file an unfinished job still needs is kept (409):
    deleting it would only make that job fail later, far from the mistake.

    The object goes first, with no transaction open, and the row after: a delete that fails
    between the two leaves the file listed, and the same delete, retried, finishes the job."""
    row = get_file(session, principal, file_id)
    user = _uri_in_use(session, row.uri)
    if user is not None:
        # An admin of another team may have a job on it: that job is not the caller's to see.
        shown = principal.is_admin or user.team_id == principal.team_id
        raise Conflict(
            f"file {file_id} is used by job {user.id}, which is {user.status}; cancel it first"
            if shown
            else f"file {file_id} is used by another team's unfinished job; delete it once that job ends",
            code="file_in_use",
            param="file_id",
        )
    db.release(session)
    # Result files point at a job's own report, which stays with the job.
    if row.purpose == PURPOSE_FINE_TUNE:
        store.delete_prefix(storage.safe_key("files", row.id))
    locked = session.scalar(_visible(principal).where(File.id == file_id).with_for_update())
    if locked is None:  # a concurrent delete got there first
        raise NotFound(f"no file {file_id!r}", code="file_not_found", param="file_id")
    locked.deleted_at = datetime.now(UTC)
    session.flush()
    return locked


def copy_content(row: File, dest: str | Path) -> Path:
    """Copy the file's object to the local path `dest` (streamed, never whole in memory)."""
    root, _, name = row.uri.rpartition("/")
    storage.open_store(root).get_file(name, dest)
    return Path(dest)


# --------------------------------------------------------------------------- ids <-> storage URIs


def resolve_file_uri(
    session: Session, principal: Principal, value: str, *, param: str = "training_file"
) -> str:
    """The storage URI behind `value` when it is a `file-...` id; any other value is returned as is.

    An unknown id, a deleted one or another team's is a 404; a file uploaded for another purpose
    is a 400.
    """
    if not value.startswith(FILE_ID_PREFIX):
        return value
    row = session.scalar(_visible(principal).where(File.id == value))
    if row is None:
        raise NotFound(f"{param}: no file {value!r}", code="file_not_found", param=param)
    if row.purpose != PURPOSE_FINE_TUNE:
        raise InvalidRequest(
            f"{param}: file {value} has purpose {row.purpose!r}; upload it with purpose 'fine-tune'",
            code="invalid_file_purpose",
            param=param,
        )
    return row.uri


def resolve_spec_files(session: Session, principal: Principal, spec: S) -> S:
    """`spec` with its training and validation files resolved to storage URIs (a copy; the same
    object when there is nothing to resolve)."""
    update: dict[str, str] = {}
    for param in ("training_file", "validation_file"):
        value = getattr(spec, param, None)
        if isinstance(value, str) and value.startswith(FILE_ID_PREFIX):
            update[param] = resolve_file_uri(session, principal, value, param=param)
    return spec.model_copy(update=update) if update else spec


def file_ids_for_uris(session: Session, uris: Iterable[str | None], *, team_id: str) -> dict[str, str]:
    """Map storage URIs back to the ids of `team_id`'s files stored there (deleted files included,
    so a job keeps naming the file it trained on). Another team's file (an admin's job may read
    one) stays a URI: its id is that team's."""
    wanted = {u for u in uris if u}
    if not wanted:
        return {}
    rows = session.execute(
        select(File.uri, File.id).where(
            File.uri.in_(wanted), File.purpose == PURPOSE_FINE_TUNE, File.team_id == team_id
        )
    )
    return {uri: file_id for uri, file_id in rows}


def _result_file_id(job_id: str) -> str:
    # Derived from the job, so concurrent readers of a finished job agree on one row.
    return FILE_ID_PREFIX + hashlib.sha256(f"results:{job_id}".encode()).hexdigest()[:24]


def result_file_ids(session: Session, jobs: Sequence[Job]) -> dict[str, list[str]]:
    """Job id -> the ids of its result files: its cost report, registered as a `fine-tune-results`
    file the first time the job is shown, so `files.content(...)` can fetch it."""
    reports = {job.id: (job, str(uri)) for job in jobs if (uri := (job.result or {}).get("cost_report_uri"))}
    if not reports:
        return {}
    ids = {job_id: _result_file_id(job_id) for job_id in reports}
    known = {
        row.id: row.deleted_at is None
        for row in session.scalars(select(File).where(File.id.in_(list(ids.values()))))
    }
    unknown = [job_id for job_id, file_id in ids.items() if file_id not in known]
    if unknown:
        db.release(session)  # the reports are read from the store with no transaction open
    sizes: dict[str, int] = {}
    for job_id in unknown:
        try:
            sizes[job_id] = storage.uri_size(reports[job_id][1])
        except (storage.StorageError, OSError):
            continue  # not readable now; the next look registers it
    for job_id, size in sizes.items():
        job, uri = reports[job_id]
        session.execute(
            pg_insert(File)
            .values(
                id=ids[job_id],
                team_id=job.team_id,
                api_key_id=job.api_key_id,
                filename=f"{job.id}-cost_report.json",
                purpose=PURPOSE_RESULTS,
                bytes=size,
                uri=uri,
                status="processed",
                line_count=0,
            )
            .on_conflict_do_nothing(index_elements=["id"])
        )
        known[ids[job_id]] = True
    return {job_id: [file_id] for job_id, file_id in ids.items() if known.get(file_id)}
