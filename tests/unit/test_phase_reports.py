"""Phases without Ray: the one vocabulary and its check, what the attempt's mailbox makes of the
run's reports (a phase alone moves only the phase; a sweep counts its trials), and the phases the
training callback reports around a step that saves. integration/test_progress_phases.py reads
them back through the API and the SDK."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from trainyard.platform.states import PHASES, JobPhase, checked_progress
from trainyard.workers.mailbox import Mailbox


def test_the_phases_are_spelled_once_and_checked_where_progress_is_written() -> None:
    assert [str(p) for p in PHASES] == [
        "queued",
        "starting_workers",
        "loading_model",
        "training",
        "checkpointing",
        "saving",
    ]
    assert checked_progress({"phase": JobPhase.TRAINING, "step": 3}) == {"phase": "training", "step": 3}
    assert checked_progress({"trial": 2, "trials": 4}) == {"trial": 2, "trials": 4}
    for bad in ({"phase": "Training"}, {"trial": 3, "trials": 2}, {"trial": True}, {"trials": 0}):
        with pytest.raises(ValueError):
            checked_progress(bad)


def _mailbox(trials: int | None = None) -> Mailbox:
    box = Mailbox("att_1", fenced=None, store=None)  # type: ignore[arg-type]  # progress writes nothing
    box.sweep_trials = trials
    return box


def _progress(step: int, **extra: Any) -> dict[str, Any]:
    return {"type": "progress", "step": step, "total_steps": 20, "tokens_seen": step * 256, **extra}


def test_a_phase_alone_moves_the_phase_and_keeps_the_figures() -> None:
    box = _mailbox()
    box.set_phase(JobPhase.STARTING_WORKERS)
    assert box.progress == {"phase": "starting_workers"}
    box._store({"type": "progress", "phase": "loading_model"})
    assert box.progress == {"phase": "loading_model"}
    box._store(_progress(5, phase="training", loss=3.0))
    assert box.progress["phase"] == "training" and box.progress["step"] == 5
    box._store({"type": "progress", "phase": "checkpointing"})
    assert box.progress["phase"] == "checkpointing" and box.progress["tokens"] == 1280
    # A word of another version is not passed on (the heartbeat would refuse it); the step is.
    box._store(_progress(6, phase="warming_up"))
    assert box.progress["phase"] == "checkpointing" and box.progress["step"] == 6
    assert "trial" not in box.progress and "trials" not in box.progress


def test_a_sweep_counts_the_trials_it_has_started_of_those_it_runs() -> None:
    box = _mailbox(trials=4)
    box.set_phase(JobPhase.STARTING_WORKERS)
    box._store({"type": "progress", "phase": "starting_workers"})
    assert box.progress == {"phase": "starting_workers", "trials": 4}
    box._store({"type": "progress", "phase": "loading_model", "trial": "t1"})
    assert box.progress == {"phase": "loading_model", "trials": 4, "trial": 1}
    box._store(_progress(3, phase="training", trial="t1"))
    box._store({"type": "progress", "phase": "loading_model", "trial": "t2"})
    assert (box.progress["trial"], box.progress["step"], box.progress["phase"]) == (2, 3, "loading_model")
    box._store(_progress(4, phase="training", trial="t2"))
    assert box.progress["step"] == 7 and box.progress["trial_steps"] == {"t1": 3, "t2": 4}
    assert checked_progress(box.progress) == box.progress


class _Control:
    """RunControl's handle as the callback uses it: `report.remote(event)`."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.report = SimpleNamespace(remote=self.events.append)


def test_rank_0_says_training_then_checkpointing_on_a_step_that_saves() -> None:
    from trainyard.workers.training.callbacks import PlatformCallback, StopSignal, report_phase

    control = _Control()
    report_phase(control, 0, JobPhase.LOADING_MODEL, {"trial": "t1"})  # type: ignore[arg-type]
    report_phase(control, 1, JobPhase.LOADING_MODEL)  # type: ignore[arg-type]  # other ranks say nothing
    callback = PlatformCallback(
        rank=0,
        control=control,  # type: ignore[arg-type]
        stop=StopSignal(None, rank=0, world_size=1, poll_interval_s=1.0),
        progress_interval_s=0.0,
        tags={"trial": "t1"},
    )
    state = SimpleNamespace(global_step=0, max_steps=20, num_input_tokens_seen=0, epoch=0.0)
    callback.on_train_begin(None, state, None)
    state.global_step, state.num_input_tokens_seen = 10, 2560
    callback.on_step_end(None, state, SimpleNamespace(should_save=True, should_training_stop=False))
    phases = [(e.get("phase"), "step" in e, e.get("trial")) for e in control.events]
    assert phases == [
        ("loading_model", False, "t1"),
        ("training", False, "t1"),
        ("training", True, "t1"),  # the step's figures, then the save it is about to make
        ("checkpointing", False, "t1"),
    ]
    # The attempt's own pace, over all of its training, goes into its outcome for later plans.
    state.global_step, state.num_input_tokens_seen = 20, 5120
    callback.on_train_end(None, state, None)
    assert callback.average_tokens_per_second is not None and callback.average_tokens_per_second > 0
    assert control.events[-1]["step"] == 20
