"""The OpenAI-compatible files and fine-tuning API, driven by the official `openai` client.

The client talks to the real app (real Postgres, a file:// store) through Starlette's TestClient,
which is an httpx2 client like the one `openai` expects. No Ray: a test plays the worker by
calling the queue directly (claim, heartbeat, checkpoints, events, finish).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import openai
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from support import CHAT, headers, job_body, jsonl, make_key, principal_for

from trainyard.api.app import create_app
from trainyard.api.openai import fine_tuning
from trainyard.api.openai import routes as routes_openai
from trainyard.platform import attempts, files, queue, states, storage
from trainyard.platform.errors import NotFound
from trainyard.platform.models import Job
from trainyard.platform.models_files import File
from trainyard.platform.spec import JobSpec

MODEL = "file:///models/tiny-gpt2"
# Planning reads the model's size from these instead of the (absent) model files.
TRAINYARD_FIELDS: dict[str, Any] = {"model_parameters": 2_000_000, "instance_type": "local-cpu"}


def make_openai(client: Any, key: str) -> openai.OpenAI:
    # max_retries=0: a refused request must surface as its typed error at once.
    return openai.OpenAI(base_url="http://testserver/v1", api_key=key, http_client=client, max_retries=0)


@pytest.fixture
def oai(client: Any, key: str) -> openai.OpenAI:
    return make_openai(client, key)


def upload(oai: openai.OpenAI, records: list[dict[str, Any]] = CHAT, name: str = "train.jsonl") -> Any:
    return oai.files.create(file=(name, io.BytesIO(jsonl(records))), purpose="fine-tune")


def create_job(oai: openai.OpenAI, training_file: str, **kwargs: Any) -> Any:
    extra = {**TRAINYARD_FIELDS, **kwargs.pop("extra_body", {})}
    kwargs.setdefault("hyperparameters", {"n_epochs": 1, "batch_size": 4})
    return oai.fine_tuning.jobs.create(model=MODEL, training_file=training_file, extra_body=extra, **kwargs)


def claim(sessions: sessionmaker[Session], job_id: str) -> queue.Claim:
    """Play a worker claiming the oldest queued job, which the test expects to be `job_id`."""
    with sessions() as s:
        [c] = queue.claim(s, worker_id="test-worker")
    assert c.job_id == job_id
    return c


# --------------------------------------------------------------------------- the script, unchanged


def test_a_script_written_for_openai_runs_unchanged(
    oai: openai.OpenAI, sessions: sessionmaker[Session], settings: Any, tmp_path: Path
) -> None:
    uploaded = upload(oai)
    assert uploaded.id.startswith("file-") and uploaded.object == "file"
    assert uploaded.bytes == len(jsonl(CHAT)) and uploaded.filename == "train.jsonl"
    assert uploaded.purpose == "fine-tune" and uploaded.status == "processed"
    assert isinstance(uploaded.created_at, int)

    job = create_job(oai, uploaded.id, suffix="adder", seed=7, metadata={"project": "demo"})
    assert job.id.startswith("job_") and job.object == "fine_tuning.job"
    assert job.status == "queued" and job.model == MODEL
    assert job.training_file == uploaded.id and job.validation_file is None
    assert job.hyperparameters.n_epochs == 1 and job.hyperparameters.batch_size == 4
    assert job.hyperparameters.learning_rate_multiplier == 1
    assert job.method is not None and job.method.type == "supervised"
    assert job.seed == 7 and job.metadata == {"project": "demo"} and job.user_provided_suffix == "adder"
    assert job.fine_tuned_model is None and job.finished_at is None and job.error is None
    assert job.result_files == [] and isinstance(job.created_at, int)
    assert job.organization_id.startswith("team_")

    got = oai.fine_tuning.jobs.retrieve(job.id)
    assert got.id == job.id and got.status == "queued"

    # The worker's side: claim, report progress, a checkpoint and a metrics event.
    c = claim(sessions, job.id)
    with sessions() as s:
        queue.heartbeat(s, c.attempt_id, progress={"step": 5, "total_steps": 10, "tokens": 640, "loss": 1.5})
    with sessions() as s:
        attempts.record_event(
            s, c.attempt_id, "metrics", "step 5/10 loss 1.5", data={"step": 5, "total_steps": 10, "loss": 1.5}
        )
    with sessions() as s:
        attempts.record_checkpoint(
            s, c.attempt_id, step=5, uri="file:///ckpt/step5", metrics={"loss": 1.5, "eval_loss": 1.7}
        )
    running = oai.fine_tuning.jobs.retrieve(job.id)
    assert running.status == "running" and running.trained_tokens == 640
    assert running.model_extra is not None and running.model_extra["trainyard"]["progress"]["step"] == 5

    events = oai.fine_tuning.jobs.list_events(job.id, limit=50).data
    assert all(e.object == "fine_tuning.job.event" and e.id.startswith("ftevent-") for e in events)
    assert [e.created_at for e in events] == sorted((e.created_at for e in events), reverse=True)
    metrics = [e for e in events if e.type == "metrics"]
    assert len(metrics) == 1 and metrics[0].data["train_loss"] == 1.5 and metrics[0].data["step"] == 5
    assert {e.type for e in events} == {"metrics", "message"}
    assert all(e.level in ("info", "warn", "error") for e in events)

    [ckpt] = oai.fine_tuning.jobs.checkpoints.list(job.id).data
    assert ckpt.object == "fine_tuning.job.checkpoint" and ckpt.step_number == 5
    assert ckpt.fine_tuning_job_id == job.id and ckpt.fine_tuned_model_checkpoint == "file:///ckpt/step5"
    assert ckpt.metrics.train_loss == 1.5 and ckpt.metrics.valid_loss == 1.7 and ckpt.metrics.step == 5

    # The worker finishes: a final model and a cost report in the store.
    store = storage.open_store(settings.storage_uri)
    report_uri = store.put_bytes(storage.cost_report_key(job.id), b'{"totals": {"cost_usd": 0.01}}')
    final = store.uri_for(storage.final_model_prefix(job.id, 1))
    with sessions() as s:
        queue.heartbeat(s, c.attempt_id, progress={"step": 10, "tokens": 1280})
    with sessions() as s:
        queue.finish(s, c.attempt_id, "succeeded", result={"final_model_uri": final})
    with sessions.begin() as s:
        row = s.get(Job, job.id)
        assert row is not None
        row.result = {**(row.result or {}), "cost_report_uri": report_uri}

    done = oai.fine_tuning.jobs.retrieve(job.id)
    # The model is named as OpenAI names its own; its URI is beside it.
    assert done.status == "succeeded" and done.fine_tuned_model == f"ft:tiny-gpt2:research:adder:{job.id}"
    assert done.model_extra is not None and done.model_extra["trainyard"]["final_model_uri"] == final
    assert done.trained_tokens == 1280 and isinstance(done.finished_at, int) and done.error is None
    [result_file] = done.result_files
    assert oai.files.retrieve(result_file).purpose == "fine-tune-results"
    assert json.loads(oai.files.content(result_file).read()) == {"totals": {"cost_usd": 0.01}}
    assert oai.fine_tuning.jobs.retrieve(job.id).result_files == [result_file]  # registered once

    # The model it made can be fine-tuned further, as `ft:` names can on OpenAI.
    follow_up = oai.fine_tuning.jobs.create(
        model=done.fine_tuned_model or "", training_file=uploaded.id, extra_body=TRAINYARD_FIELDS
    )
    assert follow_up.model == done.fine_tuned_model


def test_list_paginates_newest_first_and_filters_by_metadata(oai: openai.OpenAI) -> None:
    file_id = upload(oai).id
    ids = [create_job(oai, file_id, metadata={"sweep": "a" if i % 2 else "b"}).id for i in range(5)]
    first = oai.fine_tuning.jobs.list(limit=2)
    assert [j.id for j in first.data] == ids[::-1][:2] and first.has_more is True
    # The client's auto-pagination follows `after` with the last id of each page.
    assert [j.id for j in oai.fine_tuning.jobs.list(limit=2)] == ids[::-1]
    assert [j.id for j in oai.fine_tuning.jobs.list(limit=2, after=ids[3])] == ids[:3][::-1]
    only_a = oai.fine_tuning.jobs.list(metadata={"sweep": "a"})
    assert [j.id for j in only_a.data] == [ids[3], ids[1]]
    # A bigger page than Trainyard serves is cut, not refused.
    assert len(oai.fine_tuning.jobs.list(limit=1000).data) == 5


def test_cancel_a_queued_job_and_a_running_one(oai: openai.OpenAI, sessions: sessionmaker[Session]) -> None:
    file_id = upload(oai).id
    queued = create_job(oai, file_id)
    running = create_job(oai, file_id)
    assert oai.fine_tuning.jobs.cancel(queued.id).status == "cancelled"
    c = claim(sessions, running.id)
    # A running job stops at its worker's next heartbeat: it is still running until then.
    assert oai.fine_tuning.jobs.cancel(running.id).status == "running"
    with sessions() as s:
        assert queue.heartbeat(s, c.attempt_id).stop_reason == "cancelled"
    with sessions() as s:
        queue.finish(s, c.attempt_id, "cancelled")
    done = oai.fine_tuning.jobs.retrieve(running.id)
    assert done.status == "cancelled" and isinstance(done.finished_at, int)
    assert oai.fine_tuning.jobs.cancel(running.id).status == "cancelled"  # a retried cancel is fine


def test_pause_checkpoints_and_resume_continues(oai: openai.OpenAI, sessions: sessionmaker[Session]) -> None:
    file_id = upload(oai).id
    job = create_job(oai, file_id)
    c = claim(sessions, job.id)
    with sessions() as s:
        attempts.record_checkpoint(s, c.attempt_id, step=3, uri="file:///ckpt/3")

    # Pause asks the worker to stop; it sees the request on its heartbeat.
    assert oai.fine_tuning.jobs.pause(job.id).status == "running"
    assert oai.fine_tuning.jobs.pause(job.id).status == "running"  # pausing twice is fine
    with sessions() as s:
        assert queue.heartbeat(s, c.attempt_id).stop_reason == "paused"
    # The worker saves a checkpoint, stops and hands the job back: it waits as paused.
    with sessions() as s:
        attempts.record_checkpoint(s, c.attempt_id, step=4, uri="file:///ckpt/4")
    with sessions() as s:
        assert queue.finish(s, c.attempt_id, "handed_back") == states.PAUSED
    paused = oai.fine_tuning.jobs.retrieve(job.id)
    assert paused.status == "paused" and paused.finished_at is None
    with sessions() as s:
        assert queue.claim(s, worker_id="w", n=10) == []  # a paused job is not claimed

    resumed = oai.fine_tuning.jobs.resume(job.id)
    assert resumed.status == "queued"
    c2 = claim(sessions, job.id)
    assert c2.attempt_number == 2
    with sessions() as s:
        latest = attempts.latest_checkpoint(s, job.id)
        assert latest is not None and latest.step == 4  # where the next attempt resumes
        assert queue.heartbeat(s, c2.attempt_id).stop_reason is None
    messages = [e.message for e in oai.fine_tuning.jobs.list_events(job.id, limit=50)]
    assert any("pause requested" in m for m in messages) and any("resumed" in m for m in messages)
    # A handed-back attempt is not a failure: the job keeps all its retries.
    with sessions() as s:
        assert queue.finish(s, c2.attempt_id, "succeeded") == states.SUCCEEDED


def test_pause_a_queued_job_resume_withdraws_a_pending_pause_and_cancel_a_paused_one(
    oai: openai.OpenAI, sessions: sessionmaker[Session]
) -> None:
    file_id = upload(oai).id
    queued = create_job(oai, file_id)
    assert oai.fine_tuning.jobs.pause(queued.id).status == "paused"
    assert oai.fine_tuning.jobs.cancel(queued.id).status == "cancelled"
    with pytest.raises(openai.ConflictError):
        oai.fine_tuning.jobs.pause(queued.id)

    job = create_job(oai, file_id)
    c = claim(sessions, job.id)
    oai.fine_tuning.jobs.pause(job.id)
    assert oai.fine_tuning.jobs.resume(job.id).status == "running"  # the pause is withdrawn
    with sessions() as s:
        assert queue.heartbeat(s, c.attempt_id).stop_reason is None
    # A worker that dies while a pause is pending leaves the job paused, not queued.
    oai.fine_tuning.jobs.pause(job.id)
    with sessions() as s:
        assert queue.finish(s, c.attempt_id, "crashed", error_code="boom") == states.PAUSED


# ------------------------------------------------------------------------------------------ files


def test_files_list_content_and_delete(oai: openai.OpenAI, key: str, settings: Any) -> None:
    a = upload(oai, name="a.jsonl")
    b = upload(oai, [{"text": "hello"}, {"text": "world"}], name="dir/b.jsonl")
    assert b.filename == "b.jsonl"  # a path's last part names the file
    assert [f.id for f in oai.files.list()] == [b.id, a.id]
    assert [f.id for f in oai.files.list(order="asc")] == [a.id, b.id]
    page = oai.files.list(limit=1)
    assert [f.id for f in page.data] == [b.id] and page.has_more is True
    assert [f.id for f in oai.files.list(limit=1)] == [b.id, a.id]  # auto-pagination
    assert oai.files.retrieve(a.id).bytes == len(jsonl(CHAT))
    assert oai.files.content(b.id).read() == jsonl([{"text": "hello"}, {"text": "world"}])

    deleted = oai.files.delete(a.id)
    assert deleted.id == a.id and deleted.deleted is True
    with pytest.raises(openai.NotFoundError):
        oai.files.retrieve(a.id)
    assert [f.id for f in oai.files.list()] == [b.id]
    store = storage.open_store(settings.storage_uri)
    assert store.list(f"files/{a.id}") == [] and store.list(f"files/{b.id}") == [f"files/{b.id}/data.jsonl"]


def test_a_file_an_unfinished_job_needs_cannot_be_deleted(oai: openai.OpenAI) -> None:
    file_id = upload(oai).id
    job = create_job(oai, file_id)
    with pytest.raises(openai.ConflictError) as exc:
        oai.files.delete(file_id)
    assert exc.value.code == "file_in_use" and job.id in exc.value.message
    oai.fine_tuning.jobs.cancel(job.id)
    assert oai.files.delete(file_id).deleted is True
    # The job still names the file it was given.
    assert oai.fine_tuning.jobs.retrieve(job.id).training_file == file_id


def test_malformed_file_is_refused_naming_the_first_bad_line(
    oai: openai.OpenAI, settings: Any, client: Any, key: str
) -> None:
    body = jsonl(CHAT[:1]) + b'{"messages": [{"role": "user", "content": "hi"}\n' + jsonl(CHAT[:1])
    with pytest.raises(openai.BadRequestError) as exc:
        oai.files.create(file=("bad.jsonl", io.BytesIO(body)), purpose="fine-tune")
    assert "bad.jsonl: line 2 is not valid JSON" in exc.value.message
    assert exc.value.code == "invalid_file_format" and exc.value.param == "file"
    assert exc.value.type == "invalid_request_error"
    # Nothing was kept: no row, no object.
    assert list(oai.files.list()) == []
    assert storage.open_store(settings.storage_uri).list("files") == []
    # The envelope is OpenAI's on these routes, and Trainyard's elsewhere.
    r = client.get("/v1/files/file-nope", headers=headers(key))
    assert r.status_code == 404 and set(r.json()["error"]) == {"message", "type", "param", "code"}
    assert r.headers["x-should-retry"] == "false"
    r = client.get("/v1/jobs/job_nope", headers=headers(key))
    assert r.status_code == 404 and set(r.json()["error"]) == {"code", "message", "param"}


def test_oversized_upload_gets_413_and_the_larger_cap_applies_to_uploads_only(
    oai: openai.OpenAI, client: Any, key: str, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Over the API's body limit (64 KiB in tests), but an upload is allowed more.
    big = jsonl([{"text": "x" * 1000}] * 100)
    assert len(big) > settings.max_body_bytes
    assert upload(oai, [{"text": "x" * 1000}] * 100).bytes == len(big)
    r = client.post("/v1/jobs", content=b"{" + b" " * len(big) + b"}", headers=headers(key))
    assert r.status_code == 413

    monkeypatch.setattr(files, "max_file_bytes", lambda _settings: 10_000)
    with pytest.raises(openai.APIStatusError) as exc:
        oai.files.create(file=("big.jsonl", io.BytesIO(big)), purpose="fine-tune")
    assert exc.value.status_code == 413 and exc.value.code == "file_too_large"


def test_an_upload_over_the_upload_body_cap_gets_413(
    sessions: sessionmaker[Session], settings: Any, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastapi.testclient import TestClient

    monkeypatch.setattr(routes_openai, "upload_body_limit", lambda _settings: 100_000)
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        oai = make_openai(c, key)
        with pytest.raises(openai.APIStatusError) as exc:
            upload(oai, [{"text": "x" * 1000}] * 120)
        assert exc.value.status_code == 413 and "100000 bytes" in exc.value.message
        assert list(oai.files.list()) == []


def test_only_fine_tune_purpose_is_accepted(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        oai.files.create(file=("a.jsonl", io.BytesIO(jsonl(CHAT))), purpose="assistants")
    assert exc.value.param == "purpose"


# ------------------------------------------------------------------------------------ isolation


def test_another_teams_files_and_jobs_are_404(client: Any, sessions: sessionmaker[Session], key: str) -> None:
    mine = make_openai(client, key)
    theirs = make_openai(client, make_key(sessions, "other"))
    file_id = upload(mine).id
    job = create_job(mine, file_id)
    for call in (
        lambda: theirs.files.retrieve(file_id),
        lambda: theirs.files.content(file_id),
        lambda: theirs.files.delete(file_id),
        lambda: theirs.fine_tuning.jobs.retrieve(job.id),
        lambda: theirs.fine_tuning.jobs.cancel(job.id),
        lambda: theirs.fine_tuning.jobs.list_events(job.id),
        lambda: theirs.fine_tuning.jobs.checkpoints.list(job.id),
        lambda: create_job(theirs, file_id),  # nor can they train on it
    ):
        with pytest.raises(openai.NotFoundError):
            call()
    assert list(theirs.files.list()) == [] and list(theirs.fine_tuning.jobs.list()) == []
    admin = make_openai(client, make_key(sessions, "research", role="admin"))
    assert admin.files.retrieve(file_id).id == file_id


def test_an_admins_job_on_another_teams_file_names_nothing_across_teams(
    client: Any, sessions: sessionmaker[Session], key: str
) -> None:
    mine = make_openai(client, key)
    file_id = upload(mine).id
    # An admin of another team may train on any team's file; the job is the admin's team's.
    ops_admin = make_openai(client, make_key(sessions, "ops", role="admin"))
    job = create_job(ops_admin, file_id)
    with pytest.raises(openai.ConflictError) as exc:
        mine.files.delete(file_id)  # still needed, so kept; but the job is not research's to see
    assert exc.value.code == "file_in_use" and job.id not in exc.value.message
    ops_member = make_openai(client, make_key(sessions, "ops"))
    [seen] = ops_member.fine_tuning.jobs.list()
    assert seen.id == job.id and seen.training_file != file_id  # research's file id stays research's
    assert ops_member.fine_tuning.jobs.retrieve(job.id).training_file != file_id
    assert mine.files.retrieve(file_id).id == file_id


def test_typed_errors_for_bad_requests(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as nf:
        oai.files.retrieve("file-doesnotexist")
    assert nf.value.code == "file_not_found"
    with pytest.raises(openai.NotFoundError) as nf:
        create_job(oai, "file-doesnotexist")
    assert nf.value.param == "training_file"
    with pytest.raises(openai.NotFoundError):
        oai.fine_tuning.jobs.retrieve("job_nope")
    file_id = upload(oai).id
    # An unknown or invalid parameter is a 422 here as on /v1/jobs: one translator answers both.
    with pytest.raises(openai.UnprocessableEntityError) as invalid:
        create_job(oai, file_id, hyperparameters={"n_epochs": 1, "warmup_ratio": 0.1})
    assert invalid.value.code == "unknown_parameter" and invalid.value.param == "hyperparameters.warmup_ratio"
    with pytest.raises(openai.UnprocessableEntityError) as invalid:
        create_job(oai, file_id, hyperparameters={"n_epochs": 0})
    assert invalid.value.code == "invalid_value" and invalid.value.param == "hyperparameters.n_epochs"
    with pytest.raises(openai.BadRequestError) as bad:
        create_job(oai, file_id, method={"type": "dpo", "dpo": {}})
    assert bad.value.code == "unsupported_method"
    with pytest.raises(openai.UnprocessableEntityError) as invalid:
        create_job(oai, file_id, extra_body={"no_such_field": 1})
    assert invalid.value.code == "unknown_parameter" and invalid.value.param == "no_such_field"
    with pytest.raises(openai.AuthenticationError):
        make_openai(oai._client, "ty_wrong").files.list()


# ---------------------------------------------------------------------------------- mapping to jobs


def test_openai_fields_map_onto_the_job_spec(oai: openai.OpenAI, client: Any, key: str) -> None:
    train, valid = upload(oai).id, upload(oai, name="valid.jsonl").id
    job = create_job(
        oai,
        train,
        validation_file=valid,
        hyperparameters={"n_epochs": "auto"},
        method={
            "type": "lora",
            "lora": {"hyperparameters": {"batch_size": 2, "learning_rate_multiplier": 2, "lora_r": 8}},
        },
        extra_body={"max_cost_usd": 5.0, "policy": {"spot": "never"}},
    )
    assert job.validation_file == valid and job.method is not None and job.method.type == "lora"
    assert job.hyperparameters.batch_size == 2 and job.hyperparameters.learning_rate_multiplier == 2
    native = client.get(f"/v1/jobs/{job.id}", headers=headers(key)).json()
    assert native["method"] == "lora" and native["name"] == "ft:tiny-gpt2"
    assert native["hyperparameters"]["learning_rate"] == pytest.approx(2 * fine_tuning.BASE_LEARNING_RATE)
    assert native["hyperparameters"]["lora_r"] == 8 and native["hyperparameters"]["batch_size"] == 2
    assert native["policy"]["max_cost_usd"] == 5.0 and native["policy"]["spot"] == "never"
    # Jobs hold storage URIs; the OpenAI view maps them back to file ids.
    assert native["training_file"].startswith("file://") and native["training_file"].endswith(
        f"files/{train}/data.jsonl"
    )

    lora = create_job(oai, train, extra_body={"method_type": "lora"})
    assert lora.method is not None and lora.method.type == "lora"
    steps = create_job(oai, train, hyperparameters={"max_steps": 7, "seq_len": 64})
    assert (
        client.get(f"/v1/jobs/{steps.id}", headers=headers(key)).json()["hyperparameters"]["max_steps"] == 7
    )


def test_idempotency_key_makes_a_retried_create_safe(oai: openai.OpenAI) -> None:
    file_id = upload(oai).id
    first = create_job(oai, file_id, extra_headers={"Idempotency-Key": "run-1"})
    again = create_job(oai, file_id, extra_headers={"Idempotency-Key": "run-1"})
    assert again.id == first.id and len(oai.fine_tuning.jobs.list().data) == 1
    with pytest.raises(openai.ConflictError):
        create_job(oai, file_id, suffix="other", extra_headers={"Idempotency-Key": "run-1"})


def test_native_jobs_take_file_ids(sessions: sessionmaker[Session], oai: openai.OpenAI, key: str) -> None:
    file_id = upload(oai).id
    principal = principal_for(sessions, key)
    other = principal_for(sessions, make_key(sessions, "other"))
    spec = JobSpec.model_validate(job_body(training_file=file_id, validation_file=file_id))
    with sessions() as s:
        resolved = files.resolve_spec_files(s, principal, spec)
        uri = s.scalar(select(File.uri).where(File.id == file_id))
        assert resolved.training_file == uri and resolved.validation_file == uri
        assert files.resolve_spec_files(s, principal, resolved) is resolved  # URIs pass through
        with pytest.raises(NotFound):
            files.resolve_file_uri(s, other, file_id)
        with pytest.raises(NotFound):
            files.resolve_file_uri(s, principal, "file-missing", param="validation_file")


def test_a_refused_create_leaves_no_job(oai: openai.OpenAI, sessions: sessionmaker[Session]) -> None:
    file_id = upload(oai).id
    with pytest.raises(openai.BadRequestError):
        # Refused by the planner, after the files were resolved.
        oai.fine_tuning.jobs.create(model=MODEL, training_file=file_id, extra_body={"instance_type": "nope"})
    with sessions() as s:
        assert s.scalars(select(Job)).all() == []


def test_server_paths_are_refused_where_disabled_but_uploaded_files_work(
    sessions: sessionmaker[Session], settings: Any, key: str
) -> None:
    from fastapi.testclient import TestClient

    locked = settings.model_copy(update={"allow_local_paths": False})
    app = create_app(locked)
    with TestClient(app, raise_server_exceptions=False) as c:
        oai = make_openai(c, key)
        file_id = upload(oai).id  # stored in a file:// store: the platform's own path
        job = oai.fine_tuning.jobs.create(
            model="org/tiny-model", training_file=file_id, extra_body=TRAINYARD_FIELDS
        )
        assert job.status == "queued" and job.training_file == file_id
        for kwargs in (
            {"model": MODEL, "training_file": file_id},
            {"model": "org/m", "training_file": "/etc/passwd"},
        ):
            with pytest.raises(openai.BadRequestError) as exc:
                oai.fine_tuning.jobs.create(**kwargs, extra_body=TRAINYARD_FIELDS)
            assert exc.value.code == "source_not_allowed"
