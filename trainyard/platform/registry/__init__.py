"""The model registry: every model a job may start from, by id, and its size.

* base models the platform knows: the packaged table of common open models (`table`), and every
  hub model whose config.json it has read before (`sizes`, the `model_sizes` table);
* each team's fine-tuned models, `ft:<base>:<team>:<suffix>:<job>` (`fine_tuned`), which resolve
  to their job's final model URI for that team only.

A hub id the registry knows is sized without any hub; any other is looked up on the hub in a
thread of its own (`hub`), which a request waits for at most `wait_s`, and a job naming one is
still accepted when it gives `model_parameters`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from trainyard.platform.auth import Principal
from trainyard.platform.errors import NotFound
from trainyard.platform.registry import fine_tuned, sizes
from trainyard.platform.registry.fine_tuned import FineTunedModel
from trainyard.platform.registry.hub import HubLookups
from trainyard.platform.registry.names import FT_PREFIX, ft_id, parse_ft_id, short_name
from trainyard.platform.registry.table import BaseModelEntry, ModelTable, packaged_table
from trainyard.platform.scheduling.model_info import EstimateInputError, ModelInfo, model_info_from_config
from trainyard.platform.spec import JobSpec

__all__ = [
    "FT_PREFIX",
    "FineTunedModel",
    "HubLookups",
    "KnownModel",
    "ModelRegistry",
    "ft_id",
    "parse_ft_id",
    "short_name",
]

S = TypeVar("S", bound=JobSpec)

# How long a request waits for a hub look-up it started; the look-up itself goes on after.
HUB_WAIT_SECONDS = 2.0
_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length", "seq_length")


@dataclass(frozen=True)
class KnownModel:
    """A base model the platform sizes without a hub: from the table, or read from a hub before."""

    id: str
    owned_by: str
    created: int
    info: ModelInfo
    context_length: int | None
    license: str | None
    source: str  # "registry" (the packaged table) or "cache" (read from the hub before)

    @classmethod
    def of_entry(cls, entry: BaseModelEntry) -> KnownModel:
        e = entry
        return cls(e.id, e.owned_by, e.created, e.info, e.context_length, e.license, "registry")

    @classmethod
    def of_row(cls, row: sizes.ModelSize) -> KnownModel:
        owner = row.model_id.partition("/")[0] if "/" in row.model_id else "hub"
        created = int(row.read_at.timestamp()) if isinstance(row.read_at, datetime) else 0
        return cls(row.model_id, owner, created, sizes.info_of(row), row.context_length, None, "cache")


def context_length(config: Mapping[str, Any] | None) -> int | None:
    for key in _CONTEXT_KEYS:
        value = (config or {}).get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _engine(session: Session) -> Engine | None:
    try:
        bind = session.get_bind()
    except Exception:
        return None
    return bind if isinstance(bind, Engine) else getattr(bind, "engine", None)


class ModelRegistry:
    """The registry of one process: its table, and the hub look-ups its requests share."""

    def __init__(
        self,
        table: ModelTable | None = None,
        hub: HubLookups | None = None,
        *,
        wait_s: float = HUB_WAIT_SECONDS,
    ) -> None:
        self.table = table if table is not None else packaged_table()
        self.hub = hub if hub is not None else HubLookups()
        self.wait_s = wait_s

    # -- sizing ----------------------------------------------------------------------------
    def known(self, session: Session, model_id: str) -> KnownModel | None:
        """The table's entry for a hub id, else the size read from a hub before."""
        entry = self.table.get(model_id)
        if entry is not None:
            return KnownModel.of_entry(entry)
        engine = _engine(session)
        row = sizes.get(engine, model_id) if engine is not None else None
        return KnownModel.of_row(row) if row is not None else None

    def size(self, session: Session, spec: JobSpec) -> ModelInfo:
        """The size of the hub model `spec.base_model`: the table's, the cached one, the hub's
        (waiting at most `wait_s`, and not at all when the job gives `model_parameters`), else the
        job's hint. Raises EstimateInputError when none of them says.

        `session` is only used for its engine: the cache is read and written in sessions of
        their own, so the caller's transaction is neither held across the hub nor committed."""
        known = self.known(session, spec.base_model)
        if known is not None:
            return known.info
        if spec.base_model.startswith(FT_PREFIX):
            # Submission resolves ft ids first; one that reaches here is nobody's to look up.
            raise EstimateInputError(f"model {spec.base_model!r} is not resolved", param="base_model")
        engine = _engine(session)
        model_id = spec.base_model

        def keep(config: Mapping[str, Any]) -> None:
            info = model_info_from_config(config)
            if info is not None and engine is not None:
                sizes.remember(engine, model_id, info, context_length(config))

        wait = 0.0 if spec.model_parameters is not None else self.wait_s
        config = self.hub.lookup(model_id, keep, wait_s=wait)
        info = model_info_from_config(config) if config else None
        if info is not None:
            return replace(info, source="hub")
        if spec.model_parameters is not None:
            return ModelInfo(parameters=spec.model_parameters, source="spec")
        raise EstimateInputError(
            f"cannot tell the size of model {model_id!r}: it is not in the registry (GET /v1/models) "
            f"and the hub did not give its config.json within {wait:g} s; set model_parameters on the "
            "job (the look-up goes on, and a later job on this model may not need it)",
            param="model_parameters",
        )

    # -- fine-tuned models -----------------------------------------------------------------
    def resolve_spec(self, session: Session, principal: Principal, spec: S) -> S:
        """`spec` with an ft id in `base_model` replaced by its final model URI (a copy; the same
        object when there is none). Another team's ft id is a 404."""
        if not spec.base_model.startswith(FT_PREFIX):
            return spec
        model = fine_tuned.resolve(session, principal, spec.base_model, param="base_model")
        return spec.model_copy(update={"base_model": model.uri})

    # -- listing ---------------------------------------------------------------------------
    def list(self, session: Session, principal: Principal) -> tuple[list[KnownModel], list[FineTunedModel]]:
        """The base models (the table, then those read from a hub) and the team's fine-tunes."""
        base = [KnownModel.of_entry(e) for e in self.table]
        base += [
            KnownModel.of_row(row) for row in sizes.all_sizes(session) if self.table.get(row.model_id) is None
        ]
        return base, fine_tuned.list_models(session, principal)

    def get(self, session: Session, principal: Principal, model_id: str) -> KnownModel | FineTunedModel:
        """One model by id; 404 `model_not_found` when the registry does not know it."""
        if model_id.startswith(FT_PREFIX):
            return fine_tuned.resolve(session, principal, model_id)
        known = self.known(session, model_id)
        if known is None:
            raise NotFound(
                f"no model {model_id!r} (GET /v1/models lists the models this deployment knows)",
                code="model_not_found",
                param="model",
            )
        return known
