"""API keys and the principal a request acts as. Only a SHA-256 of each key is stored."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from trainyard.platform.errors import Conflict, InvalidRequest, NotFound, PermissionDenied, Unauthenticated
from trainyard.platform.models import ApiKey, Team

KEY_PREFIX = "ty_"
ROLES = ("member", "admin")


@dataclass(frozen=True)
class Principal:
    key_id: str
    team_id: str
    team_name: str
    role: str
    # The team's limits as the key was checked (the same row, read with it): a create of a team
    # without a budget needs no other read of it. A budget or quota set meanwhile applies from
    # the next request. A principal made otherwise is taken to have a budget, which is checked.
    team_budgeted: bool = True
    team_max_concurrent_gpus: int | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_team(session: Session, name: str, *, monthly_budget_usd: float | None = None) -> Team:
    name = name.strip()
    if not name or len(name) > 100:
        raise InvalidRequest("team name must be 1-100 characters", param="name")
    team = Team(name=name, monthly_budget_usd=monthly_budget_usd)
    session.add(team)
    try:
        session.flush()
    except IntegrityError as exc:
        session.rollback()
        raise Conflict(f"team {name!r} already exists", code="team_exists", param="name") from exc
    return team


def get_team_by_name(session: Session, name: str) -> Team:
    team = session.scalar(select(Team).where(Team.name == name))
    if team is None:
        raise NotFound(f"no team named {name!r}", param="team")
    return team


def create_key(session: Session, team: Team, *, role: str = "member", name: str = "default") -> str:
    """Create a key and return its secret; the secret is never stored or shown again."""
    if role not in ROLES:
        raise InvalidRequest(f"role must be one of {', '.join(ROLES)}", param="role")
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    session.add(
        ApiKey(team_id=team.id, name=name, role=role, key_hash=hash_key(secret), key_prefix=secret[:10])
    )
    session.flush()
    return secret


def authenticate(session: Session, authorization: str | None) -> Principal:
    if not authorization:
        raise Unauthenticated("missing Authorization header; send 'Authorization: Bearer <key>'")
    scheme, _, secret = authorization.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise Unauthenticated("Authorization must be 'Bearer <key>'")
    key = session.scalar(
        select(ApiKey).where(ApiKey.key_hash == hash_key(secret.strip()), ApiKey.revoked_at.is_(None))
    )
    if key is None:
        raise Unauthenticated("invalid API key", code="invalid_api_key")
    team = key.team
    return Principal(
        key_id=key.id,
        team_id=key.team_id,
        team_name=team.name,
        role=key.role,
        team_budgeted=team.monthly_budget_usd is not None,
        team_max_concurrent_gpus=team.max_concurrent_gpus,
    )


def require_admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise PermissionDenied("this needs an admin key")


def list_teams(session: Session, principal: Principal) -> list[Team]:
    """Admins see every team; a member sees their own."""
    query = select(Team).order_by(Team.name)
    if not principal.is_admin:
        query = query.where(Team.id == principal.team_id)
    return list(session.scalars(query))


def visible_team_id(session: Session, principal: Principal, team: str | None) -> str | None:
    """The team a team-scoped read covers: `team` by name, or None for all teams (admins only).
    Members are held to their own team; another team's name reads as unknown, as jobs do."""
    if team is None or not team.strip():
        return None if principal.is_admin else principal.team_id
    if not principal.is_admin and team != principal.team_name:
        raise NotFound(f"no team named {team!r}", param="team")
    return get_team_by_name(session, team).id
