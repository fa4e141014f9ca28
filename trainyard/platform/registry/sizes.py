"""The sizes read from a hub before (`model_sizes`): read and written each in a short session of
its own, so a caller's transaction neither waits on them nor is committed by them."""

from __future__ import annotations

import logging
from dataclasses import fields
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from trainyard.platform import db
from trainyard.platform.models_registry import ModelSize
from trainyard.platform.scheduling.model_info import ModelInfo

log = logging.getLogger("trainyard.registry")

MAX_ID = 200  # the column's width
_INFO_FIELDS = {f.name for f in fields(ModelInfo)}


def key_of(model_id: str) -> str:
    """The cache key of a hub id: lower case (the hub resolves ids so), without a revision."""
    return model_id.split("@", 1)[0].lower()


def info_of(row: ModelSize) -> ModelInfo:
    values = {k: v for k, v in (row.info or {}).items() if k in _INFO_FIELDS}
    values.update(parameters=row.parameters, source="cache")
    return ModelInfo(**values)


def get(engine: Engine, model_id: str) -> ModelSize | None:
    """The cached row for a hub id; None when there is none or the database cannot say."""
    key = key_of(model_id)
    if len(key) > MAX_ID:
        return None
    try:
        with Session(engine) as session:
            return session.get(ModelSize, key)
    except db.DATABASE_ERRORS as exc:
        # Sizing falls back to the hub or the job's hint; an outage surfaces on the job's own write.
        log.warning("model size cache unreadable: %s", type(exc).__name__)
        return None


def remember(engine: Engine, model_id: str, info: ModelInfo, context_length: int | None) -> None:
    """Keep what a hub said of `model_id`; the newest read wins. Never raises."""
    key = key_of(model_id)
    if len(key) > MAX_ID:
        return
    values: dict[str, Any] = {
        "key": key,
        "model_id": model_id.split("@", 1)[0],
        "parameters": info.parameters,
        "layers": info.layers,
        "hidden_size": info.hidden_size,
        "vocab_size": info.vocab_size,
        "context_length": context_length,
        "model_type": (info.model_type or "")[:64] or None,
        "info": {k: v for k, v in info.to_dict().items() if k != "source"},
    }
    try:
        with Session(engine) as session, session.begin():
            stmt = pg_insert(ModelSize).values(**values)
            update = {k: stmt.excluded[k] for k in values if k not in ("key", "model_id")}
            session.execute(stmt.on_conflict_do_update(index_elements=["key"], set_=update))
    except db.DATABASE_ERRORS as exc:
        log.warning("model size of %s not cached: %s", model_id, type(exc).__name__)


def all_sizes(session: Session) -> list[ModelSize]:
    return list(session.scalars(select(ModelSize).order_by(ModelSize.model_id)))
