"""Which instance kinds this platform can actually run: an offer is only made where a tested
execution path exists.

The training loop is torch on CPU or CUDA (the same code path: Ray Train places one worker per
GPU and the Hugging Face Trainer runs on whatever device torch gives it). TPUs need torch_xla and
an XLA device in the loop; until a test runs a job on XLA's CPU device (``PJRT_DEVICE=CPU``) in an
environment of its own, TPU types stay in the catalog, priced and estimated, but are never chosen.
"""

from __future__ import annotations

from types import MappingProxyType

RUNNABLE_KINDS: frozenset[str] = frozenset({"cpu", "gpu", "multi_gpu"})

_WHY_NOT: MappingProxyType[str, str] = MappingProxyType(
    {
        "tpu": (
            "no tested XLA execution path: the training loop runs torch on CPU or CUDA; TPU types "
            "need the `tpu` extra (torch_xla) and a loop on XLA devices"
        ),
    }
)


def runnable(kind: str) -> bool:
    """Whether jobs may be placed on instance types of ``kind``."""
    return kind in RUNNABLE_KINDS


def not_runnable_reason(kind: str) -> str | None:
    """Why ``kind`` is not runnable, or None when it is."""
    if runnable(kind):
        return None
    return _WHY_NOT.get(kind, f"no execution path for instance kind {kind!r}")


__all__ = ["RUNNABLE_KINDS", "not_runnable_reason", "runnable"]
