"""The model registry over HTTP, driven by the official `openai` client (and the SDK and CLI):
`/v1/models`, jobs on registry ids without a hub, sizes a hub gave kept for the next job, and
fine-tuned model ids as the base of further jobs, for their own team only.

No Ray: a test plays the worker by claiming a job and finishing it with a final model in the
store, as a worker records one.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator, Mapping
from typing import Any

import openai
import pytest
import typer
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker
from support import CHAT, AppTransport, headers, jsonl, make_key, make_sdk
from typer.testing import CliRunner

from trainyard.cli import client as cli_client
from trainyard.cli import user as cli_user
from trainyard.platform import queue, storage
from trainyard.platform.registry import ModelRegistry

# A tiny GPT-2 as its config.json states it; its size follows from the config alone.
TINY_CONFIG = {
    "model_type": "gpt2",
    "n_embd": 64,
    "n_layer": 2,
    "n_head": 2,
    "vocab_size": 1000,
    "n_positions": 128,
}
TINY_PARAMETERS = 1000 * 64 + 128 * 64 + 2 * (12 * 64 * 64 + 13 * 64) + 2 * 64
HYPERPARAMETERS = {"n_epochs": 1, "batch_size": 4}


class Hub:
    """Stands in for the hub's config.json download: records every question, answers `config`
    after `delay` seconds (or fails when `config` is None)."""

    def __init__(self, config: Mapping[str, Any] | None = None, delay: float = 0.0) -> None:
        self.config = config
        self.delay = delay
        self.calls: list[str] = []

    def __call__(self, model_id: str, timeout_s: float) -> Mapping[str, Any] | None:
        self.calls.append(model_id)
        time.sleep(self.delay)
        if self.config is None:
            raise OSError("the hub is unreachable")
        return self.config


@pytest.fixture
def registry(client: Any, engine: Engine) -> Iterator[ModelRegistry]:
    """The app's registry, its hub replaced by a `Hub` that fails (set `.hub.fetch` to change)."""
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM model_sizes"))
    models: ModelRegistry = client.app.state.deployment.models
    models.hub.fetch = Hub()
    yield models
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM model_sizes"))


def make_openai(client: Any, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url="http://testserver/v1", api_key=key, http_client=client, max_retries=0)


@pytest.fixture
def oai(client: Any, key: str) -> openai.OpenAI:
    return make_openai(client, key)


def upload(oai: openai.OpenAI) -> str:
    return oai.files.create(file=("train.jsonl", io.BytesIO(jsonl(CHAT))), purpose="fine-tune").id


def finish(sessions: sessionmaker[Session], settings: Any, job_id: str, config: Mapping[str, Any]) -> str:
    """Play the worker: claim `job_id`, write its final model (a config.json) under attempt 1's
    prefix and finish the attempt with it. Returns the model's URI."""
    with sessions() as s:
        [claim] = queue.claim(s, worker_id="test-worker")
    assert claim.job_id == job_id
    store = storage.open_store(settings.storage_uri)
    prefix = storage.final_model_prefix(job_id, 1)
    store.put_bytes(f"{prefix}/config.json", json.dumps(config).encode())
    final = store.uri_for(prefix)
    with sessions() as s:
        queue.finish(s, claim.attempt_id, "succeeded", result={"final_model_uri": final})
    return final


# ------------------------------------------------------------------------------------- the list


def test_models_list_and_retrieve_with_the_openai_client(oai: openai.OpenAI, registry: ModelRegistry) -> None:
    models = oai.models.list().data
    assert len(models) >= 40 and all(m.object == "model" and m.created > 0 and m.owned_by for m in models)
    by_id = {m.id: m for m in models}
    llama = by_id["meta-llama/Llama-3.1-8B"]
    assert llama.owned_by == "meta-llama" and llama.model_extra is not None
    extra = llama.model_extra
    assert extra["parameters"] == 8_030_261_248 and extra["layers"] == 32 and extra["hidden_size"] == 4096
    assert extra["vocab_size"] == 128_256 and extra["context_length"] == 131_072
    assert extra["license"] == "llama3.1" and extra["source"] == "registry"

    # A hub id holds a '/': the client sends it as one path segment, and it comes back whole.
    got = oai.models.retrieve("Qwen/Qwen2.5-0.5B-Instruct")
    assert got.id == "Qwen/Qwen2.5-0.5B-Instruct" and got.owned_by == "Qwen"
    assert got.model_extra is not None and got.model_extra["parameters"] == 494_032_768
    assert oai.models.retrieve("gpt2").id == "openai-community/gpt2"  # an alias
    with pytest.raises(openai.NotFoundError) as err:
        oai.models.retrieve("nobody/nothing")
    assert err.value.code == "model_not_found"
    assert registry.hub.fetch.calls == []  # type: ignore[attr-defined]  (listing asks no hub)


# ------------------------------------------------------------------------------- sizing by the registry


