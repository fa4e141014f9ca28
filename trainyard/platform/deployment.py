"""The deployment: the instance catalog, the pools this installation runs and the throughput its
finished attempts measured, built once per process from settings and handed to the API, the
worker daemon and each attempt process.

Every process that plans, claims or launches work reads the same object, so a pool's capacity
is enforced the same way by `trainyard worker`, the embedded stack and the API.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from trainyard.platform.models import Job, JobAttempt
from trainyard.platform.registry import ModelRegistry
from trainyard.platform.scheduling import (
    Catalog,
    CatalogError,
    InstanceType,
    LearnedThroughput,
    Pool,
    PoolConfigError,
    ThroughputObservation,
    load_catalog,
    parse_pools,
)
from trainyard.platform.states import AttemptOutcome
from trainyard.settings import Settings

# Learning reads the newest finished attempts; older ones add little once this many agree.
LEARNED_MAX_OBSERVATIONS = 5000

_MEASURED = (JobAttempt.outcome == AttemptOutcome.SUCCEEDED, JobAttempt.tokens_per_second > 0)
# When the newest measured run finished: one walk down the ended_at index, on every estimate.
_NEWEST_MEASURED = select(func.max(JobAttempt.ended_at)).where(*_MEASURED)


class DeploymentConfigError(ValueError):
    """The catalog or the pools in the settings cannot be used."""


class Throughput:
    """Throughput that finished attempts measured. Each estimate asks when the newest measured
    run finished (an index lookup) and reads the runs again only when that changed, so the first
    comparable run to finish replaces the model in the very next plan."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._learned: LearnedThroughput | None = None
        self._newest: datetime | None = None

    def learned(self, session: Session) -> LearnedThroughput:
        # Two threads may both read when it changes; either result is as good as the other.
        newest = session.scalar(_NEWEST_MEASURED)
        if self._learned is not None and newest == self._newest:
            return self._learned
        learned = LearnedThroughput.from_observations(
            self._observations(session),
            max_parameter_ratio=self.catalog.constants.learning_max_parameter_ratio,
        )
        self._learned, self._newest = learned, newest
        return learned

    def forget(self) -> None:
        """Read the database again on the next estimate."""
        self._learned = None

    def _observations(self, session: Session) -> Iterable[ThroughputObservation]:
        rows = session.execute(
            select(JobAttempt.instance_type, JobAttempt.tokens_per_second, Job.plan)
            .join(Job, Job.id == JobAttempt.job_id)
            .where(*_MEASURED)
            .order_by(JobAttempt.ended_at.desc())
            .limit(LEARNED_MAX_OBSERVATIONS)
        ).all()
        for instance_type, tps, plan in rows:
            itype = self.catalog.get(instance_type or "")
            plan = plan or {}
            params = plan.get("model_parameters")
            if itype is None or not params:
                continue
            # A sweep's rate is that of all the instances its trials ran on at once; the
            # observation is of one instance, as the next job's estimate is.
            held = plan.get("concurrent_trials")
            per_instance = max(1, int(held)) if isinstance(held, int | float) else 1
            yield ThroughputObservation.for_instance(
                itype,
                model_parameters=int(params),
                method=str(plan.get("method", "full")),
                tokens_per_second=float(tps) / per_instance,
            )


@dataclass(frozen=True)
class Deployment:
    catalog: Catalog
    pools: tuple[Pool, ...]
    throughput: Throughput = field(init=False, repr=False, compare=False)
    # The models jobs may start from, and the hub look-ups this process shares.
    models: ModelRegistry = field(init=False, repr=False, compare=False)
    _by_name: Mapping[str, Pool] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {p.instance_type: p for p in self.pools})
        object.__setattr__(self, "throughput", Throughput(self.catalog))
        object.__setattr__(self, "models", ModelRegistry())

    @property
    def available(self) -> frozenset[str]:
        """Instance types some pool here can run."""
        return frozenset(self._by_name)

    @property
    def capacity(self) -> dict[str, int]:
        """Pool name -> how many jobs it runs at once."""
        return {p.instance_type: p.max_concurrent for p in self.pools}

    def pool(self, name: str | None) -> Pool | None:
        return self._by_name.get(name) if name else None

    def instance_type(self, name: str) -> InstanceType:
        itype = self.catalog.get(name)
        if itype is None:
            raise KeyError(f"instance type {name!r} is not in the catalog")
        return itype

    def served(self, requested: Iterable[str] | None = None) -> list[str]:
        """The pools a worker claims for: those asked for, else every pool here."""
        configured = [p.instance_type for p in self.pools]
        if not requested:
            return configured
        wanted = list(requested)
        unknown = sorted(set(wanted) - set(configured))
        if unknown:
            raise DeploymentConfigError(f"pools {unknown} are not configured (configured: {configured})")
        return wanted


def load_deployment(settings: Settings) -> Deployment:
    """The deployment the settings describe; a bad catalog or pool list is refused here, at start."""
    try:
        catalog = load_catalog(settings.catalog_path, constants_path=settings.estimator_constants_path)
        pools = parse_pools(settings.pools, catalog)
    except (CatalogError, PoolConfigError) as exc:
        raise DeploymentConfigError(f"scheduling configuration is invalid: {exc}") from exc
    return Deployment(catalog=catalog, pools=tuple(pools))
