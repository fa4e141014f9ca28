"""Configuration from the environment (prefix ``TRAINYARD_``), built by a function, never at import."""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TRAINYARD_", extra="ignore")

    database_url: str = "postgresql+psycopg://postgres@127.0.0.1:5432/trainyard"
    storage_uri: str = "file://./.trainyard/store"
    catalog_path: str | None = None
    # The estimator's assumptions (start-up, spot interruption rates, restart cost); None means the
    # packaged estimator_constants.yaml. Operators replace it with what they observe.
    estimator_constants_path: str | None = None
    # JSON list of pools: [{"instance_type": "g5.xlarge", "max_concurrent": 4, "ray_resource": {...}}]
    pools: str | None = None
    data_dir: str = ".trainyard"

    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=1, le=65535)
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    # Uploads to /v1/files (fine-tuning JSONL); OpenAI's own limit is 512 MB.
    max_file_bytes: int = Field(default=512 * 1024 * 1024, ge=1024)
    migrate_on_start: bool = True
    # The API's connection pool: a request holds a connection only while it talks to the database.
    db_pool_size: int = Field(default=10, ge=1)
    db_max_overflow: int = Field(default=20, ge=0)
    # How long a request waits for a free connection before it answers 503 database_unavailable.
    db_pool_timeout_seconds: float = Field(default=10.0, gt=0)
    # Whether jobs may name files on the server's own disk (file:// URIs, absolute paths). The
    # embedded stack allows it; a shared deployment should not, or any user could read any file
    # the workers can.
    allow_local_paths: bool = False
    # Where those local paths may be, when they are allowed: directories (symlinks resolved) as a
    # JSON list or comma-separated. None configured means no local path is allowed at all.
    local_roots: Annotated[list[str], NoDecode] = []
    # s3:// buckets or prefixes every team may read (a model mirror, shared datasets); grants to
    # one team are in the database (`trainyard admin grant-source`). Same format as local_roots.
    shared_sources: Annotated[list[str], NoDecode] = []

    lease_seconds: float = Field(default=60.0, gt=0)
    heartbeat_seconds: float = Field(default=10.0, gt=0)
    retry_backoff_seconds: float = Field(default=10.0, ge=0)
    retry_backoff_max_seconds: float = Field(default=600.0, ge=0)
    poll_seconds: float = Field(default=5.0, gt=0)
    # How long a cancel, pause, budget stop or shutdown waits for the run to checkpoint and stop
    # by itself before the attempt is ended and its process and Ray run killed.
    stop_grace_seconds: float = Field(default=60.0, gt=0)
    worker_concurrency: int = Field(default=1, ge=1)
    # Fork attempts from a runner that has imported torch, transformers and Ray Train once
    # (workers/warm.py) instead of starting a fresh interpreter for each.
    warm_attempts: bool = True
    # A job's max_cost_usd is checked against a projection from its attempt's training pace once
    # the attempt has shown this many steps over this many seconds (start-up is not counted).
    budget_projection_min_steps: int = Field(default=10, ge=1)
    budget_projection_min_seconds: float = Field(default=60.0, ge=0)
    # The deadline contract keeps a job with a deadline on spot while spot still finishes in time
    # with this probability (and a budget job on its option while it stays within budget with it).
    deadline_confidence: float = Field(default=0.9, gt=0, lt=1)
    ray_address: str | None = Field(default=None, validation_alias=AliasChoices("ray_address", "RAY_ADDRESS"))

    @field_validator("local_roots", "shared_sources", mode="before")
    @classmethod
    def _list(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value


def get_settings(**overrides: object) -> Settings:
    return Settings(**overrides)  # type: ignore[arg-type]