def test_a_job_on_a_registry_model_needs_no_model_parameters_and_no_hub(
    oai: openai.OpenAI, client: Any, key: str, registry: ModelRegistry
) -> None:
    job = oai.fine_tuning.jobs.create(
        model="openai-community/gpt2", training_file=upload(oai), hyperparameters=HYPERPARAMETERS
    )
    assert job.status == "queued" and job.model == "openai-community/gpt2"
    native = client.get(f"/v1/jobs/{job.id}", headers=headers(key)).json()
    assert native["plan"]["model_parameters"] == 124_439_808
    assert native["name"] == "ft:gpt2"  # no suffix: named for its model, briefly
    assert registry.hub.fetch.calls == []  # type: ignore[attr-defined]


def test_an_unknown_hub_model_with_model_parameters_is_accepted_at_once_and_sized_later(
    oai: openai.OpenAI, client: Any, key: str, registry: ModelRegistry
) -> None:
    slow = Hub(config=TINY_CONFIG, delay=1.5)
    registry.hub.fetch = slow
    file_id = upload(oai)
    started = time.monotonic()
    first = oai.fine_tuning.jobs.create(
        model="someone/tiny-gpt2",
        training_file=file_id,
        hyperparameters=HYPERPARAMETERS,
        extra_body={"model_parameters": 5_000_000},
    )
    assert time.monotonic() - started < 1.5, "the request waited for the hub"
    plan = client.get(f"/v1/jobs/{first.id}", headers=headers(key)).json()["plan"]
    assert plan["model_parameters"] == 5_000_000

    # The look-up went on outside the request; once it is in, the model is listed and a job on
    # it needs neither a hint nor the hub.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        ids = {m.id: m for m in oai.models.list().data}
        if "someone/tiny-gpt2" in ids:
            break
        time.sleep(0.1)
    cached = ids["someone/tiny-gpt2"]
    assert cached.model_extra is not None and cached.model_extra["source"] == "cache"
    assert cached.model_extra["parameters"] == TINY_PARAMETERS and cached.model_extra["context_length"] == 128
    second = oai.fine_tuning.jobs.create(
        model="someone/tiny-gpt2", training_file=file_id, hyperparameters=HYPERPARAMETERS
    )
    plan = client.get(f"/v1/jobs/{second.id}", headers=headers(key)).json()["plan"]
    assert plan["model_parameters"] == TINY_PARAMETERS
    assert slow.calls == ["someone/tiny-gpt2"]


def test_an_unknown_hub_model_without_a_size_is_refused_after_a_short_wait(
    oai: openai.OpenAI, registry: ModelRegistry
) -> None:
    registry.hub.fetch = Hub(config=TINY_CONFIG, delay=30.0)  # a hub that does not answer in time
    registry.wait_s = 0.3
    file_id = upload(oai)
    started = time.monotonic()
    with pytest.raises(openai.UnprocessableEntityError) as err:
        oai.fine_tuning.jobs.create(
            model="slow/model", training_file=file_id, hyperparameters=HYPERPARAMETERS
        )
    assert time.monotonic() - started < 2.0
    assert err.value.code == "estimate_input_missing" and err.value.param == "model_parameters"


# ------------------------------------------------------------------------------ fine-tuned models


def test_a_fine_tuned_model_is_the_base_of_a_second_job(
    oai: openai.OpenAI, client: Any, key: str, sessions: sessionmaker[Session], settings: Any
) -> None:
    file_id = upload(oai)
    first = oai.fine_tuning.jobs.create(
        model="openai-community/gpt2", training_file=file_id, suffix="adder", hyperparameters=HYPERPARAMETERS
    )
    final = finish(sessions, settings, first.id, TINY_CONFIG)
    done = oai.fine_tuning.jobs.retrieve(first.id)
    model_id = f"ft:gpt2:research:adder:{first.id}"
    assert done.status == "succeeded" and done.fine_tuned_model == model_id
    native = client.get(f"/v1/jobs/{first.id}", headers=headers(key)).json()
    assert native["fine_tuned_model"] == model_id and native["result"]["final_model_uri"] == final

    listed = [m for m in oai.models.list().data if m.id.startswith("ft:")]
    assert [m.id for m in listed] == [model_id]
    got = oai.models.retrieve(model_id)
    assert got.owned_by == "research" and got.model_extra is not None
    assert got.model_extra["source"] == "fine_tuned" and got.model_extra["job_id"] == first.id
    assert got.model_extra["base_model"] == "openai-community/gpt2" and got.model_extra["uri"] == final

    # No model_parameters: the second job is sized from the model the first one wrote.
    second = oai.fine_tuning.jobs.create(
        model=model_id, training_file=file_id, hyperparameters=HYPERPARAMETERS
    )
    assert second.model == model_id
    native = client.get(f"/v1/jobs/{second.id}", headers=headers(key)).json()
    assert native["base_model"] == final and native["plan"]["model_parameters"] == TINY_PARAMETERS

    # A fine-tune of a fine-tune is named after the model at the root of the chain.
    finish(sessions, settings, second.id, TINY_CONFIG)
    third = oai.fine_tuning.jobs.retrieve(second.id)
    assert third.fine_tuned_model == f"ft:gpt2:research::{second.id}"
    assert oai.models.retrieve(third.fine_tuned_model).model_extra["base_model"] == model_id  # type: ignore[index]


