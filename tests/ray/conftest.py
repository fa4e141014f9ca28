"""Tests that start Ray: everything collected here is marked `ray` (`-m "not ray"` leaves it out),
and only these tests can reach the session's Ray cluster."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from worker_support import running

from trainyard.cli.tiny_model import make_dataset, make_tiny_model_dir
from trainyard.platform import storage
from trainyard.platform.deployment import load_deployment
from trainyard.workers.daemon import WorkerDaemon

HERE = Path(__file__).resolve().parent


def pytest_itemcollected(item: pytest.Item) -> None:
    # Runs as each item is collected, before `-m` deselects anything.
    if item.path.resolve().is_relative_to(HERE):
        item.add_marker(pytest.mark.ray)


@pytest.fixture(scope="session")
def ray_address(s3_env: Any) -> Iterator[str]:
    """One Ray cluster for the session, started with `ray start --head` so workers connect by
    address. It inherits the S3 test environment."""
    from trainyard.testing.ray_cluster import ray_cluster

    with ray_cluster(num_cpus=2) as address:
        yield address


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory, s3_env: Any, s3_client: Any) -> dict[str, str]:
    """A tiny GPT-2 and a JSONL dataset, both in S3 (nothing downloaded)."""
    root = tmp_path_factory.mktemp("worker-assets")
    s3_client.create_bucket(Bucket="assets")
    store = storage.open_store("s3://assets")
    model_dir = make_tiny_model_dir(root / "model")
    model_uri = store.upload_dir("models/tiny-gpt2", model_dir)
    data_uri = store.put_file("datasets/train.jsonl", make_dataset(root / "train.jsonl", 200))
    return {"model": model_uri, "train": data_uri}


@pytest.fixture
def worker_settings(settings: Any, s3_bucket: str) -> Any:
    settings.storage_uri = s3_bucket
    settings.heartbeat_seconds = 1.0
    settings.lease_seconds = 20.0
    settings.poll_seconds = 0.5
    settings.retry_backoff_seconds = 0.0
    return settings


@pytest.fixture
def daemon(worker_settings: Any, ray_address: str) -> Iterator[WorkerDaemon]:
    d = WorkerDaemon(
        worker_settings, load_deployment(worker_settings), pools=["local-cpu"], ray_address=ray_address
    )
    with running(d):
        yield d
