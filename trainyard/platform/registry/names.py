"""How models are named: a short, readable name for any base model, and the ids of fine-tuned
models, `ft:<base>:<team>:<suffix>:<job>` as OpenAI spells its own (`ft:gpt-4o-mini:org:suffix:id`,
with an empty suffix when none was given). Pure: no database, no store."""

from __future__ import annotations

import re
from dataclasses import dataclass

FT_PREFIX = "ft:"
# Each part keeps to these characters, so ':' separates parts and an id survives a URL path as is.
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
MAX_PART = 64
_JOB_ID = re.compile(r"^job_[0-9a-f]{24}$")
# Where a job's final model lies in the store: `.../jobs/{job_id}/attempts/{n}/final`.
_FINAL_MODEL = re.compile(r"/jobs/(job_[0-9a-f]{24})/attempts/[0-9]+/final/?$")


def part(value: str, *, fallback: str = "") -> str:
    """`value` as one part of an ft id: unsafe runs become '-', at most MAX_PART characters."""
    cleaned = _UNSAFE.sub("-", value).strip("-.")[:MAX_PART].strip("-.")
    return cleaned or fallback


def short_name(base_model: str) -> str:
    """A readable name for a base model: the base of an ft id, the name of a hub id (`org/name` ->
    `name`), the last segment of a URI or path (`s3://models/tiny-gpt2/` -> `tiny-gpt2`)."""
    parsed = parse_ft_id(base_model)
    if parsed is not None:
        return parsed.base
    match = _FINAL_MODEL.search(base_model)
    if match is not None:
        return match.group(1)  # a job's model by URI: the job names it until it is resolved
    text = base_model.split("@", 1)[0] if "://" not in base_model else base_model
    segments = [s for s in text.split("/") if s and not s.endswith(":")]
    return part(segments[-1] if segments else text, fallback="model")


@dataclass(frozen=True, slots=True)
class FineTunedId:
    base: str
    team: str
    suffix: str
    job_id: str

    def __str__(self) -> str:
        return f"{FT_PREFIX}{self.base}:{self.team}:{self.suffix}:{self.job_id}"


def ft_id(*, base: str, team: str, suffix: str, job_id: str) -> str:
    """The id of the model job `job_id` made, each part cleaned as `part` does."""
    return str(FineTunedId(part(base, fallback="model"), part(team, fallback="team"), part(suffix), job_id))


def parse_ft_id(value: str) -> FineTunedId | None:
    """The parts of an ft id, or None when `value` is not spelled as one."""
    if not value.startswith(FT_PREFIX):
        return None
    parts = value[len(FT_PREFIX) :].split(":")
    if len(parts) != 4 or not _JOB_ID.match(parts[3]) or not parts[0] or not parts[1]:
        return None
    if any(p != part(p) for p in parts[:3]):
        return None
    return FineTunedId(*parts)


def final_model_job(uri: str) -> str | None:
    """The job whose final model `uri` names by the store's layout (the caller checks the job)."""
    match = _FINAL_MODEL.search(uri)
    return match.group(1) if match else None
