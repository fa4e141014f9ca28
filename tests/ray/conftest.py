"""Tests that start Ray: everything collected here is marked `ray` (`-m "not ray"` leaves it out),
and only these tests can reach the session's Ray cluster."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

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
