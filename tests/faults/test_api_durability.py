"""The API through database faults, with real processes: `trainyard api` in a subprocess over a
Postgres of the test's own (stopped, killed under a commit, starved of connections) and a real S3
server behind a slow link. Each test prints its figures.

- an acknowledged create is durable: visible to the next request, and a commit that fails is a
  503 `database_unavailable`, never a 2xx or a 500;
- a pool of 2 connections serves health checks and reads while 10 slow uploads are in flight, and
  while 4 creates wait on a hung store;
- a SIGKILL of the API under 50 creates, then every create retried with its Idempotency-Key:
  exactly 50 jobs;
- Postgres down for 20 s: 503s meanwhile (no 500, no hang), and the API answers again once it is up.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from live import LiveApi, OwnPostgres, Proxy, error_code, live_api, team_key
from sqlalchemy import text
from support import headers, job_body

from trainyard.platform import db

# A job the planner sizes from the request alone: no hub or store read at submit.
BODY = job_body(base_model="sshleifer/tiny-gpt2", dataset_tokens=20_000)
DOWN_SECONDS = 20.0
PROBE_TIMEOUT = 10.0  # a request that takes longer than this is counted as a hang


@pytest.fixture(scope="module")
def pg_url(own_pg: OwnPostgres) -> str:
    return own_pg.create_database()


def _sql(url: str, statement: str, **params: Any) -> list[Any]:
    engine = db.make_engine(url, pool_size=1, max_overflow=0)
    try:
        with engine.begin() as conn:
            result = conn.execute(text(statement), params)
            return list(result) if result.returns_rows else []
    finally:
        engine.dispose()


def _team_jobs(url: str, team: str) -> list[Any]:
    return _sql(
        url,
        "SELECT j.id, j.name, j.idempotency_key FROM jobs j JOIN teams t ON t.id = j.team_id "
        "WHERE t.name = :team",
        team=team,
    )


# A deferred constraint trigger runs inside COMMIT: this one ends its own connection there, so the
# commit of a job named `doomed...` is lost on the way, as when the database dies under a commit.
_DOOM_AT_COMMIT = """
CREATE FUNCTION faults_doom_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.name LIKE 'doomed%' THEN
        PERFORM pg_terminate_backend(pg_backend_pid());
        PERFORM pg_sleep(5);
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER faults_doom_at_commit AFTER INSERT ON jobs
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION faults_doom_at_commit();
"""
_UNDOOM = "DROP TRIGGER faults_doom_at_commit ON jobs; DROP FUNCTION faults_doom_at_commit();"


def test_an_acknowledged_create_is_durable_and_a_failed_commit_answers_503(
    pg_url: str, tmp_path: Path
) -> None:
    key = team_key(pg_url, "durable")
    with (
        live_api(tmp_path, {"TRAINYARD_DATABASE_URL": pg_url}) as api,
        httpx.Client(base_url=api.base_url, headers=headers(key), timeout=PROBE_TIMEOUT) as writer,
        httpx.Client(base_url=api.base_url, headers=headers(key), timeout=PROBE_TIMEOUT) as reader,
    ):
        seen = 0
        for i in range(50):
            created = writer.post("/v1/jobs", json={**BODY, "name": f"durable-{i}"})
            assert created.status_code == 201, created.text
            got = reader.get(f"/v1/jobs/{created.json()['id']}")
            assert got.status_code == 200, f"create {i} answered 201, then GET said {got.status_code}"
            seen += 1

        _sql(pg_url, _DOOM_AT_COMMIT)
        try:
            lost = writer.post("/v1/jobs", json={**BODY, "name": "doomed-native"})
            lost_openai = writer.post(
                "/v1/fine_tuning/jobs",
                json={
                    "model": BODY["base_model"],
                    "training_file": BODY["training_file"],
                    "suffix": "doomed-openai",
                    "instance_type": BODY["instance_type"],
                    "model_parameters": BODY["model_parameters"],
                    "dataset_tokens": BODY["dataset_tokens"],
                },
            )
        finally:
            _sql(pg_url, _UNDOOM)
        after = writer.post("/v1/jobs", json={**BODY, "name": "durable-after"})

    print(
        f"\ncreate then GET: {seen}/50 visible at once; commit lost under the request: "
        f"/v1/jobs {lost.status_code} {error_code(lost)}, "
        f"/v1/fine_tuning/jobs {lost_openai.status_code} {error_code(lost_openai)}; "
        f"next create {after.status_code}"
    )
    assert lost.status_code == 503 and error_code(lost) == "database_unavailable", lost.text
    assert lost.headers.get("Retry-After")
    assert lost_openai.status_code == 503, lost_openai.text
    assert lost_openai.json()["error"]["type"] == "server_error"
    assert error_code(lost_openai) == "database_unavailable"
    assert after.status_code == 201, after.text
    names = {row.name for row in _team_jobs(pg_url, "durable")}
    assert len(names) == 51 and not any(n.startswith("doomed") for n in names)


def _multipart(payload: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="slow.jsonl"\r\n'
        f"Content-Type: application/jsonl\r\n\r\n"
    ).encode()
    return body + payload + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def _slow_upload(port: int, key: str, payload: bytes, *, chunk: int, delay: float) -> int:
    """POST /v1/files with a body that trickles in, `chunk` bytes every `delay` seconds."""
    body, content_type = _multipart(payload)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.putrequest("POST", "/v1/files")
        conn.putheader("Authorization", f"Bearer {key}")
        conn.putheader("Content-Type", content_type)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders()
        for start in range(0, len(body), chunk):
            conn.send(body[start : start + chunk])
            time.sleep(delay)
        return conn.getresponse().status
    finally:
        conn.close()


def _pool_of_2(pg_url: str, s3_bucket: str, proxy: Proxy) -> dict[str, str]:
    """An API with a pool of 2 connections (a 5 s wait for one), its store behind `proxy`."""
    return {
        "TRAINYARD_DATABASE_URL": pg_url,
        "TRAINYARD_DB_POOL_SIZE": "2",
        "TRAINYARD_DB_MAX_OVERFLOW": "0",
        "TRAINYARD_DB_POOL_TIMEOUT_SECONDS": "5",
        "TRAINYARD_STORAGE_URI": s3_bucket,
        "AWS_ENDPOINT_URL": proxy.url,
        "AWS_ENDPOINT_URL_S3": proxy.url,
    }


def test_a_pool_of_2_with_10_slow_uploads_still_answers_health_and_job_reads(
    pg_url: str, tmp_path: Path, s3_server: str, s3_bucket: str
) -> None:
    key = team_key(pg_url, "uploads")
    moto = urlsplit(s3_server)
    # The store is reached through a slow link: each upload spends seconds writing to it.
    proxy = Proxy((moto.hostname or "127.0.0.1", moto.port or 80), chunk=4096, delay=0.15)
    env = _pool_of_2(pg_url, s3_bucket, proxy)
    line = json.dumps(
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x" * 200}]}
    )
    payload = ("\n".join([line] * 200) + "\n").encode()  # ~50 KB
    probes: list[tuple[str, int, float]] = []
    done = threading.Event()
    try:
        with (
            live_api(tmp_path, env) as api,
            httpx.Client(base_url=api.base_url, headers=headers(key), timeout=PROBE_TIMEOUT) as client,
        ):
            assert client.post("/v1/jobs", json=BODY).status_code == 201

            def probe() -> None:
                while not done.is_set():
                    for path in ("/healthz", "/v1/jobs"):
                        began = time.monotonic()
                        try:
                            status = client.get(path).status_code
                        except httpx.HTTPError:
                            status = 0
                        probes.append((path, status, time.monotonic() - began))
                    time.sleep(0.2)

            began = time.monotonic()
            with ThreadPoolExecutor(11) as pool:
                uploads = [
                    pool.submit(_slow_upload, api.port, key, payload, chunk=2048, delay=0.1)
                    for _ in range(10)
                ]
                time.sleep(0.5)
                prober = pool.submit(probe)
                statuses = [u.result() for u in uploads]
                done.set()
                prober.result()
            took = time.monotonic() - began
            listed = client.get("/v1/files").json()["data"]
    finally:
        proxy.close()

    by_path = {path: [p for p in probes if p[0] == path] for path in ("/healthz", "/v1/jobs")}
    summary = ", ".join(
        f"{path} {Counter(s for _, s, _ in rows)} (slowest {max(t for _, _, t in rows):.2f} s)"
        for path, rows in by_path.items()
    )
    print(f"\npool 2, 10 slow uploads in {took:.1f} s: uploads {Counter(statuses)}; {summary}")
    assert statuses == [200] * 10
    assert len(listed) == 10
    for path, rows in by_path.items():
        assert len(rows) >= 5, f"too few probes of {path}"
        assert all(status == 200 for _, status, _ in rows), f"{path}: {rows}"
        assert max(t for _, _, t in rows) < 3.0, f"{path} waited: {rows}"


def test_creates_waiting_on_a_hung_store_hold_no_connection_of_a_pool_of_2(
    pg_url: str, tmp_path: Path, s3_server: str, s3_bucket: str
) -> None:
    key = team_key(pg_url, "hung-store")
    moto = urlsplit(s3_server)
    proxy = Proxy((moto.hostname or "127.0.0.1", moto.port or 80))
    env = _pool_of_2(pg_url, s3_bucket, proxy)
    line = json.dumps(
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
    )
    # No dataset_tokens: each create sizes its training file in the store before it inserts.
    body = {k: v for k, v in BODY.items() if k != "dataset_tokens"}
    probes: list[tuple[str, int, float]] = []
    try:
        with (
            live_api(tmp_path, env) as api,
            httpx.Client(base_url=api.base_url, headers=headers(key), timeout=30.0) as client,
        ):
            uploaded = client.post(
                "/v1/files",
                files={"file": ("train.jsonl", (line + "\n").encode() * 20)},
                data={"purpose": "fine-tune"},
            )
            assert uploaded.status_code == 200, uploaded.text
            body["training_file"] = uploaded.json()["id"]
            proxy.stall()
            with ThreadPoolExecutor(4) as pool:
                creates = [
                    pool.submit(client.post, "/v1/jobs", json={**body, "name": f"hung-{i}"}) for i in range(4)
                ]
                deadline = time.monotonic() + 10
                while proxy.held < 4 and time.monotonic() < deadline:  # every create is in its read
                    time.sleep(0.05)
                held = proxy.held
                for _ in range(6):
                    for path in ("/healthz", "/v1/jobs"):
                        began = time.monotonic()
                        try:
                            status = client.get(path, timeout=PROBE_TIMEOUT).status_code
                        except httpx.HTTPError:
                            status = 0
                        probes.append((path, status, time.monotonic() - began))
                still_waiting = sum(not c.done() for c in creates)
                proxy.restore()
                statuses = [c.result().status_code for c in creates]
    finally:
        proxy.close()
    slowest = max(t for _, _, t in probes)
    print(
        f"\npool 2, 4 creates held on a hung store ({held} chunks held, {still_waiting} still waiting): "
        f"probes {Counter(s for _, s, _ in probes)}, slowest {slowest:.2f} s; creates {Counter(statuses)}"
    )
    assert held >= 4 and still_waiting == 4, "the creates were not all waiting on the store"
    assert all(status == 200 for _, status, _ in probes), probes
    assert slowest < 3.0, f"a probe waited for a connection: {probes}"
    assert statuses == [201] * 4


def _create_until_answered(api: LiveApi, key: str, idem: str, deadline: float) -> httpx.Response:
    body = {**BODY, "name": f"kill-{idem}"}
    while True:
        try:
            response = httpx.post(
                f"{api.base_url}/v1/jobs",
                json=body,
                headers=headers(key, **{"Idempotency-Key": idem}),
                timeout=PROBE_TIMEOUT,
            )
            if response.status_code < 500:
                return response
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"create {idem} never answered")
        time.sleep(0.2)


def test_sigkill_of_the_api_under_50_creates_then_retries_make_exactly_50_jobs(
    pg_url: str, tmp_path: Path
) -> None:
    key = team_key(pg_url, "killed")
    idems = [f"kill-{i:02d}-{uuid.uuid4().hex[:8]}" for i in range(50)]
    api = LiveApi(tmp_path, {"TRAINYARD_DATABASE_URL": pg_url})
    api.start()
    answered = threading.Semaphore(0)

    def first_try(idem: str) -> httpx.Response | None:
        try:
            response = httpx.post(
                f"{api.base_url}/v1/jobs",
                json={**BODY, "name": f"kill-{idem}"},
                headers=headers(key, **{"Idempotency-Key": idem}),
                timeout=PROBE_TIMEOUT,
            )
        except httpx.HTTPError:
            return None  # cut by the kill
        answered.release()
        return response

    try:
        with ThreadPoolExecutor(50) as pool:
            tries = [pool.submit(first_try, idem) for idem in idems]
            for _ in range(3):  # let a few through, so the kill lands with most in flight
                answered.acquire(timeout=PROBE_TIMEOUT)
            api.kill()
            first = [t.result() for t in tries]
        api.start()
        deadline = time.monotonic() + 60
        retried = [_create_until_answered(api, key, idem, deadline) for idem in idems]
    finally:
        api.stop()

    before = sum(1 for r in first if r is not None and r.status_code < 300)
    cut = sum(1 for r in first if r is None)
    rows = _team_jobs(pg_url, "killed")
    per_key = Counter(row.idempotency_key for row in rows)
    print(
        f"\nSIGKILL with 50 creates in flight: {before} answered 2xx before the kill, {cut} cut; "
        f"after restart every create retried with its key: {Counter(r.status_code for r in retried)}, "
        f"{len(rows)} jobs, {sum(n - 1 for n in per_key.values())} duplicates"
    )
    assert all(r.status_code in (200, 201) for r in retried), [r.text for r in retried if r.status_code > 201]
    assert len(rows) == 50 and set(per_key) == set(idems) and set(per_key.values()) == {1}
    ids = {row.idempotency_key: row.id for row in rows}
    assert all(r.json()["id"] == ids[idem] for idem, r in zip(idems, retried, strict=True))
    for idem, r in zip(idems, first, strict=True):
        if r is not None and r.status_code < 300:
            assert r.json()["id"] == ids[idem], "a create acknowledged before the kill was lost"


def test_postgres_down_for_20_s_answers_503_and_recovers(
    own_pg: OwnPostgres, pg_url: str, tmp_path: Path
) -> None:
    key = team_key(pg_url, "outage")
    phase = "up"
    seen: dict[str, Counter[str]] = {
        name: Counter() for name in ("up", "stopping", "down", "starting", "after", "edge")
    }
    bad: list[str] = []
    stop = threading.Event()
    recovered_at: list[float] = []

    def probe(client: httpx.Client) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            for method, path in (("GET", "/v1/jobs"), ("POST", "/v1/jobs"), ("GET", "/healthz")):
                sent = phase
                try:
                    body = {**BODY, "name": f"outage-{n}"} if method == "POST" else None
                    r = client.request(method, path, json=body)
                    outcome = str(r.status_code)
                    enveloped = error_code(r) == "database_unavailable" and r.headers.get("Retry-After")
                    if r.status_code == 503 and path != "/healthz" and not enveloped:
                        bad.append(f"{method} {path}: 503 without the envelope: {r.text}")
                    if sent == "after" and (method, path, r.status_code) == ("GET", "/v1/jobs", 200):
                        recovered_at.append(time.monotonic())
                except httpx.TimeoutException:
                    outcome = "hang"
                except httpx.HTTPError as exc:
                    outcome = type(exc).__name__
                # Sent in one phase and answered in another: neither phase's figure.
                seen[sent if phase == sent else "edge"][outcome] += 1
            time.sleep(0.2)

    with (
        live_api(tmp_path, {"TRAINYARD_DATABASE_URL": pg_url}) as api,
        httpx.Client(base_url=api.base_url, headers=headers(key), timeout=PROBE_TIMEOUT) as client,
    ):
        prober = threading.Thread(target=probe, args=(client,), daemon=True)
        prober.start()
        try:
            time.sleep(1.5)
            phase = "stopping"
            own_pg.stop()
            phase = "down"
            time.sleep(DOWN_SECONDS)
        finally:
            phase = "starting"
            own_pg.start()
        phase = "after"
        started = time.monotonic()
        while not recovered_at and time.monotonic() - started < 30:
            time.sleep(0.1)
        time.sleep(1.5)
        stop.set()
        prober.join(PROBE_TIMEOUT * 3)

    down = seen["down"]
    recovery = recovered_at[0] - started if recovered_at else None
    print(
        f"\nPostgres {DOWN_SECONDS:.0f} s down: API 503 x {down['503']}, 500 x {down['500']}, "
        f"hang x {down['hang']}, other {dict(down - Counter({'503': down['503']}))}; "
        f"before {dict(seen['up'])}, after {dict(seen['after'])}, across a change {dict(seen['edge'])}; "
        f"answering again {recovery if recovery is None else round(recovery, 2)} s after the start"
    )
    assert not bad, bad[:3]
    assert set(seen["up"]) <= {"200", "201"}, seen["up"]
    assert down["503"] > 0 and set(down) == {"503"}, down
    assert recovery is not None and recovery < 10
    # Once it has answered again, it keeps answering (requests sent just before the start may 503).
    assert seen["after"]["500"] == 0 and seen["after"]["hang"] == 0, seen["after"]
