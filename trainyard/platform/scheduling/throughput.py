"""Learning from measured runs: the throughput finished attempts reported, filed by accelerator."""

from __future__ import annotations

import hashlib
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

from trainyard.platform.scheduling.instance_types import InstanceType


class Measured(NamedTuple):
    """What comparable runs measured, scaled to a job: its tokens per second and how many
    finished runs that figure came from."""

    tokens_per_second: float
    runs: int


@dataclass(frozen=True, slots=True)
class ThroughputObservation:
    """Measured training throughput of one finished run.

    ``accelerator`` is the accelerator name from the catalog, or ``"cpu"`` for CPU types, whose
    ``accelerator_count`` is then the vCPU count (see ``for_instance``).
    """

    model_parameters: int
    method: str
    accelerator: str
    accelerator_count: int
    tokens_per_second: float

    @classmethod
    def for_instance(
        cls, itype: InstanceType, *, model_parameters: int, method: str, tokens_per_second: float
    ) -> ThroughputObservation:
        accelerator, count = throughput_key(itype)
        return cls(model_parameters, method, accelerator, count, tokens_per_second)


def throughput_key(itype: InstanceType) -> tuple[str, int]:
    """How observations on an instance type are filed: accelerator and how many of them."""
    if itype.accelerator is None:
        return "cpu", itype.vcpus
    return itype.accelerator, itype.accelerator_count * itype.nodes


class LearnedThroughput:
    """Measured throughput that replaces the FLOP-based prediction for comparable jobs.

    Comparable means the same method and accelerator (for CPU types, ``"cpu"``) and a model
    within ``max_parameter_ratio`` of the job's size; runs on the same number of devices (vCPUs
    for CPU types) are preferred, and where there are none, runs on other counts of the same
    device. Each match is scaled to the job by the parameter ratio (throughput falls roughly as
    1/parameters at fixed FLOP/s) and by the device count; the median of the matches is used so
    one odd run does not swing the estimate. One comparable run is enough to replace the model.

    ``version`` names what it was learned from (the observations used, in any order, and the
    ratio): two built from the same runs have the same version, so estimates cached under one
    stay valid for the other, and any new or changed run gives a new one.
    """

    def __init__(self, observations: Iterable[ThroughputObservation], *, max_parameter_ratio: float = 2.0):
        self.max_parameter_ratio = max_parameter_ratio
        self._by_key: dict[tuple[str, str], list[ThroughputObservation]] = {}
        used: list[tuple[str, str, int, int, float]] = []
        for obs in observations:
            if obs.tokens_per_second > 0 and obs.model_parameters > 0 and obs.accelerator_count > 0:
                self._by_key.setdefault((obs.method, obs.accelerator), []).append(obs)
                used.append(
                    (
                        obs.method,
                        obs.accelerator,
                        obs.accelerator_count,
                        obs.model_parameters,
                        obs.tokens_per_second,
                    )
                )
        # Computed once here (a few ms for thousands of runs), not on every lookup.
        digest = hashlib.blake2b(repr((max_parameter_ratio, sorted(used))).encode(), digest_size=16)
        self.version = digest.hexdigest()

    @classmethod
    def from_observations(
        cls, observations: Iterable[ThroughputObservation], *, max_parameter_ratio: float = 2.0
    ) -> LearnedThroughput:
        return cls(observations, max_parameter_ratio=max_parameter_ratio)

    def __len__(self) -> int:
        return sum(len(v) for v in self._by_key.values())

    def tokens_per_second(
        self, *, model_parameters: int, method: str, accelerator: str, accelerator_count: int
    ) -> float | None:
        found = self.lookup(
            model_parameters=model_parameters,
            method=method,
            accelerator=accelerator,
            accelerator_count=accelerator_count,
        )
        return found.tokens_per_second if found is not None else None

    def lookup(
        self, *, model_parameters: int, method: str, accelerator: str, accelerator_count: int
    ) -> Measured | None:
        """The measured figure for a job of this shape, with the runs it came from; None when
        no comparable run finished."""
        candidates = self._by_key.get((method, accelerator), ())
        ratio = self.max_parameter_ratio
        matches = [o for o in candidates if 1 / ratio <= o.model_parameters / model_parameters <= ratio]
        if not matches:
            return None
        # Runs on the same number of devices already include its communication overhead.
        same_count = [o for o in matches if o.accelerator_count == accelerator_count]
        pool = same_count or matches
        scaled = [
            o.tokens_per_second
            * (o.model_parameters / model_parameters)
            * (accelerator_count / o.accelerator_count)
            for o in pool
        ]
        return Measured(statistics.median(scaled), len(pool))
