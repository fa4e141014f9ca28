"""One vocabulary: the sets are made of the enums, and the CHECK migration spells what they spell
(integration/test_vocabulary_db.py shows the database refusing any other word)."""

from __future__ import annotations

import importlib.util

from support import ROOT

from trainyard.platform import events, states
from trainyard.platform.states import AttemptOutcome, JobStatus

MIGRATION = ROOT / "migrations" / "versions" / "0003_vocabulary_checks.py"


def _migration() -> object:
    spec = importlib.util.spec_from_file_location("vocabulary_checks", MIGRATION)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_migration_spells_what_the_platform_spells() -> None:
    # A new status or outcome needs a revision that widens the CHECK; this says when one is due.
    m = _migration()
    assert set(m.STATUSES) == {s.value for s in JobStatus}  # type: ignore[attr-defined]
    assert set(m.OUTCOMES) == {o.value for o in AttemptOutcome}  # type: ignore[attr-defined]
    assert set(m.EVENT_TYPES) == events.TYPES  # type: ignore[attr-defined]
    assert set(m.EVENT_LEVELS) == events.LEVELS  # type: ignore[attr-defined]


def test_sets_are_made_of_the_vocabulary() -> None:
    assert set(JobStatus) == states.TERMINAL | states.PENDING
    assert not states.TERMINAL & states.PENDING
    assert states.ACTIVE < states.PENDING
    assert AttemptOutcome.HANDED_BACK not in states.WASTED  # it keeps its checkpoint
    assert AttemptOutcome.SUCCEEDED not in states.COUNTS_AS_FAILURE
    for src, dsts in states.ALLOWED.items():
        assert all(states.can_transition(src, d) for d in dsts)
    assert not states.can_transition("queued", "bogus")
    assert not states.can_transition("bogus", "queued")
