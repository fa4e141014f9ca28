"""`trainyard models` as a table: ids whole at any width, lesser columns dropped first."""

from __future__ import annotations

from rich.console import Console

from trainyard.cli.models import models_table, parameters
from trainyard.sdk import Model

FT = "ft:gpt2:research:adder:job_0123456789abcdef01234567"
MODELS = [
    Model(id=FT, source="fine_tuned", owned_by="research", parameters=124_439_808, base_model="gpt2"),
    Model(
        id="meta-llama/Llama-3.1-70B-Instruct",
        source="registry",
        owned_by="meta-llama",
        parameters=70_553_706_496,
        context_length=131_072,
        license="llama3.1",
    ),
]


def _render(width: int) -> str:
    console = Console(width=width, record=True, highlight=False)
    console.print(models_table(MODELS, width=width))
    return console.export_text()


def test_ids_stay_whole_at_80_columns_and_lesser_columns_go_first() -> None:
    narrow = _render(80)
    assert FT in narrow and "meta-llama/Llama-3.1-70B-Instruct" in narrow
    assert "70.6B" in narrow and "131,072" in narrow and "OWNER" not in narrow
    assert all(len(line) <= 80 for line in narrow.splitlines())
    wide = _render(160)
    assert "OWNER" in wide and "llama3.1" in wide and "research" in wide


def test_parameter_counts_read_as_people_say_them() -> None:
    assert [parameters(n) for n in (124_439_808, 8_030_261_248, 31_488, None)] == [
        "124M",
        "8.03B",
        "31,488",
        "-",
    ]
