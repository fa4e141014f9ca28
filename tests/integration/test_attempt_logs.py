"""An attempt's log, shipped by the worker into the store as it grows and read through the API,
the SDK and `trainyard logs`: in order, once, team-scoped, and through a store outage."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from live import Proxy
from sqlalchemy.orm import Session, sessionmaker
from support import AppTransport, headers, job_body, make_key, make_sdk

from trainyard.platform import queue, storage
from trainyard.platform.logs import read_log
from trainyard.platform.states import AttemptOutcome
from trainyard.platform.storage import S3Options, S3Store, StorageError
from trainyard.workers.logship import LogShipper

pytestmark = pytest.mark.usefixtures("isolated_config")


def _write(path: Path, text: str) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write(text)


def test_a_growing_log_reads_back_in_order_from_any_offset_and_by_its_tail(
    s3_bucket: str, tmp_path: Path
) -> None:
    store = storage.open_store(s3_bucket)
    shipper = LogShipper(store, tmp_path / "a.log", "job-1", 1)
    _write(shipper.path, "loading model\nstep 1 loss 3.85\n")
    shipper.ship()
    first = read_log(store, "job-1", 1)
    assert first.text == "loading model\nstep 1 loss 3.85\n"
    assert (first.offset, first.next_offset) == (0, len(first.text))
    assert not first.complete  # the attempt may still write

    _write(shipper.path, "step 2 loss 3.51\nstep 3 loss 3.2")  # a line still being written
    shipper.ship()  # too soon after the last shipment: nothing new goes up yet
    assert read_log(store, "job-1", 1, after=first.next_offset).text == ""
    shipper.ship(final=True)
    rest = read_log(store, "job-1", 1, after=first.next_offset)
    assert rest.text == "step 2 loss 3.51\nstep 3 loss 3.2"
    assert rest.complete

    whole = read_log(store, "job-1", 1)
    assert whole.text == first.text + rest.text
    assert read_log(store, "job-1", 1, tail=2).text == "step 2 loss 3.51\nstep 3 loss 3.2"
    assert read_log(store, "job-1", 1, tail=1).text == "step 3 loss 3.2"
    # A short read from the middle: the cursor says where to go on, nothing is skipped.
    piece = read_log(store, "job-1", 1, after=5, max_bytes=7)
    assert piece.text == whole.text[5:12] and piece.next_offset == 12
    assert read_log(store, "job-1", 2).text == ""  # another attempt's log is its own


def test_a_store_outage_delays_the_log_and_loses_or_repeats_nothing(
    s3_server: str, s3_client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    upstream = urlsplit(s3_server)
    assert upstream.hostname and upstream.port
    proxy = Proxy((upstream.hostname, upstream.port))
    s3_client.create_bucket(Bucket="logs-cut")
    try:
        for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
            monkeypatch.setenv(name, proxy.url)
        store = S3Store("logs-cut", options=S3Options(max_attempts=2, connect_timeout=1.0, read_timeout=2.0))
        shipper = LogShipper(store, tmp_path / "a.log", "job-2", 1)
        _write(shipper.path, "before the cut\n")
        shipper.ship(final=True)
        proxy.cut()
        _write(shipper.path, "during the cut\n")
        with pytest.raises(StorageError):
            shipper.ship(final=True)
        proxy.restore()
        _write(shipper.path, "after it\n")
        shipper.ship(final=True)
        log = read_log(store, "job-2", 1)
        assert log.text == "before the cut\nduring the cut\nafter it\n"
        assert log.complete
    finally:
        proxy.close()


def test_logs_through_the_api_and_the_sdk_are_the_teams_own(
    client: Any, sessions: sessionmaker[Session], settings: Any, tmp_path: Path
) -> None:
    key = make_key(sessions, "research")
    other = make_key(sessions, "vision")
    job = client.post("/v1/jobs", json=job_body(), headers=headers(key)).json()
    queued = client.post("/v1/jobs", json=job_body(name="later"), headers=headers(key)).json()
    with sessions() as s:
        [claim] = queue.claim(s, worker_id="w", n=1)
    assert claim.job_id == job["id"]
    shipper = LogShipper(storage.open_store(settings.storage_uri), tmp_path / "a.log", job["id"], 1)
    _write(shipper.path, "attempt 1 started\n(RayTrainWorker pid=1) {'loss': 3.85}\n")
    shipper.ship()

    got = client.get(f"/v1/jobs/{job['id']}/logs", headers=headers(key)).json()
    assert got["attempt"] == 1 and got["attempts"] == 1
    assert got["data"] == "attempt 1 started\n(RayTrainWorker pid=1) {'loss': 3.85}\n"
    assert got["complete"] is False
    tail = client.get(f"/v1/jobs/{job['id']}/logs", params={"tail": 1}, headers=headers(key)).json()
    assert tail["data"] == "(RayTrainWorker pid=1) {'loss': 3.85}\n"

    # Another team's key learns nothing, not even that the job exists.
    hidden = client.get(f"/v1/jobs/{job['id']}/logs", headers=headers(other))
    assert hidden.status_code == 404 and hidden.json()["error"]["code"] == "job_not_found"
    missing = client.get(f"/v1/jobs/{job['id']}/logs", params={"attempt": 2}, headers=headers(key))
    assert missing.status_code == 404 and missing.json()["error"]["param"] == "attempt"
    bad = client.get(f"/v1/jobs/{job['id']}/logs", params={"after": -1}, headers=headers(key))
    assert bad.status_code == 422 and bad.json()["error"]["param"] == "after"
    never = client.get(f"/v1/jobs/{queued['id']}/logs", headers=headers(key)).json()
    assert (never["attempt"], never["data"], never["complete"]) == (0, "", False)

    # The SDK follows the log until the job has ended and the log is whole.
    sdk = make_sdk(AppTransport(client), key)
    followed: list[str] = []
    finished = threading.Event()

    def end_attempt() -> None:
        _write(shipper.path, "training done\n")
        with sessions() as s:
            queue.finish(s, claim.attempt_id, AttemptOutcome.SUCCEEDED)
        shipper.ship(final=True)
        finished.set()

    for text in sdk.jobs.follow_logs(job["id"], poll_interval=0.05):
        followed.append(text)
        if not finished.is_set():
            end_attempt()
    assert "".join(followed) == ("attempt 1 started\n(RayTrainWorker pid=1) {'loss': 3.85}\ntraining done\n")
