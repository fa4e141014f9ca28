"""Model sizes the platform has read from a hub, on the same metadata as the core models.

One row per hub id (`key`, lower case and without a revision, as the hub resolves ids): what its
config.json said, so the next job on that model is sized without asking the hub again.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, Integer, String, func
from sqlalchemy.orm import Mapped, mapped_column

from trainyard.platform.models import Base


class ModelSize(Base):
    __tablename__ = "model_sizes"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    # The id as it was first read, for display.
    model_id: Mapped[str] = mapped_column(String(200))
    parameters: Mapped[int] = mapped_column(BigInteger)
    layers: Mapped[int | None] = mapped_column(Integer)
    hidden_size: Mapped[int | None] = mapped_column(Integer)
    vocab_size: Mapped[int | None] = mapped_column(Integer)
    context_length: Mapped[int | None] = mapped_column(Integer)
    model_type: Mapped[str | None] = mapped_column(String(64))
    # The whole architecture as the estimator reads it (`ModelInfo.to_dict`).
    info: Mapped[dict[str, Any]]
    read_at: Mapped[datetime] = mapped_column(server_default=func.now())

    __table_args__ = (CheckConstraint("parameters > 0", name="ck_model_sizes_parameters"),)
