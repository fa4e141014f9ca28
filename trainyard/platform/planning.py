"""Planning a job: size the model and the data, estimate every option, choose by the job's
policy among the pools this deployment runs, and learn from what finished attempts measured.

This is where the scheduling package meets the database and the object store; scheduling
itself stays pure.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from trainyard.platform import costs, db, events, queue, replanning, states, storage
from trainyard.platform.deployment import Deployment
from trainyard.platform.errors import InvalidRequest, TrainyardError, Unprocessable
from trainyard.platform.models import Job, Team
from trainyard.platform.queue.quotas import QuotaExceeded, check_gpu_quota
from trainyard.platform.scheduling import (
    Catalog,
    Decision,
    Estimate,
    EstimateInputError,
    LearnedThroughput,
    ModelInfo,
    NoFeasibleOption,
    choose,
    estimate_all,
    read_model_config,
    resolve_model_info,
)
from trainyard.platform.scheduling.dataset_tokens import dataset_tokens_and_source
from trainyard.platform.scheduling.execution import runnable
from trainyard.platform.sources import is_local_path
from trainyard.platform.spec import JobSpec

# At most this much of a training file is read at submit time (a ranged GET or a bounded read);
# the tokens of a larger file are extrapolated from it by the file's size.
DATASET_SAMPLE_BYTES = 8 * storage.MB


@dataclass(frozen=True)
class Planned:
    decision: Decision | None
    options: list[Estimate]
    error: NoFeasibleOption | None
    model: ModelInfo
    tokens: int
    # "counted", "dataset_tokens", "max_steps" or "sampled 8.0 MB of 2.0 GB, extrapolated".
    tokens_source: str
    # The spec it was planned for: `plan_dict` chooses the best option of each pool by its policy.
    spec: JobSpec | None = None


def _waiting_unpinned(pools: list[str]) -> Any:
    """Queued in one of `pools`, and free to move: not pinned to an instance type."""
    return and_(Job.status == states.QUEUED, Job.pool.in_(pools), Job.spec["instance_type"].astext.is_(None))


def check_team_limits(session: Session, job: Job, plan: dict[str, Any]) -> None:
    """Refuse moving a queued job to `plan` past its team's GPU quota (`QuotaExceeded`) or
    budget (`costs.BudgetExhausted`), as an owner's move (`moves.move_job`) and dispatch both
    must: a job moved past its quota would be failed by the next claim as one that can never
    run. The old estimate is already counted against the budget: only the difference is new."""
    team = session.get(Team, job.team_id)
    assert team is not None
    check_gpu_quota(team.max_concurrent_gpus, plan)
    extra = float(plan.get("estimated_cost_usd") or 0.0) - float(
        (job.plan or {}).get("estimated_cost_usd") or 0.0
    )
    if extra > 0:
        costs.check_budget(session, job.team_id, extra)


def _within_team_limits(session: Session, job: Job, plan: dict[str, Any]) -> bool:
    try:
        check_team_limits(session, job, plan)
    except (QuotaExceeded, costs.BudgetExhausted):
        return False
    return True


def memory_plan(est: Estimate) -> dict[str, Any]:
    """The part of a plan the worker trains with exactly: micro-batch, accumulation (their product
    is the job's batch_size x gradient_accumulation_steps), checkpointing and sharding."""
    return {
        "strategy": est.strategy,
        "gradient_checkpointing": est.gradient_checkpointing,
        "micro_batch_size": est.micro_batch_size,
        "gradient_accumulation_steps": est.gradient_accumulation_steps,
    }


def _read_bytes(uri: str) -> bytes:
    return storage.read_uri(uri)


class Planner:
    """Plans jobs for one deployment: its catalog prices the options, its pools bound the choice,
    its learned throughput corrects the estimates."""

    def __init__(self, deployment: Deployment) -> None:
        self.deployment = deployment

    @property
    def catalog(self) -> Catalog:
        return self.deployment.catalog

    @property
    def available(self) -> frozenset[str]:
        return self.deployment.available

    @property
    def capacity(self) -> dict[str, int]:
        return self.deployment.capacity

    # -- inputs ----------------------------------------------------------------------------
    def _model(self, session: Session, spec: JobSpec) -> ModelInfo:
        """Size from the model's config.json (local or s3://, read once), else the request's hint.
        A hub id is sized by the registry: its table or cache, else a bounded hub look-up."""
        source = spec.base_model
        # Told from the spelling alone: a caller's value never reaches the filesystem as a name here.
        if not source.startswith("s3://") and not is_local_path(source):
            return self.deployment.models.size(session, spec)
        config = read_model_config(source, read_bytes=_read_bytes, hub_timeout_s=3.0)
        return resolve_model_info(spec, config=config or {})

    def _tokens(self, spec: JobSpec) -> tuple[int, str]:
        """Tokens per epoch and their source. The file is sized by HEAD/stat and only its first
        DATASET_SAMPLE_BYTES are read: a smaller file is counted whole, a larger one extrapolated."""
        data, size = None, None
        if spec.dataset_tokens is None and spec.training_file and not spec.training_file.startswith("file-"):
            try:
                size = storage.uri_size(spec.training_file)
                data = storage.read_uri_prefix(spec.training_file, DATASET_SAMPLE_BYTES)
            except Exception:
                data = None
        return dataset_tokens_and_source(
            spec, data, total_bytes=size, chars_per_token=self.catalog.constants.chars_per_token
        )

    def learned(self, session: Session) -> LearnedThroughput:
        return self.deployment.throughput.learned(session)

    # -- decisions -------------------------------------------------------------------------
    def estimate(
        self,
        session: Session,
        spec: JobSpec,
        *,
        now: datetime | None = None,
        available: frozenset[str] | None = None,
        autocommit: bool = False,
    ) -> Planned:
        """`autocommit`: the session's first statement here, after the store and hub reads,
        starts it in autocommit (`db.autocommit`), with no connection held across those reads."""
        now = now or datetime.now(UTC)
        if spec.instance_type and self.catalog.get(spec.instance_type) is None:
            raise InvalidRequest(
                f"unknown instance_type {spec.instance_type!r}; see GET /v1/instance-types",
                code="instance_type_unknown",
                param="instance_type",
            )
        try:
            # The store and hub reads come first, before `session` is used: `submission` releases
            # its connection for them, and no transaction waits on the network.
            model = self._model(session, spec)
            tokens, tokens_source = self._tokens(spec)
        except EstimateInputError as exc:
            raise Unprocessable(str(exc), code="estimate_input_missing", param=exc.param) from exc
        if autocommit:
            db.autocommit(session)
        options = estimate_all(spec, self.catalog, model, tokens, learned=self.learned(session), now=now)
        try:
            decision: Decision | None = choose(
                spec, options, available=self.available if available is None else available
            )
            error = None
        except NoFeasibleOption as exc:
            decision, error = None, exc
        return Planned(decision, options, error, model, tokens, tokens_source, spec)

    def plan(
        self, session: Session, spec: JobSpec, *, autocommit: bool = False
    ) -> tuple[dict[str, Any], str]:
        """The plan stored on a new job and the pool it waits in; 422 when nothing can run it.
        `autocommit` as for `estimate`."""
        planned = self.estimate(session, spec, autocommit=autocommit)
        if planned.decision is None:
            assert planned.error is not None
            raise Unprocessable(planned.error.message, code=planned.error.code, param=planned.error.param)
        return self.plan_dict(planned), planned.decision.chosen.instance_type

    def plan_dict(self, planned: Planned) -> dict[str, Any]:
        assert planned.decision is not None
        chosen = planned.decision.chosen
        itype = self.catalog[chosen.instance_type]
        # A sweep holds an instance per trial it runs at once: billed, and counted against GPU
        # quotas, for all of them (the ledger takes its terms from here at claim).
        held = chosen.concurrent_trials
        return {
            "instance_type": chosen.instance_type,
            "spot": chosen.spot,
            "kind": itype.kind,
            "accelerator": itype.accelerator,
            "accelerator_count": itype.accelerator_count * itype.nodes * held,
            "workers": itype.workers,
            "usd_per_hour": chosen.usd_per_hour,
            "on_demand_usd_per_hour": itype.on_demand_usd_per_hour * held,
            "trials": chosen.trials,
            "concurrent_trials": held,
            "estimated_seconds": round(chosen.seconds, 1),
            "estimated_cost_usd": round(chosen.cost_usd, 6),
            "usd_per_million_tokens": chosen.usd_per_million_tokens,
            **memory_plan(chosen),
            "model_parameters": planned.model.parameters,
            "method": chosen.method,
            "tokens": planned.tokens,
            # Known before training starts, so progress has a total from the first poll.
            "total_steps": chosen.steps,
            "dataset_tokens_source": planned.tokens_source,
            # Which speed the estimate used: "learned" (from `throughput_runs` finished runs of
            # a comparable shape) or "model" (FLOPs over the devices' speed), and the figure.
            "throughput_source": chosen.throughput_source,
            "throughput_runs": chosen.throughput_runs,
            "tokens_per_second": round(chosen.tokens_per_second, 1),
            "objective": planned.decision.objective,
            "meets_deadline": chosen.meets_deadline,
            "within_budget": chosen.within_budget,
            "reason": planned.decision.reason,
            "alternatives": [
                {
                    "option": a.option,
                    "estimated_seconds": round(a.seconds, 1),
                    "estimated_cost_usd": round(a.cost_usd, 6),
                }
                for a in planned.decision.alternatives[:3]
            ],
            "pool_options": self.pool_options(planned),
            "decided_at": datetime.now(UTC).isoformat(),
        } | self._contract(planned)

    def _contract(self, planned: Planned) -> dict[str, Any]:
        """The deadline contract's options, for jobs it re-plans as they run (``replanning``)."""
        if planned.decision is None or planned.spec is None:
            return {}
        block = replanning.contract_block(planned.spec, planned.decision, self.catalog)
        return {"contract": block} if block is not None else {}

    def pool_options(self, planned: Planned) -> list[dict[str, Any]]:
        """The best option on each pool of this deployment by the job's policy, whatever type the
        job is pinned to: what a queued job's answer offers as alternatives (`queue.answers`),
        from the estimates just made rather than a second estimate on every read."""
        if planned.spec is None:
            return []
        unpinned = planned.spec.model_copy(update={"instance_type": None})
        out: list[dict[str, Any]] = []
        for pool in sorted(self.available):
            try:
                best = choose(unpinned, planned.options, available=frozenset({pool})).chosen
            except NoFeasibleOption:
                continue
            itype = self.catalog[best.instance_type]
            out.append(
                {
                    "instance_type": best.instance_type,
                    "spot": best.spot,
                    "accelerator_count": itype.accelerator_count * itype.nodes,
                    "estimated_seconds": round(best.seconds, 1),
                    "estimated_cost_usd": round(best.cost_usd, 6),
                    "meets_deadline": best.meets_deadline,
                }
            )
        return out

    def option_dict(self, est: Estimate) -> dict[str, Any]:
        itype = self.catalog[est.instance_type]
        return {
            "instance_type": est.instance_type,
            "kind": itype.kind,
            "accelerator": itype.accelerator,
            "count": itype.accelerator_count * itype.nodes,
            "spot": est.spot,
            "fits": est.fits,
            "runnable": runnable(itype.kind),
            "strategy": est.strategy,
            "micro_batch_size": est.micro_batch_size,
            "gradient_accumulation_steps": est.gradient_accumulation_steps,
            "gradient_checkpointing": est.gradient_checkpointing,
            "estimated_seconds": round(est.seconds, 1),
            "estimated_cost_usd": round(est.cost_usd, 6),
            "usd_per_hour": est.usd_per_hour,
            "usd_per_million_tokens": est.usd_per_million_tokens,
            "trials": est.trials,
            "concurrent_trials": est.concurrent_trials,
            "tokens_per_second": round(est.tokens_per_second, 1),
            "throughput_source": est.throughput_source,
            "throughput_runs": est.throughput_runs,
            "meets_deadline": est.meets_deadline,
            "within_budget": est.within_budget,
            "available": est.instance_type in self.available,
            "memory_gb": est.memory.total_gb,
            "reason": est.reason,
        }

    def place(self, job: Job, planned: Planned, plan: dict[str, Any] | None = None) -> dict[str, Any]:
        """Put a queued job (its row locked by the caller) where `planned` decided: its plan
        (`plan_dict`'s, unless given), pool and instance type, as dispatch and a move do alike.
        Returns the new plan."""
        assert planned.decision is not None
        plan = plan if plan is not None else self.plan_dict(planned)
        chosen = planned.decision.chosen.instance_type
        job.plan, job.pool, job.instance_type = plan, chosen, chosen
        return plan

    def redispatch(self, session: Session, *, waited_seconds: float = 30.0, limit: int = 50) -> list[str]:
        """Move jobs waiting behind a full pool to the best pool with room, when that option
        still meets the job's constraint (deadline, budget); otherwise they keep waiting.

        Jobs pinned to an instance type stay where they are. Re-planning reads the store (the
        model's config, the dataset's size), so the candidates are read without a lock and each
        is locked only to be placed, once its estimate is in: a slow or hanging store never
        holds a job's row, and its owner's cancel or move is answered at once. A job claimed,
        cancelled, moved or pinned meanwhile is left as it is. Returns the ids of moved jobs.
        """
        active = dict(
            session.execute(
                select(Job.pool, func.count())
                .where(Job.status.in_(sorted(states.ACTIVE)), Job.pool.is_not(None))
                .group_by(Job.pool)
            ).all()
        )
        room = {pool: cap - int(active.get(pool, 0)) for pool, cap in self.capacity.items()}
        full = [pool for pool, free in room.items() if free <= 0]
        if not full or all(free <= 0 for free in room.values()):
            session.commit()
            return []
        candidates = session.execute(
            select(Job.id, Job.pool, Job.spec)
            .where(_waiting_unpinned(full), Job.created_at < func.now() - timedelta(seconds=waited_seconds))
            .order_by(Job.priority.desc(), Job.seq)
            .limit(limit)
        ).all()
        db.release(session)
        moved: list[str] = []
        for job_id, pool, spec_json in candidates:
            open_pools = frozenset(pool for pool, free in room.items() if free > 0)
            if not open_pools:
                break
            spec = JobSpec.model_validate(spec_json)
            try:
                planned = self.estimate(session, spec, available=open_pools)
            except TrainyardError:
                db.release(session)
                continue
            decision = planned.decision
            if decision is None or (
                spec.policy.objective == "deadline" and not decision.chosen.meets_deadline
            ):
                db.release(session)
                continue
            job = session.scalars(
                select(Job)
                .where(Job.id == job_id, Job.pool == pool, _waiting_unpinned([pool]))
                .with_for_update(skip_locked=True)
                .execution_options(populate_existing=True)
            ).one_or_none()
            plan = self.plan_dict(planned)
            if job is None or job.spec != spec_json or not _within_team_limits(session, job, plan):
                db.release(session)  # claimed, cancelled, moved or pinned meanwhile, or over a limit
                continue
            old_pool, plan = job.pool, self.place(job, planned, plan)
            room[decision.chosen.instance_type] -= 1
            events.add(
                session,
                job.id,
                events.MESSAGE,
                f"pool {old_pool} is full; moved to {job.pool}: {plan['reason']}",
                data={"from_pool": old_pool, "to_pool": job.pool, "plan": plan},
            )
            queue.notify(session, job.pool)
            # One transaction per move: no lock is held into the next job's store reads.
            session.commit()
            moved.append(job.id)
        return moved
