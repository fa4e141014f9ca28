"""The model registry's pure parts: the packaged table, model names and ft ids, hub look-ups."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from trainyard.platform.registry import ModelRegistry
from trainyard.platform.registry.hub import HubLookups
from trainyard.platform.registry.names import final_model_job, ft_id, parse_ft_id, short_name
from trainyard.platform.registry.table import TABLE_PATH, load_table, packaged_table
from trainyard.platform.scheduling.catalog_files import CatalogError
from trainyard.platform.scheduling.model_info import EstimateInputError, model_info_from_config
from trainyard.platform.spec import JobSpec

JOB = "job_0123456789abcdef01234567"
GPT2_CONFIG = {"model_type": "gpt2", "n_embd": 768, "n_layer": 12, "n_head": 12, "vocab_size": 50257}

# --------------------------------------------------------------------------------------- the table


def test_every_published_count_agrees_with_the_architecture_it_is_listed_with() -> None:
    table = packaged_table()
    assert len(table) >= 40
    for entry in table:
        derived = model_info_from_config(dict(_config_of(entry.id)))
        assert derived is not None, entry.id
        # Exact but for Gemma 2, whose extra norms (2 x hidden per layer) the formula leaves out.
        tolerance = 1e-4 if derived.model_type == "gemma2" else 0.0
        assert abs(derived.parameters - entry.info.parameters) <= tolerance * entry.info.parameters, entry.id
        assert entry.info.source == "registry" and entry.info.layers and entry.info.hidden_size
        assert entry.context_length and entry.license and entry.created > 1_500_000_000, entry.id


def _config_of(model_id: str) -> Mapping[str, Any]:
    for row in yaml.safe_load(TABLE_PATH.read_text())["models"]:
        if model_id in row["ids"]:
            return row["config"]  # type: ignore[no-any-return]
    raise KeyError(model_id)


def test_the_common_open_models_are_known_by_their_hub_ids() -> None:
    table = packaged_table()
    expected = {
        "meta-llama/Llama-3.2-1B": (1_235_814_400, 16, 2048, 128_256, 131_072, "llama3.2"),
        "meta-llama/Llama-3.1-8B-Instruct": (8_030_261_248, 32, 4096, 128_256, 131_072, "llama3.1"),
        "mistralai/Mistral-7B-v0.1": (7_241_732_096, 32, 4096, 32_000, 32_768, "apache-2.0"),
        "Qwen/Qwen2.5-0.5B": (494_032_768, 24, 896, 151_936, 32_768, "apache-2.0"),
        "Qwen/Qwen2.5-72B-Instruct": (72_706_203_648, 80, 8192, 152_064, 131_072, "qwen"),
        "google/gemma-2-9b": (9_241_705_984, 42, 3584, 256_000, 8192, "gemma"),
        "microsoft/Phi-3-mini-4k-instruct": (3_821_079_552, 32, 3072, 32_064, 4096, "mit"),
        "openai-community/gpt2-xl": (1_557_611_200, 48, 1600, 50_257, 1024, "mit"),
    }
    for model_id, (params, layers, hidden, vocab, context, licence) in expected.items():
        entry = table.get(model_id)
        assert entry is not None, model_id
        got = (
            entry.info.parameters,
            entry.info.layers,
            entry.info.hidden_size,
            entry.info.vocab_size,
            entry.context_length,
            entry.license,
        )
        assert got == (params, layers, hidden, vocab, context, licence), model_id


def test_look_ups_ignore_case_and_revision_and_follow_aliases() -> None:
    table = packaged_table()
    entry = table.get("openai-community/gpt2")
    assert entry is not None
    assert table.get("gpt2") is entry and table.get("OpenAI-Community/GPT2") is entry
    assert table.get("openai-community/gpt2@main") is entry
    assert table.get("meta-llama/Meta-Llama-3.1-8B") is table.get("meta-llama/Llama-3.1-8B")
    assert table.get("someone/else") is None


@pytest.mark.parametrize(
    ("row", "field"),
    [
        ({"ids": [], "parameters": 1, "config": GPT2_CONFIG}, "ids"),
        ({"ids": ["a/b"], "parameters": 0, "config": GPT2_CONFIG}, "parameters"),
        ({"ids": ["a/b"], "parameters": 5, "config": {"model_type": "gpt2"}}, "config"),
        ({"ids": ["a/b"], "parameters": 5, "config": GPT2_CONFIG, "released": "last year"}, "released"),
    ],
)
def test_a_bad_row_is_refused_by_name(tmp_path: Path, row: dict[str, Any], field: str) -> None:
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump({"models": [row]}))
    with pytest.raises(CatalogError) as err:
        load_table(path)
    assert err.value.field == field and err.value.path == str(path)


def test_an_id_listed_twice_is_refused(tmp_path: Path) -> None:
    row = {"ids": ["a/b"], "parameters": 5, "config": GPT2_CONFIG}
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump({"models": [row, {**row, "ids": ["A/B"]}]}))
    with pytest.raises(CatalogError, match="listed twice"):
        load_table(path)


# --------------------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    ("base_model", "name"),
    [
        ("meta-llama/Llama-3.1-8B", "Llama-3.1-8B"),
        ("meta-llama/Llama-3.1-8B@main", "Llama-3.1-8B"),
        ("gpt2", "gpt2"),
        ("file:///tmp/pytest-7/models/tiny-gpt2", "tiny-gpt2"),
        ("s3://models/llama/8b/", "8b"),
        ("/srv/models/My Model", "My-Model"),
        (f"ft:tiny-gpt2:research::{JOB}", "tiny-gpt2"),
        (f"s3://store/jobs/{JOB}/attempts/2/final", JOB),
    ],
)
def test_short_names_are_readable(base_model: str, name: str) -> None:
    assert short_name(base_model) == name


def test_ft_ids_are_spelled_as_openai_spells_them_and_parse_back() -> None:
    model_id = ft_id(base="tiny-gpt2", team="research lab", suffix="my:run", job_id=JOB)
    assert model_id == f"ft:tiny-gpt2:research-lab:my-run:{JOB}"
    parsed = parse_ft_id(model_id)
    assert parsed is not None and (parsed.base, parsed.team, parsed.suffix, parsed.job_id) == (
        "tiny-gpt2",
        "research-lab",
        "my-run",
        JOB,
    )
    assert str(parsed) == model_id
    assert ft_id(base="x", team="t", suffix="", job_id=JOB) == f"ft:x:t::{JOB}"  # no suffix, as OpenAI


@pytest.mark.parametrize(
    "value",
    [
        "tiny-gpt2",
        f"ft:tiny-gpt2:research:{JOB}",  # a part missing
        "ft:tiny-gpt2:research::job_123",  # not a job id
        f"ft::research::{JOB}",  # no base
        f"ft:a b:research::{JOB}",  # a part not as the platform spells one
        f"ft:tiny:research::{JOB}:extra",
    ],
)
def test_what_is_not_an_ft_id_does_not_parse(value: str) -> None:
    assert parse_ft_id(value) is None


def test_the_job_of_a_final_model_is_read_from_the_store_layout() -> None:
    assert final_model_job(f"file:///data/store/jobs/{JOB}/attempts/1/final") == JOB
    assert final_model_job(f"s3://b/p/jobs/{JOB}/attempts/3/final/") == JOB
    assert final_model_job(f"s3://b/p/jobs/{JOB}/attempts/3/checkpoints/step_5") is None


# ------------------------------------------------------------------------------------ hub look-ups


class SlowHub:
    """A hub that answers after `delay` seconds, counting the questions it gets."""

    def __init__(self, delay: float, config: Mapping[str, Any] | None = GPT2_CONFIG) -> None:
        self.delay = delay
        self.config = config
        self.calls: list[str] = []
        self.release = threading.Event()

    def __call__(self, model_id: str, timeout_s: float) -> Mapping[str, Any] | None:
        self.calls.append(model_id)
        self.release.wait(self.delay)
        if self.config is None:
            raise OSError("hub unreachable")
        return self.config


def test_a_slow_hub_costs_a_request_only_the_wait_and_its_answer_is_kept_later() -> None:
    hub = SlowHub(delay=5.0)
    lookups = HubLookups(hub)
    kept: list[Mapping[str, Any]] = []
    started = time.monotonic()
    assert lookups.lookup("org/slow", kept.append, wait_s=0.2) is None
    assert time.monotonic() - started < 1.0
    # Another request for the same id joins the look-up rather than asking again.
    assert lookups.lookup("ORG/slow", kept.append, wait_s=0.0) is None
    hub.release.set()
    deadline = time.monotonic() + 5
    while not kept and time.monotonic() < deadline:
        time.sleep(0.01)
    assert kept == [GPT2_CONFIG] and hub.calls == ["org/slow"]


def test_a_hanging_hub_costs_the_wait_once_not_once_per_request() -> None:
    hub = SlowHub(delay=5.0)
    lookups = HubLookups(hub)
    assert lookups.lookup("org/hangs", lambda c: None, wait_s=0.3) is None
    started = time.monotonic()
    assert lookups.lookup("org/hangs", lambda c: None, wait_s=0.3) is None
    assert time.monotonic() - started < 0.1 and hub.calls == ["org/hangs"]
    hub.release.set()


def test_a_failed_look_up_is_not_repeated_for_a_while() -> None:
    hub = SlowHub(delay=0.0, config=None)
    lookups = HubLookups(hub, retry_after_s=60)
    assert lookups.lookup("org/missing", lambda c: None, wait_s=2.0) is None
    started = time.monotonic()
    assert lookups.lookup("org/missing", lambda c: None, wait_s=2.0) is None
    assert time.monotonic() - started < 0.5 and hub.calls == ["org/missing"]


def test_look_ups_in_flight_are_bounded() -> None:
    hub = SlowHub(delay=5.0)
    lookups = HubLookups(hub, max_in_flight=2)
    for name in ("a/1", "a/2", "a/3"):
        lookups.lookup(name, lambda c: None)
    assert sorted(hub.calls) == ["a/1", "a/2"]
    hub.release.set()


def test_a_hub_answer_within_the_wait_sizes_the_model() -> None:
    hub = SlowHub(delay=0.0)
    registry = ModelRegistry(hub=HubLookups(hub), wait_s=2.0)
    spec = JobSpec(name="x", base_model="someone/gpt2-like", training_file="s3://d/t.jsonl")
    info = registry.size(_NoDatabase(), spec)  # type: ignore[arg-type]
    assert info.parameters == 124_439_808 and info.source == "hub"


def test_a_known_model_is_sized_without_the_hub() -> None:
    hub = SlowHub(delay=0.0)
    registry = ModelRegistry(hub=HubLookups(hub))
    spec = JobSpec(name="x", base_model="Qwen/Qwen2.5-7B-Instruct", training_file="s3://d/t.jsonl")
    info = registry.size(_NoDatabase(), spec)  # type: ignore[arg-type]
    assert (info.parameters, info.source) == (7_615_616_512, "registry") and hub.calls == []


def test_an_unknown_model_is_sized_by_the_hint_or_refused_with_the_field_to_set() -> None:
    hub = SlowHub(delay=0.0, config=None)
    registry = ModelRegistry(hub=HubLookups(hub), wait_s=0.5)
    base = {"name": "x", "base_model": "someone/private", "training_file": "s3://d/t.jsonl"}
    hinted = registry.size(_NoDatabase(), JobSpec(**base, model_parameters=7_000_000))  # type: ignore[arg-type]
    assert (hinted.parameters, hinted.source) == (7_000_000, "spec")
    with pytest.raises(EstimateInputError) as err:
        registry.size(_NoDatabase(), JobSpec(**base))  # type: ignore[arg-type]
    assert err.value.param == "model_parameters" and "someone/private" in err.value.message


class _NoDatabase:
    """A session without a database: the registry then keeps nothing, as in a unit test."""

    def get_bind(self) -> None:
        raise RuntimeError("no database")
