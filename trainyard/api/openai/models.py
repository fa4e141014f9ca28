"""`/v1/models`: OpenAI's model list and retrieve, thin over the platform's model registry.

A model object is OpenAI's (`id`, `object`, `created`, `owned_by`) with what Trainyard knows on top:
`source` ("registry": the packaged table; "cache": read from a hub before; "fine_tuned": one of
the team's jobs), `parameters`, `layers`, `hidden_size`, `vocab_size`, `context_length`,
`license`, and for a fine-tuned model its `base_model`, `job_id` and `uri`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy.orm import Session

from trainyard.api.deps import PrincipalDep, SessionDep
from trainyard.api.openai.errors import OpenAIRoute
from trainyard.api.openai.objects import unix
from trainyard.platform.auth import Principal
from trainyard.platform.registry import FineTunedModel, KnownModel, ModelRegistry, fine_tuned

router = APIRouter(prefix="/v1", tags=["openai"], route_class=OpenAIRoute)


def _registry(request: Request) -> ModelRegistry:
    return request.app.state.deployment.models  # type: ignore[no-any-return]


def known_object(model: KnownModel) -> dict[str, Any]:
    info = model.info
    return {
        "id": model.id,
        "object": "model",
        "created": model.created,
        "owned_by": model.owned_by,
        "source": model.source,
        "parameters": info.parameters,
        "layers": info.layers,
        "hidden_size": info.hidden_size,
        "vocab_size": info.vocab_size,
        "context_length": model.context_length,
        "model_type": info.model_type,
        "license": model.license,
    }


def fine_tuned_object(model: FineTunedModel, base_ids: dict[str, str]) -> dict[str, Any]:
    job = model.job
    base = str(job.spec.get("base_model") or "")
    parameters = (job.plan or {}).get("model_parameters")
    return {
        "id": model.id,
        "object": "model",
        "created": unix(model.created) or 0,
        "owned_by": model.team_name,
        "source": "fine_tuned",
        "parameters": parameters if isinstance(parameters, int) else None,
        "base_model": base_ids.get(base, base),
        "job_id": job.id,
        "uri": model.uri,
        "method": job.spec.get("method"),
    }


def _fine_tuned_objects(session: Session, models: list[FineTunedModel]) -> list[dict[str, Any]]:
    # A fine-tune of a fine-tune names its base by the base's ft id, as the job does.
    bases: dict[str, str] = {}
    for team_id in {m.job.team_id for m in models}:
        uris = (m.job.spec.get("base_model") for m in models if m.job.team_id == team_id)
        bases.update(fine_tuned.ids_for_uris(session, uris, team_id=team_id))
    return [fine_tuned_object(m, bases) for m in models]


@router.get("/models")
def list_models(request: Request, session: SessionDep, principal: PrincipalDep) -> dict[str, Any]:
    base, tuned = _registry(request).list(session, principal)
    data = [*_fine_tuned_objects(session, tuned), *(known_object(m) for m in base)]
    return {"object": "list", "data": data}


def _retrieve(request: Request, session: Session, principal: Principal, model_id: str) -> dict[str, Any]:
    model = _registry(request).get(session, principal, model_id)
    if isinstance(model, FineTunedModel):
        return _fine_tuned_objects(session, [model])[0]
    return known_object(model)


@router.get("/models/{model_id}")
def retrieve_model(
    model_id: str, request: Request, session: SessionDep, principal: PrincipalDep
) -> dict[str, Any]:
    """A model by id: an ft id, or a hub id of one part (`gpt2`)."""
    return _retrieve(request, session, principal, model_id)


# A hub id is `owner/name`: the openai client sends its '/' encoded, which arrives decoded.
@router.get("/models/{owner}/{name}")
def retrieve_hub_model(
    owner: str, name: str, request: Request, session: SessionDep, principal: PrincipalDep
) -> dict[str, Any]:
    """A model by its hub id, `owner/name`."""
    return _retrieve(request, session, principal, f"{owner}/{name}")
