"""Cost allocation, team budgets, the queue summary and the ops cost dashboard.

Thin routes over `trainyard.platform.costs`, `auth` (teams) and `queue` (the summary). The
dashboard is static files in `trainyard/api/static/` (the charting library is vendored there),
served by the API itself, so nothing is built or fetched from elsewhere to run it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from trainyard.api.deps import PrincipalDep, SessionDep, UnitOfWorkRoute, bracket_params
from trainyard.api.openapi import errors
from trainyard.api.schemas import ts
from trainyard.platform import auth, costs, queue
from trainyard.platform.costs.dimensions import DIMENSIONS, LABEL_PREFIX, MAX_DIMENSIONS
from trainyard.platform.errors import InvalidRequest, NotFound
from trainyard.platform.models import Team

router = APIRouter(tags=["costs"], route_class=UnitOfWorkRoute)

STATIC_DIR = Path(__file__).resolve().parent / "static"
_STATIC_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
}
# The page talks only to this API and loads only its own files; no inline script, no CDN.
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

LimitQ = Annotated[int, Query(ge=1, le=costs.MAX_LIMIT)]
# `costs.parse_aggregate` checks the dimensions (a 400); the schema states them.
_DIMENSION = "(?:{}|{}[A-Za-z0-9_.\\-/]{{1,64}})".format("|".join(DIMENSIONS), LABEL_PREFIX)
AggregateQ = Annotated[
    str,
    Query(
        json_schema_extra={"pattern": f"^ *{_DIMENSION} *(?:, *{_DIMENSION} *){{0,{MAX_DIMENSIONS - 1}}}$"}
    ),
]


def _filters(request: Request) -> dict[str, str]:
    return bracket_params(request, "filter", "filter[team]=research")


def _aggregate(request: Request) -> str:
    # Both `aggregate=team,user` and `aggregate=team&aggregate=user` work.
    values = request.query_params.getlist("aggregate")
    return ",".join(values) if values else "team"


def _costs(
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    window: str,
    step: str | None,
    team: str | None,
    limit: int,
) -> dict[str, Any]:
    return costs.query_costs(
        session,
        principal,
        window=window,
        aggregate=_aggregate(request),
        step=step or None,
        team=team or None,
        filters=_filters(request),
        limit=limit,
    )


def _csv_response(result: dict[str, Any]) -> Response:
    return Response(
        costs.to_csv(result),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="costs.csv"'},
    )


@router.get("/v1/costs", responses=errors(404))
def get_costs(
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    window: str = "7d",
    aggregate: AggregateQ = "team",
    step: str | None = None,
    team: str | None = None,
    limit: LimitQ = costs.DEFAULT_LIMIT,
    format: Annotated[str, Query(json_schema_extra={"enum": ["json", "csv"]})] = "json",
) -> Any:
    """Spend by `aggregate` over `window` (`24h`, `7d`, `30d`, `month` or `start,end`), per `step`
    when given; `filter[dim]=value` narrows it; `format=csv` gives the same rows as CSV."""
    if format not in ("json", "csv"):
        raise InvalidRequest("format must be json or csv", param="format")
    result = _costs(request, session, principal, window, step, team, limit)
    return _csv_response(result) if format == "csv" else result


@router.get("/v1/costs.csv", responses=errors(404))
def get_costs_csv(
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    window: str = "7d",
    aggregate: AggregateQ = "team",
    step: str | None = None,
    team: str | None = None,
    limit: LimitQ = costs.DEFAULT_LIMIT,
) -> Response:
    return _csv_response(_costs(request, session, principal, window, step, team, limit))


def _team_out(team: Team) -> dict[str, Any]:
    return {
        "id": team.id,
        "object": "team",
        "name": team.name,
        "monthly_budget_usd": team.monthly_budget_usd,
        "max_concurrent_gpus": team.max_concurrent_gpus,
        "created_at": ts(team.created_at),
    }


@router.get("/v1/teams")
def list_teams(session: SessionDep, principal: PrincipalDep) -> dict[str, Any]:
    """Admins see every team; a member sees their own."""
    teams = auth.list_teams(session, principal)
    return {"object": "list", "data": [_team_out(t) for t in teams], "has_more": False}


class BudgetIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # The bounds are `costs.set_team_budget`'s (a 400 there); the schema states them.
    monthly_budget_usd: float | None = Field(json_schema_extra={"minimum": 0, "maximum": 1e12})
    # Left as it is when absent; 0.8 for a new team.
    warn_fraction: float | None = Field(default=None, json_schema_extra={"exclusiveMinimum": 0, "maximum": 1})


@router.put("/v1/teams/{name}/budget", responses=errors(403))
def set_team_budget(
    name: str, body: BudgetIn, session: SessionDep, principal: PrincipalDep
) -> dict[str, Any]:
    """Set a team's monthly budget in dollars (null clears it) and, optionally, the share of a
    cap at which its running jobs are warned; admin keys only."""
    return costs.set_team_budget(session, principal, name, body.monthly_budget_usd, body.warn_fraction)


@router.get("/v1/budgets")
def list_budgets(session: SessionDep, principal: PrincipalDep) -> dict[str, Any]:
    """This month's spend against each visible team's budget."""
    return {"object": "list", "data": costs.list_budgets(session, principal), "has_more": False}


@router.get("/v1/queue", responses=errors(404))
def queue_summary(session: SessionDep, principal: PrincipalDep, team: str | None = None) -> dict[str, Any]:
    """Jobs waiting and running now, by pool."""
    return queue.queue_summary(session, principal, team or None)


def _static(name: str) -> FileResponse:
    path = STATIC_DIR / name
    if not _STATIC_NAME.match(name) or not path.is_file():
        raise NotFound(f"no dashboard file {name!r}", param="name")
    return FileResponse(
        path,
        media_type=_MEDIA_TYPES.get(path.suffix, "application/octet-stream"),
        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
    )


@router.get("/dashboard", include_in_schema=False)
def dashboard() -> FileResponse:
    """The ops cost dashboard; it asks for an API key in the page and keeps it for the tab."""
    response = _static("dashboard.html")
    response.headers["Content-Security-Policy"] = _CSP
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


@router.get("/dashboard/static/{name}", include_in_schema=False)
def dashboard_static(name: str) -> FileResponse:
    return _static(name)
