"""Before an attempt reads a byte: its sources checked again, and its files there.

The API checked the sources at submit; the attempt checks again, as the job's team, because a
grant can be revoked or a link changed in between (defence in depth).
"""

from __future__ import annotations

import logging
import time

from sqlalchemy.orm import Session, sessionmaker

from trainyard.platform import storage
from trainyard.platform.models import ApiKey, Job
from trainyard.platform.outages import Outage
from trainyard.platform.sources import Reader, SourcePolicy, SourceRefused
from trainyard.platform.spec import JobSpec
from trainyard.settings import Settings

log = logging.getLogger("trainyard.attempt")


class UserError(Exception):
    """The job cannot run as specified (missing dataset, unreadable model): no retry."""

    def __init__(self, message: str, code: str = "user_error") -> None:
        super().__init__(message)
        self.code = code


def check_sources(settings: Settings, sessions: sessionmaker[Session], job: Job, spec: JobSpec) -> JobSpec:
    """The source policy again, as the job's team; returns the spec as checked."""
    policy = SourcePolicy.from_settings(settings)
    with sessions() as s:
        key = s.get(ApiKey, job.api_key_id) if job.api_key_id else None
        reader = Reader(job.team_id, is_admin=key is not None and key.role == "admin")
        try:
            return policy.check_spec(s, reader, spec)
        except SourceRefused as exc:
            raise UserError(exc.message, code=exc.code) from None


def check_readable(spec: JobSpec, *, patience: float = 120.0) -> None:
    """That the data files are there (HEAD/stat), without reading them.

    A store that does not answer is waited for (logged once, backing off) for up to `patience`
    seconds, rather than spending one of the job's attempts on a blip; a file that is not there
    is the user's error at once."""
    for param in ("training_file", "validation_file"):
        uri = getattr(spec, param)
        if uri is None:
            continue
        outage = Outage(log, f"the store, reading {param} {uri}")
        until = time.monotonic() + patience
        while True:
            try:
                storage.uri_size(uri)
            except (storage.ObjectNotFound, storage.InvalidKey, FileNotFoundError) as exc:
                raise UserError(f"{param} {uri!r} cannot be read: {exc}") from exc
            except storage.StorageError as exc:
                pause = outage.failed(exc)
                if time.monotonic() + pause > until:
                    raise
                time.sleep(pause)
                continue
            outage.recovered()
            break
