"""Source grants: s3:// buckets and prefixes an admin lets a team's jobs read.

Stored in `source_grants`, one row per team and canonical URI; the source policy
(`trainyard.platform.sources`) reads them on every check. Only admin keys grant, list and
revoke. A grant never reaches into the platform's own store, where each team reads only its
own area: sharing there would bypass that rule.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from trainyard.platform.auth import Principal, get_team_by_name, require_admin
from trainyard.platform.errors import InvalidRequest, NotFound
from trainyard.platform.models import SourceGrant, Team
from trainyard.platform.sources.parse import Source, SourceKind, SourceRefused, parse_source, under
from trainyard.platform.storage.uris import parse_uri

__all__ = ["covers", "grant_source", "granted", "list_grants", "normalise", "revoke_source"]


def normalise(uri: str, *, param: str = "uri") -> Source:
    """A grantable prefix, parsed: ``s3://bucket`` or ``s3://bucket/prefix`` (a trailing '/' is
    the same prefix). Raises InvalidRequest for anything else."""
    try:
        source = parse_source(uri, param)
    except SourceRefused as exc:
        raise InvalidRequest(exc.message, param=param) from None
    if source.kind != SourceKind.S3:
        raise InvalidRequest(f"{param}: grants name s3://bucket or s3://bucket/prefix", param=param)
    return source


def covers(grant: Source, source: Source) -> bool:
    """Whether `grant` (a bucket or prefix) covers the S3 object or prefix `source`."""
    return grant.bucket == source.bucket and under(source.key or "", grant.key or "")


def granted(session: Session, team_id: str) -> list[Source]:
    """The prefixes granted to the team."""
    uris = session.scalars(select(SourceGrant.uri).where(SourceGrant.team_id == team_id))
    return [parse_source(uri, "uri") for uri in uris]


def _overlaps_store(source: Source, storage_uri: str) -> bool:
    kind, bucket, prefix = parse_uri(storage_uri)
    if kind != "s3" or bucket != source.bucket:
        return False
    store, key = (prefix or "").strip("/"), source.key or ""
    return under(key, store) or under(store, key)


def grant_source(
    session: Session, principal: Principal, team_name: str, uri: str, *, storage_uri: str
) -> tuple[SourceGrant, Team]:
    """Grant `uri` to the team (nothing new when it holds that grant already); admin keys only."""
    require_admin(principal)
    team = get_team_by_name(session, team_name)
    source = normalise(uri)
    if _overlaps_store(source, storage_uri):
        raise InvalidRequest(
            f"uri: {source.uri} overlaps the platform store, where each team reads its own area only",
            code="grant_overlaps_store",
            param="uri",
        )
    row = session.scalar(
        select(SourceGrant).where(SourceGrant.team_id == team.id, SourceGrant.uri == source.uri)
    )
    if row is None:
        row = SourceGrant(team_id=team.id, uri=source.uri)
        session.add(row)
        session.flush()
        session.refresh(row)  # created_at comes from the database
    return row, team


def list_grants(session: Session, principal: Principal, team_name: str) -> tuple[list[SourceGrant], Team]:
    """The team's grants, oldest first; admin keys only."""
    require_admin(principal)
    team = get_team_by_name(session, team_name)
    rows = session.scalars(
        select(SourceGrant)
        .where(SourceGrant.team_id == team.id)
        .order_by(SourceGrant.created_at, SourceGrant.id)
    )
    return list(rows), team


def revoke_source(
    session: Session, principal: Principal, team_name: str, uri: str
) -> tuple[SourceGrant, Team]:
    """Take a grant back (404 when the team does not hold it); admin keys only. Jobs already
    queued with it are refused when their attempt checks its sources."""
    require_admin(principal)
    team = get_team_by_name(session, team_name)
    source = normalise(uri)
    row = session.scalar(
        select(SourceGrant).where(SourceGrant.team_id == team.id, SourceGrant.uri == source.uri)
    )
    if row is None:
        raise NotFound(
            f"team {team.name!r} holds no grant for {source.uri}", code="grant_not_found", param="uri"
        )
    session.delete(row)
    session.flush()
    return row, team