def test_another_teams_fine_tuned_model_is_not_found_anywhere(
    oai: openai.OpenAI, client: Any, sessions: sessionmaker[Session], settings: Any
) -> None:
    first = oai.fine_tuning.jobs.create(
        model="openai-community/gpt2", training_file=upload(oai), hyperparameters=HYPERPARAMETERS
    )
    finish(sessions, settings, first.id, TINY_CONFIG)
    model_id = oai.fine_tuning.jobs.retrieve(first.id).fine_tuned_model
    assert model_id == f"ft:gpt2:research::{first.id}"

    other = make_openai(client, make_key(sessions, "rivals"))
    assert not [m for m in other.models.list().data if m.id.startswith("ft:")]
    with pytest.raises(openai.NotFoundError) as err:
        other.models.retrieve(model_id)
    assert err.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError) as err:
        other.fine_tuning.jobs.create(
            model=model_id, training_file=upload(other), hyperparameters=HYPERPARAMETERS
        )
    assert err.value.code == "model_not_found"
    # The job's own team may not respell it either: one id per model.
    for spelling in (
        f"ft:gpt2:rivals::{first.id}",
        f"ft:other:research::{first.id}",
        f"ft:gpt2:research:x:{first.id}",
    ):
        with pytest.raises(openai.NotFoundError):
            oai.models.retrieve(spelling)


def test_a_model_that_is_not_finished_has_no_id(oai: openai.OpenAI, client: Any, key: str) -> None:
    job = oai.fine_tuning.jobs.create(
        model="openai-community/gpt2", training_file=upload(oai), hyperparameters=HYPERPARAMETERS
    )
    assert job.fine_tuned_model is None
    assert client.get(f"/v1/jobs/{job.id}", headers=headers(key)).json()["fine_tuned_model"] is None
    with pytest.raises(openai.NotFoundError):
        oai.models.retrieve(f"ft:gpt2:research::{job.id}")


# ---------------------------------------------------------------------------------- SDK and CLI


def test_sdk_and_cli_list_the_models(
    client: Any, key: str, monkeypatch: pytest.MonkeyPatch, sessions: sessionmaker[Session], settings: Any
) -> None:
    transport = AppTransport(client)
    sdk = make_sdk(transport, key)
    oai = make_openai(client, key)
    job = oai.fine_tuning.jobs.create(
        model="openai-community/gpt2",
        training_file=upload(oai),
        suffix="cli",
        hyperparameters=HYPERPARAMETERS,
    )
    finish(sessions, settings, job.id, TINY_CONFIG)
    model_id = f"ft:gpt2:research:cli:{job.id}"

    models = sdk.models.list()
    assert (
        models[0].id == model_id
        and models[0].source == "fine_tuned"
        and models[0].base_model == "openai-community/gpt2"
    )
    assert sdk.models.retrieve("meta-llama/Llama-3.2-3B").parameters == 3_212_749_824
    assert sdk.models.retrieve(model_id).job_id == job.id
    assert sdk.jobs.get(job.id).fine_tuned_model == model_id

    monkeypatch.setattr(cli_client, "client_factory", lambda: make_sdk(transport, key))
    app = typer.Typer()
    cli_user.register(app)
    runner = CliRunner()
    result = runner.invoke(app, ["models", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert rows[0]["id"] == model_id and any(r["id"] == "mistralai/Mistral-7B-v0.3" for r in rows)
    result = runner.invoke(app, ["models", "--fine-tuned"])
    assert result.exit_code == 0, result.output
    assert model_id in result.stdout and "Mistral" not in result.stdout
    result = runner.invoke(app, ["models"])
    assert "meta-llama/Llama-3.1-70B" in result.stdout and "70.6B" in result.stdout


def test_an_admin_may_start_from_any_teams_model_and_its_job_names_no_other_team(
    oai: openai.OpenAI, client: Any, sessions: sessionmaker[Session], settings: Any
) -> None:
    first = oai.fine_tuning.jobs.create(
        model="openai-community/gpt2", training_file=upload(oai), hyperparameters=HYPERPARAMETERS
    )
    final = finish(sessions, settings, first.id, TINY_CONFIG)
    model_id = f"ft:gpt2:research::{first.id}"
    admin = make_openai(client, make_key(sessions, "ops", role="admin"))
    assert admin.models.retrieve(model_id).id == model_id  # admin keys see every team's jobs
    job = admin.fine_tuning.jobs.create(
        model=model_id, training_file=upload(admin), hyperparameters=HYPERPARAMETERS
    )
    # The job is the admin team's; the model it reads is shown by its URI, not by research's id.
    assert job.model == final and job.organization_id != first.organization_id
