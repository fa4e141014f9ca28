"""The source policy against hostile sources: every spelling of another team's data, another
bucket, a server path or a link out of a local root is refused at `/v1/jobs`, `/v1/estimates` and
`/v1/fine_tuning/jobs`, and nothing is read to decide it (the proxy and the audit hook of
`sources_world` say so). The positive cases (own upload, own job's checkpoint and final model, a
granted prefix, a hub id, a path under a local root) pass.
"""

from __future__ import annotations

import os

import pytest
from fastapi.testclient import TestClient
from sources_world import (
    ENDPOINTS,
    FIELDS,
    PLANTED_ELSEWHERE,
    OpenAudit,
    World,
    body_for,
    count_jobs,
    verdict_of,
    world_fixture,  # noqa: F401  (the `world` fixture)
)
from sqlalchemy.orm import Session, sessionmaker
from support import headers

from trainyard.api.app import create_app


def hostile(w: World) -> list[tuple[str, str, tuple[str, ...]]]:
    """(label, value, fields it is tried in) for every hostile source."""
    root, out, store = str(w.root), str(w.outside), w.store
    theirs, mine = w.theirs_job, w.mine_job
    files_only = ("training_file", "validation_file")
    cases: list[tuple[str, str, tuple[str, ...]]] = [
        # server paths, however spelled
        ("upper-case scheme", "FILE:///etc/passwd", FIELDS),
        ("mixed-case scheme", "File:///etc/passwd", FIELDS),
        ("one slash", "file:/etc/passwd", FIELDS),
        ("no slash", "file:etc/passwd", FIELDS),
        ("localhost host", "file://localhost/etc/passwd", FIELDS),
        ("host-relative", "file://etc/passwd", FIELDS),
        ("four slashes", "file:////etc/passwd", FIELDS),
        ("leading space", " file:///etc/passwd", FIELDS),
        ("trailing space", "file:///etc/passwd ", FIELDS),
        ("leading tab", "\tfile:///etc/passwd", FIELDS),
        ("leading newline", "\n/etc/passwd", FIELDS),
        ("non-breaking space", "\u00a0/etc/passwd", FIELDS),
        ("absolute path", "/etc/passwd", FIELDS),
        ("double slash path", "//etc/passwd", FIELDS),
        ("scheme-less dot-dot", "x/../../etc/passwd", FIELDS),
        ("drive-like dot-dot", "a:../etc/passwd", FIELDS),
        ("relative dot-dot", "../etc/passwd", FIELDS),
        ("relative dot", "./etc/passwd", FIELDS),
        ("home", "~/.ssh/id_rsa", FIELDS),
        ("other home", "~root/.bashrc", FIELDS),
        ("proc", "file:///proc/self/environ", FIELDS),
        ("proc root", "/proc/self/root/etc/passwd", FIELDS),
        ("device", "/dev/zero", FIELDS),
        ("fragment", "file:///etc/passwd#x", FIELDS),
        ("query", "file:///etc/passwd?x=1", FIELDS),
        ("NUL", "file:///etc/passwd\x00.jsonl", FIELDS),
        ("DEL", "/etc/passwd\x7f", FIELDS),
        ("bidi override", f"{root}/\u202eok.jsonl", FIELDS),
        ("zero-width space", f"{root}\u200b/../outside/planted", FIELDS),
        ("full-width scheme", "\uff46\uff49\uff4c\uff45:///etc/passwd", FIELDS),
        ("encoded slashes", "file:%2F%2F%2Fetc%2Fpasswd", FIELDS),
        ("Windows drive", "C:\\Windows\\win.ini", FIELDS),
        ("Windows drive, slashes", "C:/Windows/win.ini", FIELDS),
        ("UNC", "\\\\server\\share\\x", FIELDS),
        ("backslash dot-dot", f"{root}\\..\\outside\\planted", FIELDS),
        # out of the local root
        ("dot-dot out of the root", f"{root}/../outside/planted", FIELDS),
        ("file URI dot-dot out of the root", f"file://{root}/../outside/planted", FIELDS),
        ("encoded dot-dot", f"file://{root}/%2e%2e/outside/planted", FIELDS),
        ("encoded dot-dot, upper", f"{root}/%2E%2E/outside/planted", FIELDS),
        ("dot segment", f"{root}/./ok.jsonl", FIELDS),
        ("empty segment", f"{root}//ok.jsonl", FIELDS),
        ("link to a FIFO outside", f"{root}/link", FIELDS),
        ("link to a FIFO outside, URI", f"file://{root}/link", FIELDS),
        ("link to a dir outside", f"{root}/dirlink", FIELDS),
        ("through a link to a dir outside", f"{root}/dirlink/planted", FIELDS),
        ("model dir with a link out", f"{root}/badmodel", FIELDS),
        ("the planted file itself", f"{out}/planted", FIELDS),
        ("the planted file, URI", f"file://{out}/planted", FIELDS),
        ("the parent of the root", str(w.root.parent), FIELDS),
        ("a long component", f"{root}/{'a' * 300}", FIELDS),
        # other buckets, other teams, bucket and store roots
        ("another bucket", f"s3://{w.other}/secret.jsonl", FIELDS),
        ("another bucket, upper-case scheme", f"S3://{w.other}/secret.jsonl", FIELDS),
        ("another bucket's root", f"s3://{w.other}", FIELDS),
        ("another bucket's root, slash", f"s3://{w.other}/", FIELDS),
        ("the granted bucket's root", f"s3://{w.granted}", FIELDS),
        ("the granted bucket's root, slash", f"s3://{w.granted}/", FIELDS),
        ("beside the granted prefix", f"s3://{w.granted}/datasets-other/x.jsonl", FIELDS),
        ("dot-dot out of the grant", f"s3://{w.granted}/datasets/../private/x.jsonl", FIELDS),
        ("encoded dot-dot out of the grant", f"s3://{w.granted}/datasets/%2e%2e/private/x.jsonl", FIELDS),
        ("empty segment in the grant", f"s3://{w.granted}/datasets//ok.jsonl", FIELDS),
        ("one-slash s3", f"s3:/{w.granted}/datasets/ok.jsonl", FIELDS),
        ("no-slash s3", f"s3:{w.granted}/datasets/ok.jsonl", FIELDS),
        ("upper-case bucket", f"s3://{w.granted.upper()}/datasets/ok.jsonl", FIELDS),
        ("leading space s3", f" s3://{w.granted}/datasets/ok.jsonl", FIELDS),
        ("credentials in s3", f"s3://user@{w.other}/secret.jsonl", FIELDS),
        ("port in s3", f"s3://{w.other}:9000/secret.jsonl", FIELDS),
        ("empty bucket", "s3:///secret.jsonl", FIELDS),
        ("s3a scheme", f"s3a://{w.other}/secret.jsonl", FIELDS),
        ("http", f"{w.proxy.endpoint}/{w.other}/secret.jsonl", FIELDS),
        ("https", f"https://{w.other}.s3.amazonaws.com/secret.jsonl", FIELDS),
        ("hf scheme", "hf://org/model", FIELDS),
        ("gs scheme", f"gs://{w.other}/secret.jsonl", FIELDS),
        ("the store bucket's root", f"s3://{w.store_bucket}", FIELDS),
        ("the store root", store, FIELDS),
        ("the store root, slash", f"{store}/", FIELDS),
        ("beside the store", f"{store}-x/secret.jsonl", FIELDS),
        ("all jobs", f"{store}/jobs", FIELDS),
        ("all files", f"{store}/files", FIELDS),
        ("unscoped store key", f"{store}/datasets/x.jsonl", FIELDS),
        ("their upload by URI", w.theirs_file_uri, FIELDS),
        ("their upload by URI, upper-case scheme", "S3" + w.theirs_file_uri[2:], FIELDS),
        ("their job's whole prefix", f"{store}/jobs/{theirs}", FIELDS),
        ("their final model", f"{store}/jobs/{theirs}/final", FIELDS),
        ("their final model, slash", f"{store}/jobs/{theirs}/final/", FIELDS),
        ("their checkpoint", f"{store}/jobs/{theirs}/checkpoints/run/checkpoint_000000004", FIELDS),
        ("their cost report", f"{store}/jobs/{theirs}/cost_report.json", FIELDS),
        ("dot-dot from my job to theirs", f"{store}/jobs/{mine}/../{theirs}/final", FIELDS),
        ("a job that does not exist", f"{store}/jobs/job_0000/final", FIELDS),
        # hub ids that are not hub ids, and hub ids where a file is due
        ("hub dot-dot", "org/../../etc", ("base_model",)),
        ("hub three parts", "org/name/extra", ("base_model",)),
        ("hub empty part", "org//name", ("base_model",)),
        ("hub leading dash", "-org/name", ("base_model",)),
        ("bare dot-dot", "..", FIELDS),
        ("a hub id as training data", "org/dataset", files_only),
        ("a bare name as training data", "train.jsonl", files_only),
        ("their file id", w.theirs_file, files_only),
    ]
    return cases


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_hostile_sources_are_refused_before_any_read(
    world: World, sessions: sessionmaker[Session], endpoint: str
) -> None:
    w = world
    cases = hostile(w)
    assert len(cases) >= 60
    jobs_before = count_jobs(sessions)
    w.proxy.take()
    OpenAudit.seen = []
    OpenAudit.watched = (os.path.realpath(w.outside), *PLANTED_ELSEWHERE)
    with pytest.raises(PermissionError):  # the hook sees opens (and keeps the FIFO from blocking)
        open(w.outside / "planted", "rb").close()
    assert OpenAudit.seen == [f"open {w.outside / 'planted'}"]
    OpenAudit.seen = []
    tried, verdicts, wrong = 0, {"refused": 0, "other 4xx": 0}, []
    try:
        for label, value, fields in cases:
            for field in fields:
                tried += 1
                r = w.client.post(
                    endpoint, json=body_for(endpoint, field, value, w), headers=headers(w.keys["mine"])
                )
                verdict = verdict_of(r, endpoint, field)
                if verdict is None:
                    wrong.append(f"{label} as {field}: {r.status_code} {r.text[:300]}")
                else:
                    verdicts[verdict] += 1
    finally:
        OpenAudit.watched = ()
    print(
        f"\n{endpoint}: {tried} tried, {verdicts['refused']} refused as source_not_allowed, "
        f"{verdicts['other 4xx']} refused otherwise (422 malformed, 400 invalid_text, 404 unknown file id); "
        f"{len(cases)} hostile values"
    )
    assert not wrong, "\n".join(wrong)
    assert w.proxy.take() == [], "the object store was asked for something"
    assert OpenAudit.seen == [], OpenAudit.seen
    assert count_jobs(sessions) == jobs_before


