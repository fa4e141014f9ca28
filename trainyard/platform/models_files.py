"""Uploaded files (the OpenAI-compatible `/v1/files`), on the same metadata as the core models.

A file row describes one object in the store; jobs refer to its URI, so the file service is the
only place that knows about `file-...` ids.
"""

from __future__ import annotations

import secrets
from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, Text, func, text
from sqlalchemy.orm import Mapped, mapped_column

from trainyard.platform.models import Base

FILE_ID_PREFIX = "file-"


def new_file_id() -> str:
    # OpenAI's ids look like `file-abc123`; keeping the shape lets scripts that check it work unchanged.
    return FILE_ID_PREFIX + secrets.token_hex(12)


class File(Base):
    __tablename__ = "files"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=new_file_id)
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    api_key_id: Mapped[str | None] = mapped_column(ForeignKey("api_keys.id", ondelete="SET NULL"))
    filename: Mapped[str] = mapped_column(String(255))
    purpose: Mapped[str] = mapped_column(String(32))  # fine-tune | fine-tune-results
    bytes: Mapped[int] = mapped_column(BigInteger)
    uri: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))  # processed | error
    line_count: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    # Deleted files keep their row (jobs that used them still name them) but vanish from the API.
    deleted_at: Mapped[datetime | None]

    __table_args__ = (
        # The list scans one team's live files, newest first.
        Index("ix_files_team_created", "team_id", "created_at", postgresql_where=text("deleted_at IS NULL")),
        # Rendering a job maps its training/validation URIs back to file ids.
        Index("ix_files_uri", "uri"),
    )
