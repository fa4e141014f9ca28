"""The cost report as CSV: a cell a spreadsheet would run as a formula is defused."""

from __future__ import annotations

from trainyard.platform import costs


def test_csv_defuses_formula_cells() -> None:
    result = {
        "aggregate": ["label:x"],
        "data": [{"key": {"label:x": "=HYPERLINK(1)"}, **dict.fromkeys(costs.METRICS, 0)}],
    }
    assert "'=HYPERLINK(1)" in costs.to_csv(result)
