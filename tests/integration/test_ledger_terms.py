"""The claim statement bills an attempt by `ledger.terms_sql`; over random plans (hand-edited ones
too: strings, booleans, negatives, huge counts) it gives what `ledger.record_terms` gives."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from trainyard.platform.costs import ledger
from trainyard.platform.models import JobAttempt

_TERMS = ledger.terms_sql("c.plan", "c.instance_type", "c.step", "c.tokens")
_SQL = text(
    f"SELECT {', '.join(f'{expr} AS {name}' for name, expr in _TERMS.items())} FROM ("
    "SELECT CAST(:plan AS jsonb) AS plan, CAST(:instance_type AS text) AS instance_type, "
    "CAST(:step AS bigint) AS step, CAST(:tokens AS bigint) AS tokens) AS c"
)

_numbers = st.one_of(
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(min_value=-1e300, max_value=1e300, allow_nan=False, allow_infinity=False),
)
# Text the platform stores: Postgres refuses NUL in text and JSON (so does the API, api.hygiene).
_text = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=100)
_anything = st.one_of(st.none(), st.booleans(), _numbers, _text, st.just([1]))
_plans = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {},
        optional={
            "instance_type": st.one_of(st.sampled_from(["a10g", "cpu-4", ""]), _anything),
            "spot": _anything,
            "usd_per_hour": st.one_of(_numbers, _anything),
            "on_demand_usd_per_hour": st.one_of(_numbers, _anything),
            "accelerator": st.one_of(_text, _anything),
            "accelerator_count": st.one_of(_numbers, _anything),
        },
    ),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    plan=_plans,
    instance_type=st.one_of(st.none(), st.sampled_from(["", "a10g", "h100-8"])),
    prior=st.one_of(st.none(), st.tuples(st.integers(0, 10**6), st.integers(0, 10**12))),
)
def test_terms_sql_bills_as_record_terms_does(
    sessions: sessionmaker[Session],
    plan: dict[str, Any] | None,
    instance_type: str | None,
    prior: tuple[int, int] | None,
) -> None:
    # The plan as the claim reads it: from the database's JSON.
    stored = json.loads(json.dumps(plan))
    attempt = JobAttempt()
    ledger.record_terms(attempt, stored, instance_type, prior or (0, 0))
    with sessions() as s:
        row = s.execute(
            _SQL,
            {
                "plan": json.dumps(plan) if plan is not None else None,
                "instance_type": instance_type,
                "step": prior[0] if prior else None,
                "tokens": prior[1] if prior else None,
            },
        ).one()
    for name, value in row._mapping.items():
        assert value == getattr(attempt, name), name
