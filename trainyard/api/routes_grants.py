"""/v1/teams/{name}/grants: the s3:// buckets and prefixes a team's jobs may read, beyond its own
area of the platform store. Thin routes over `trainyard.platform.grants`; admin keys only."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from trainyard.api.deps import PrincipalDep, SessionDep, UnitOfWorkRoute
from trainyard.api.openapi import errors
from trainyard.api.schemas import ts
from trainyard.platform import grants
from trainyard.platform.models import SourceGrant, Team

router = APIRouter(prefix="/v1/teams", tags=["teams"], route_class=UnitOfWorkRoute)

UriQ = Annotated[str, Query(min_length=1, max_length=1024)]


class GrantIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    uri: str = Field(min_length=1, max_length=1024, description="s3://bucket or s3://bucket/prefix")


def _grant_out(row: SourceGrant, team: Team) -> dict[str, Any]:
    return {
        "id": row.id,
        "object": "source_grant",
        "team": team.name,
        "uri": row.uri,
        "created_at": ts(row.created_at),
    }


@router.put("/{name}/grants", responses=errors(403))
def grant_source(
    name: str, body: GrantIn, session: SessionDep, principal: PrincipalDep, request: Request
) -> dict[str, Any]:
    """Let the team's jobs read `uri` (a bucket or a prefix); granting it again changes nothing."""
    row, team = grants.grant_source(
        session, principal, name, body.uri, storage_uri=request.app.state.settings.storage_uri
    )
    return _grant_out(row, team)


@router.get("/{name}/grants", responses=errors(403))
def list_grants(name: str, session: SessionDep, principal: PrincipalDep) -> dict[str, Any]:
    rows, team = grants.list_grants(session, principal, name)
    return {"object": "list", "data": [_grant_out(r, team) for r in rows], "has_more": False}


@router.delete("/{name}/grants", responses=errors(403))
def revoke_source(name: str, uri: UriQ, session: SessionDep, principal: PrincipalDep) -> dict[str, Any]:
    """Take the grant of `uri` back; queued jobs that need it are refused when they start."""
    row, team = grants.revoke_source(session, principal, name, uri)
    return {**_grant_out(row, team), "deleted": True}
