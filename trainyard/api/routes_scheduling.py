"""/v1/estimates and /v1/instance-types: what a job would cost and take, everywhere."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import Field

from trainyard.api.deps import PrincipalDep, SessionDep, UnitOfWorkRoute
from trainyard.api.openapi import errors
from trainyard.platform import submission
from trainyard.platform.planning import Planner
from trainyard.platform.scheduling.execution import not_runnable_reason, runnable
from trainyard.platform.spec import JobSpec, UriStr

router = APIRouter(prefix="/v1", tags=["scheduling"], route_class=UnitOfWorkRoute)


class EstimateRequest(JobSpec):
    """A job spec whose name and files are optional: `model_parameters` and `dataset_tokens`
    (or `max_steps`) can stand in for what the files would tell."""

    name: str = Field(default="estimate", min_length=1, max_length=200)
    training_file: UriStr | None = None  # type: ignore[assignment]


def _planner(request: Request) -> Planner:
    return request.app.state.planner  # type: ignore[no-any-return]


@router.post("/estimates", responses=errors(403, 404))
def create_estimate(
    body: EstimateRequest, session: SessionDep, principal: PrincipalDep, request: Request
) -> dict[str, Any]:
    result = submission.estimate(
        session,
        principal,
        body,
        planner=_planner(request),
        sources=request.app.state.sources,
    )
    error = result.error
    return {
        "object": "estimate",
        "model_parameters": result.model_parameters,
        "dataset_tokens": result.dataset_tokens,
        "chosen": result.chosen,
        "error": {"code": error.code, "message": error.message, "param": error.param} if error else None,
        "options": result.options,
    }


@router.get("/instance-types")
def list_instance_types(principal: PrincipalDep, request: Request) -> dict[str, Any]:
    planner = _planner(request)
    capacity = planner.capacity
    data = []
    for itype in planner.catalog.types:
        row = itype.to_dict()
        acc = planner.catalog.accelerator_for(itype)
        row.update(
            {
                "object": "instance_type",
                "available": itype.name in planner.available,
                # No policy chooses a type without a tested execution path (TPUs, for now).
                "runnable": runnable(itype.kind),
                "runnable_reason": not_runnable_reason(itype.kind),
                "max_concurrent": capacity.get(itype.name),
                "accelerator_spec": acc.to_dict() if acc else None,
            }
        )
        data.append(row)
    return {"object": "list", "data": data, "has_more": False}
