"""The source policy: which parsed sources a team's job may read.

Allowed, and nothing else:

* the team's own area of the platform store: its uploads (``files/{id}/...``, by the `files`
  table) and its jobs' outputs (``jobs/{job_id}/...``, by the `jobs` table), so a job can start
  from the team's checkpoint or final model. An admin key, which sees every team's files and
  jobs, may read any object of the store; nobody may name the store's root;
* model hub ids (base models);
* ``s3://`` buckets and prefixes granted to the team (`grants`) or to every team
  (`TRAINYARD_SHARED_SOURCES`), except the root of a bucket;
* local paths, only where `TRAINYARD_ALLOW_LOCAL_PATHS` is on and only under
  `TRAINYARD_LOCAL_ROOTS`, symlinks resolved (one inside a root that points out of it is refused).

The check reads no byte of any source: it parses, looks at the database, and for local paths
resolves symlinks (lstat and readlink, never open). The API checks at submit and estimate; the
attempt checks again before it reads.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from trainyard.platform import grants
from trainyard.platform.errors import InvalidRequest
from trainyard.platform.models import Job
from trainyard.platform.models_files import File
from trainyard.platform.sources.parse import (
    SOURCE_FIELDS,
    Source,
    SourceKind,
    SourceRefused,
    join_key,
    parse_source,
    under,
)
from trainyard.platform.spec import JobSpec
from trainyard.platform.storage.uris import parse_uri

if TYPE_CHECKING:
    from trainyard.settings import Settings

S = TypeVar("S", bound=JobSpec)

# A local directory source is checked entry by entry for symlinks that leave the roots; one with
# more entries than this is refused rather than walked at length on every submit.
MAX_DIRECTORY_ENTRIES = 10_000


@dataclass(frozen=True)
class Reader:
    """Whom a job reads for: its team, and whether an admin key asked (admins see every team)."""

    team_id: str
    is_admin: bool = False


class SourcePolicy:
    """The policy of one deployment: its store, its local roots and its shared prefixes."""

    def __init__(
        self,
        *,
        storage_uri: str,
        allow_local_paths: bool = False,
        local_roots: Sequence[str] = (),
        shared_sources: Sequence[str] = (),
    ) -> None:
        kind, where, prefix = parse_uri(storage_uri)
        self.store_bucket = where if kind == "s3" else None
        self.store_prefix = (prefix or "").strip("/") if kind == "s3" else ""
        self.store_path = where if kind == "file" else None
        self.store_uri = join_key(f"s3://{where}", self.store_prefix) if kind == "s3" else "file://" + where
        self.allow_local_paths = allow_local_paths
        self.local_roots = tuple(os.path.abspath(r) for r in local_roots)
        try:
            self.shared = tuple(grants.normalise(uri, param="shared_sources") for uri in shared_sources)
        except InvalidRequest as exc:
            raise ValueError(f"TRAINYARD_SHARED_SOURCES: {exc.message}") from None

    @classmethod
    def from_settings(cls, settings: Settings) -> SourcePolicy:
        return cls(
            storage_uri=settings.storage_uri,
            allow_local_paths=settings.allow_local_paths,
            local_roots=settings.local_roots,
            shared_sources=settings.shared_sources,
        )

    # -- parsing ---------------------------------------------------------------------------
    def parse(self, value: str, param: str) -> Source:
        """`value` parsed, with what lies under the platform store's root as a STORE source."""
        source = parse_source(value, param)
        if source.kind == SourceKind.S3 and source.bucket == self.store_bucket:
            assert source.key is not None
            if under(source.key, self.store_prefix):
                key = source.key[len(self.store_prefix) :].lstrip("/")
                return Source(SourceKind.STORE, source.uri, bucket=source.bucket, key=key)
        if source.kind == SourceKind.LOCAL and self.store_path is not None:
            assert source.path is not None
            if under(source.path.removeprefix("/"), self.store_path.removeprefix("/")):
                key = source.path[len(self.store_path) :].lstrip("/")
                return Source(SourceKind.STORE, source.uri, path=source.path, key=key)
        return source

    # -- the policy ------------------------------------------------------------------------
    def check(
        self,
        session: Session,
        reader: Reader,
        value: str,
        param: str,
        *,
        granted: Callable[[], Sequence[Source]] | None = None,
    ) -> str:
        """The canonical spelling of `value` when `reader` may read it; raise SourceRefused.
        `granted` gives the reader's grants (default: read from the database)."""
        source = self.parse(value, param)
        if source.kind == SourceKind.HUB:
            return source.uri
        if source.kind == SourceKind.STORE:
            self._check_store(session, reader, source, param)
            return source.uri
        if source.kind == SourceKind.S3:
            self._check_s3(source, param, granted or (lambda: grants.granted(session, reader.team_id)))
            return source.uri
        return self._check_local(source, param)

    def check_spec(self, session: Session, reader: Reader, spec: S) -> S:
        """`spec` with every source checked and spelled canonically (the same object when no
        spelling changes)."""
        update: dict[str, str] = {}
        # A spec names its model and its data, often in the same granted bucket: one read.
        granted = functools.cache(lambda: grants.granted(session, reader.team_id))
        for param in SOURCE_FIELDS:
            value = getattr(spec, param, None)
            if value is None:
                continue
            canonical = self.check(session, reader, value, param, granted=granted)
            if canonical != value:
                update[param] = canonical
        return spec.model_copy(update=update) if update else spec

    def _check_store(self, session: Session, reader: Reader, source: Source, param: str) -> None:
        key = source.key or ""
        if not key:
            raise SourceRefused(f"{param}: the platform store's root is not a source", param=param)
        if reader.is_admin:
            return
        parts = key.split("/")
        owner: str | None = None
        if parts[0] == "files" and len(parts) >= 2:
            owner = session.scalar(select(File.team_id).where(File.id == parts[1], File.uri == source.uri))
        elif parts[0] == "jobs" and len(parts) >= 3:
            owner = session.scalar(select(Job.team_id).where(Job.id == parts[1]))
        if owner != reader.team_id:
            # The same answer whether the object is another team's or nobody's.
            raise SourceRefused(
                f"{param}: {source.uri} is in the platform store but not in this team's area "
                "(its uploaded files and its jobs' outputs)",
                param=param,
            )

    def _check_s3(self, source: Source, param: str, granted: Callable[[], Sequence[Source]]) -> None:
        if not source.key:
            raise SourceRefused(f"{param}: the root of bucket {source.bucket!r} is not a source", param=param)
        allowed = (*self.shared, *granted())
        if not any(grants.covers(prefix, source) for prefix in allowed):
            raise SourceRefused(
                f"{param}: {source.uri} is not granted to this team; an admin can grant it "
                "(trainyard admin grant-source TEAM s3://bucket/prefix)",
                param=param,
            )

    def _check_local(self, source: Source, param: str) -> str:
        assert source.path is not None
        if not self.allow_local_paths:
            raise SourceRefused(
                f"{param} names a path on the server ({source.uri}); upload it (/v1/files) or "
                "use s3://... or a model hub id",
                param=param,
            )
        roots = [os.path.realpath(root) for root in self.local_roots]
        real = os.path.realpath(source.path)
        if not any(_inside(real, root) for root in roots):
            raise SourceRefused(
                f"{param}: {source.uri} is not under a local root of this deployment "
                "(TRAINYARD_LOCAL_ROOTS), symlinks resolved",
                param=param,
            )
        if self.store_path is not None and _inside(real, os.path.realpath(self.store_path)):
            # The store is reached by its own spelling, where team areas are checked.
            raise SourceRefused(f"{param}: {source.uri} leads into the platform store", param=param)
        if os.path.isdir(real):
            _check_tree(real, roots, source.uri, param)
        return "file://" + real


def _inside(path: str, root: str) -> bool:
    return under(path.removeprefix("/"), root.removeprefix("/"))


def _check_tree(top: str, roots: list[str], uri: str, param: str) -> None:
    """Refuse a directory with a symlink in it that resolves outside every root."""
    seen = 0
    for dirpath, dirs, files in os.walk(top):
        for name in (*dirs, *files):
            seen += 1
            if seen > MAX_DIRECTORY_ENTRIES:
                raise SourceRefused(
                    f"{param}: {uri} holds more than {MAX_DIRECTORY_ENTRIES} entries", param=param
                )
            path = os.path.join(dirpath, name)
            if os.path.islink(path) and not any(_inside(os.path.realpath(path), r) for r in roots):
                raise SourceRefused(
                    f"{param}: {uri} holds a link that leads out of the local roots", param=param
                )