def test_hostile_local_paths_are_refused_where_local_paths_are_off(
    world: World, sessions: sessionmaker[Session]
) -> None:
    w = world
    locked = w.settings.model_copy(update={"allow_local_paths": False})
    values = [
        f"{w.root}/ok.jsonl",
        f"file://{w.root}/model",
        "FILE:///etc/passwd",
        "file:/etc/passwd",
        "/etc/passwd",
    ]
    OpenAudit.seen = []
    OpenAudit.watched = (os.path.realpath(w.root), os.path.realpath(w.outside), *PLANTED_ELSEWHERE)
    try:
        with TestClient(create_app(locked), raise_server_exceptions=False) as c:
            for endpoint in ENDPOINTS:
                for value in values:
                    for field in FIELDS:
                        body = body_for(endpoint, field, value, w)
                        r = c.post(endpoint, json=body, headers=headers(w.keys["mine"]))
                        assert verdict_of(r, endpoint, field) == "refused", (endpoint, field, value, r.text)
    finally:
        OpenAudit.watched = ()
    assert OpenAudit.seen == [] and w.proxy.take() == []


def test_own_uploads_outputs_grants_hub_ids_and_local_roots_are_allowed(world: World) -> None:
    w = world
    allowed = [
        ("own upload id", "training_file", w.mine_file),
        ("own upload by URI", "training_file", w.mine_file_uri),
        ("own upload as validation", "validation_file", w.mine_file),
        ("own final model", "base_model", f"{w.store}/jobs/{w.mine_job}/final"),
        ("own checkpoint", "base_model", f"{w.store}/jobs/{w.mine_job}/checkpoints/run/checkpoint_000000004"),
        ("granted prefix", "training_file", f"s3://{w.granted}/datasets/ok.jsonl"),
        ("granted prefix, upper-case scheme", "training_file", f"S3://{w.granted}/datasets/ok.jsonl"),
        ("hub id", "base_model", "org/tiny"),
        ("hub name", "base_model", "gpt2"),
        ("hub id at a revision", "base_model", "org/tiny@main"),
        ("local file under the root", "training_file", f"{w.root}/ok.jsonl"),
        ("local model under the root", "base_model", f"file://{w.root}/model"),
    ]
    for endpoint in ENDPOINTS:
        for label, field, value in allowed:
            r = w.client.post(
                endpoint, json=body_for(endpoint, field, value, w), headers=headers(w.keys["mine"])
            )
            assert r.status_code in (200, 201), f"{endpoint} {label}: {r.text}"
    # The job keeps the one spelling that was checked.
    r = w.client.post(
        "/v1/jobs",
        json=body_for("/v1/jobs", "training_file", f"S3://{w.granted}/datasets/ok.jsonl", w),
        headers=headers(w.keys["mine"]),
    )
    assert r.json()["training_file"] == f"s3://{w.granted}/datasets/ok.jsonl"
    # What the estimate read came from the granted bucket, through the proxy.
    reads = w.proxy.take()
    assert any(
        path.startswith(f"/{w.granted}/datasets/ok.jsonl") for method, path in reads if method == "GET"
    )
    # An admin key sees every team's files and jobs, so it may start from another team's model;
    # grants bind it as they bind everyone.
    admin_body = body_for("/v1/jobs", "base_model", f"{w.store}/jobs/{w.theirs_job}/final", w)
    r = w.client.post(
        "/v1/jobs", json=admin_body | {"training_file": w.theirs_file_uri}, headers=headers(w.keys["admin"])
    )
    assert r.status_code == 201, r.text
    r = w.client.post(
        "/v1/jobs",
        json=admin_body | {"training_file": f"s3://{w.other}/secret.jsonl"},
        headers=headers(w.keys["admin"]),
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "training_file", r.text
