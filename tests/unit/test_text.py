"""The text the platform refuses (NUL, unpaired surrogates), found anywhere in decoded JSON."""

from __future__ import annotations

import pytest

from trainyard.platform import records
from trainyard.platform.text import NUL, SURROGATE, dotted, find_bad_text, text_problem


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("plain", None),
        ("", None),
        ("a\x00", NUL),
        ("\ud800", SURROGATE),
        ("x\udfff", SURROGATE),
        ("\U0001f600", None),
    ],
)
def test_text_problem(value: str, problem: str | None) -> None:
    assert text_problem(value) == problem


def test_find_bad_text_names_where() -> None:
    assert find_bad_text({"a": [1, "ok", {"b": "x\x00"}]}) == (("a", 2, "b"), NUL)
    assert find_bad_text({"meta": {"k\ud800": "v"}}) == (("meta",), f"has a key that {SURROGATE}")
    assert find_bad_text({"a": ["fine", 1.5, None, True]}) is None
    assert dotted(("messages", 0, "content")) == "messages.0.content" and dotted(()) is None


def test_records_refuse_bad_text_and_estimates_skip_it() -> None:
    lines = [b'{"text": "fine"}', b'{"text": "bad\\u0000"}']
    with pytest.raises(records.RecordError) as exc:
        list(records.read_records(lines))
    assert exc.value.line == 2 and "text holds a NUL" in exc.value.describe("f.jsonl")
    assert [r["text"] for r in records.accepted_records(lines)] == ["fine"]
