"""Estimates, instance types and the plan a new job gets, over HTTP."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker
from support import headers, job_body

from trainyard.platform import queue
from trainyard.platform.scheduling import profiles


def _estimate(client: Any, key: str, **body: Any) -> dict[str, Any]:
    r = client.post("/v1/estimates", json=body, headers=headers(key))
    assert r.status_code == 200, r.text
    return r.json()


def test_estimate_lists_every_option_and_explains_the_choice(client: Any, key: str) -> None:
    est = _estimate(
        client,
        key,
        base_model="meta-llama/Llama-3.1-8B",
        method="lora",
        model_parameters=8_030_000_000,
        dataset_tokens=50_000_000,
        policy={"objective": "cheapest", "spot": "never"},
    )
    assert est["object"] == "estimate"
    names = {o["instance_type"] for o in est["options"]}
    assert {"g5.xlarge", "p4d.24xlarge", "p5.48xlarge", "v6e-8", "local-cpu"} <= names
    for option in est["options"]:
        assert set(option) >= {
            "instance_type",
            "kind",
            "accelerator",
            "count",
            "spot",
            "fits",
            "estimated_seconds",
            "estimated_cost_usd",
            "usd_per_million_tokens",
            "meets_deadline",
            "within_budget",
            "available",
            "reason",
        }
    # This deployment runs only local-cpu, and an 8B model does not fit it: nothing to choose.
    assert est["chosen"] is None
    assert est["error"]["code"] in {"no_instance_fits", "no_eligible_instance"}
    fits_a10g = [o for o in est["options"] if o["instance_type"] == "g5.xlarge"]
    assert fits_a10g and fits_a10g[0]["fits"], "LoRA on 8B fits an A10G"


def test_job_gets_a_plan_in_a_pool(client: Any, key: str) -> None:
    job = client.post("/v1/jobs", json=job_body(instance_type=None), headers=headers(key)).json()
    plan = job["plan"]
    assert plan["instance_type"] == "local-cpu" and job["pool"] == "local-cpu"
    assert plan["estimated_seconds"] > 0 and plan["estimated_cost_usd"] > 0
    assert "local-cpu" in plan["reason"]
    assert job["cost"]["estimated_usd"] == plan["estimated_cost_usd"]


def test_budget_too_small_is_rejected_with_a_reason(client: Any, key: str) -> None:
    body = job_body(
        model_parameters=124_000_000,
        hyperparameters={"max_steps": 100_000, "batch_size": 8, "seq_len": 512},
        policy={"objective": "budget", "max_cost_usd": 0.0001},
    )
    r = client.post("/v1/jobs", json=body, headers=headers(key))
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "budget_infeasible"
    assert r.json()["error"]["param"] == "policy.max_cost_usd"


def test_unknown_instance_type_and_missing_sizes(client: Any, key: str) -> None:
    r = client.post("/v1/jobs", json=job_body(instance_type="x99.mega"), headers=headers(key))
    assert r.status_code == 400 and r.json()["error"]["code"] == "instance_type_unknown"
    body = job_body()
    del body["model_parameters"]
    r = client.post("/v1/jobs", json=body, headers=headers(key))
    assert r.status_code == 422 and r.json()["error"]["param"] == "model_parameters"


def test_deadline_policy_reports_whether_it_is_met(client: Any, key: str) -> None:
    deadline = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    est = _estimate(
        client,
        key,
        base_model="gpt2",
        model_parameters=2_000_000,
        dataset_tokens=100_000,
        policy={"objective": "deadline", "deadline": deadline},
    )
    assert est["chosen"]["instance_type"] == "local-cpu"
    assert est["chosen"]["meets_deadline"] is True


def test_instance_types_lists_the_catalog(client: Any, key: str) -> None:
    data = client.get("/v1/instance-types", headers=headers(key)).json()["data"]
    by_name = {row["name"]: row for row in data}
    assert by_name["local-cpu"]["available"] is True and by_name["local-cpu"]["max_concurrent"] >= 1
    assert by_name["p5.48xlarge"]["available"] is False
    assert by_name["p5.48xlarge"]["accelerator_spec"]["peak_bf16_tflops"] > 500
    for row in data:
        assert row["on_demand_usd_per_hour"] > 0 and row["source"] and row["as_of"]


def test_estimates_learn_from_finished_attempts(
    client: Any, key: str, sessions: sessionmaker[Session]
) -> None:
    # A hub model the registry does not know, sized by its hint like the job it learns from.
    body = {"base_model": "org/tiny-model", "model_parameters": 2_000_000, "dataset_tokens": 10_000_000}
    before = _estimate(client, key, **body)["chosen"]
    job = client.post("/v1/jobs", json=job_body(), headers=headers(key)).json()
    measured = before["tokens"] / before["estimated_seconds"] / 4  # far slower than the model says
    with sessions() as s:
        [c] = queue.claim(s, worker_id="w")
        queue.heartbeat(s, c.attempt_id, progress={"tokens": 1000, "tokens_per_second": measured})
        queue.finish(s, c.attempt_id, "succeeded")
    client.app.state.deployment.throughput.forget()  # skip the one-minute cache
    after = _estimate(client, key, **body)["chosen"]
    assert job["plan"]["throughput_source"] == "model"
    assert after["throughput_source"] == "learned"
    assert after["estimated_seconds"] > before["estimated_seconds"] * 2


def test_a_job_shape_seen_before_is_planned_without_estimator_work(
    client: Any, key: str, sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    computed: list[str] = []
    compute = profiles._compute_profile

    def counted(*args: Any) -> Any:
        computed.append(args[1].name)
        return compute(*args)

    monkeypatch.setattr(profiles, "_compute_profile", counted)
    first = client.post("/v1/jobs", json=job_body(name="first"), headers=headers(key))
    assert first.status_code == 201, first.text
    assert computed, "the first job of a shape is estimated"
    computed.clear()
    # Another job of the same shape, after the learned throughput was read again from the same runs
    # (as the API does every minute): planned from the cache, to the same plan.
    client.app.state.deployment.throughput.forget()
    second = client.post(
        "/v1/jobs", json=job_body(name="second", metadata={"project": "other"}), headers=headers(key)
    )
    assert second.status_code == 201, second.text
    assert computed == []
    assert second.json()["plan"]["estimated_seconds"] == first.json()["plan"]["estimated_seconds"]
    # A finished attempt measured throughput: what was learned changed, so the shape is estimated
    # again and the plan uses the measurement.
    with sessions() as s:
        [c] = queue.claim(s, worker_id="w")
        queue.heartbeat(s, c.attempt_id, progress={"tokens": 1000, "tokens_per_second": 5.0})
        queue.finish(s, c.attempt_id, "succeeded")
    client.app.state.deployment.throughput.forget()
    third = client.post("/v1/jobs", json=job_body(name="third"), headers=headers(key))
    assert third.status_code == 201, third.text
    assert "local-cpu" in computed
    assert third.json()["plan"]["throughput_source"] == "learned"
