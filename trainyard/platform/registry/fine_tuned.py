"""Each team's fine-tuned models: the final model of every succeeded job, named by an ft id.

An ft id resolves only for the team that made the model (admin keys, which see every team's
jobs, resolve any): another team's id answers exactly as an id that names nothing does, 404
`model_not_found`. The id is resolved to the job's final model URI before the source policy
checks it, so the policy sees the store URI it always did.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from trainyard.platform import states
from trainyard.platform.auth import Principal
from trainyard.platform.errors import NotFound
from trainyard.platform.models import Job, Team
from trainyard.platform.registry.names import final_model_job, ft_id, parse_ft_id, short_name

# Fine-tunes of fine-tunes are named after the model at the root; a chain is followed this far.
MAX_CHAIN = 8
MAX_LISTED = 1000


@dataclass(frozen=True)
class FineTunedModel:
    id: str
    job: Job
    team_name: str
    uri: str

    @property
    def created(self) -> datetime | None:
        return self.job.finished_at or self.job.updated_at


def final_model_uri(job: Job) -> str | None:
    if job.status != states.SUCCEEDED:
        return None
    uri = (job.result or {}).get("final_model_uri")
    return str(uri) if uri else None


def suffix_of(job: Job) -> str:
    # A job named `ft:...` was named for its model (the OpenAI dialect without a suffix); any
    # other name is the caller's own, as OpenAI's `user_provided_suffix` is.
    return "" if job.name.startswith("ft:") else job.name


class _Names:
    """Base names and team names for a batch of jobs, each looked up once."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.teams: dict[str, str] = {}
        self.bases: dict[str, str] = {}

    def team(self, team_ids: Iterable[str]) -> None:
        wanted = {t for t in team_ids if t not in self.teams}
        if wanted:
            rows = self.session.execute(select(Team.id, Team.name).where(Team.id.in_(wanted)))
            self.teams.update({team_id: name for team_id, name in rows})

    def base(self, base_model: str, depth: int = 0) -> str:
        """The short name of the model at the root of `base_model`'s chain of fine-tunes."""
        if base_model in self.bases:
            return self.bases[base_model]
        name = short_name(base_model)
        parent_id = final_model_job(base_model)
        if parent_id is not None and depth < MAX_CHAIN:
            parent = self.session.get(Job, parent_id)
            if parent is not None and final_model_uri(parent) == base_model:
                name = self.base(str(parent.spec.get("base_model") or ""), depth + 1)
        self.bases[base_model] = name
        return name

    def model_id(self, job: Job) -> str:
        self.team([job.team_id])
        return ft_id(
            base=self.base(str(job.spec.get("base_model") or "")),
            team=self.teams.get(job.team_id, ""),
            suffix=suffix_of(job),
            job_id=job.id,
        )


def model_ids(session: Session, jobs: Sequence[Job]) -> dict[str, str]:
    """Job id -> the ft id of the model it made, for the succeeded jobs among `jobs`."""
    done = [job for job in jobs if final_model_uri(job)]
    names = _Names(session)
    names.team(job.team_id for job in done)
    return {job.id: names.model_id(job) for job in done}


def ids_for_uris(session: Session, uris: Iterable[str | None], *, team_id: str) -> dict[str, str]:
    """Final model URIs of team `team_id`'s jobs -> their ft ids (other URIs are left out, so
    a job started from another team's model by an admin names no other team)."""
    by_job = {job_id: uri for uri in uris if uri and (job_id := final_model_job(uri))}
    if not by_job:
        return {}
    jobs = list(session.scalars(select(Job).where(Job.id.in_(list(by_job)), Job.team_id == team_id)))
    ids = model_ids(session, [job for job in jobs if final_model_uri(job) == by_job[job.id]])
    return {by_job[job_id]: model_id for job_id, model_id in ids.items()}


def _not_found(value: str, param: str) -> NotFound:
    return NotFound(
        f"no model {value!r}: not one of this team's fine-tuned models (GET /v1/models lists them)",
        code="model_not_found",
        param=param,
    )


def resolve(session: Session, principal: Principal, value: str, *, param: str = "model") -> FineTunedModel:
    """The team's fine-tuned model named `value`; 404 `model_not_found` for anything else,
    another team's model included."""
    parsed = parse_ft_id(value)
    if parsed is None:
        raise _not_found(value, param)
    query = select(Job).where(Job.id == parsed.job_id)
    if not principal.is_admin:
        query = query.where(Job.team_id == principal.team_id)
    job = session.scalar(query)
    uri = final_model_uri(job) if job is not None else None
    if job is None or uri is None:
        raise _not_found(value, param)
    names = _Names(session)
    model_id = names.model_id(job)
    if model_id != value:
        # One spelling per model: a job id under another base, team or suffix names nothing.
        raise _not_found(value, param)
    return FineTunedModel(model_id, job, names.teams.get(job.team_id, ""), uri)


def list_models(session: Session, principal: Principal, *, limit: int = MAX_LISTED) -> list[FineTunedModel]:
    """The team's fine-tuned models (every team's, for an admin key), newest first."""
    query = (
        select(Job)
        .where(Job.status == states.SUCCEEDED, Job.result["final_model_uri"].astext.is_not(None))
        .order_by(Job.seq.desc())
        .limit(limit)
    )
    if not principal.is_admin:
        query = query.where(Job.team_id == principal.team_id)
    jobs = list(session.scalars(query))
    names = _Names(session)
    names.team(job.team_id for job in jobs)
    out = []
    for job in jobs:
        uri = final_model_uri(job)
        if uri:
            out.append(FineTunedModel(names.model_id(job), job, names.teams.get(job.team_id, ""), uri))
    return out
