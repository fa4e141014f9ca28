"""The deployment built from settings: which pools a worker serves, and their capacity."""

from __future__ import annotations

import pytest
from support import TWO_POOLS

from trainyard.platform.deployment import DeploymentConfigError, load_deployment
from trainyard.settings import get_settings


def test_a_worker_serves_the_pools_it_names_and_refuses_unknown_ones() -> None:
    deployment = load_deployment(get_settings(catalog_path=None, pools=TWO_POOLS))
    assert deployment.served() == ["local-cpu", "c7i.2xlarge"]
    assert deployment.served(["c7i.2xlarge"]) == ["c7i.2xlarge"]
    assert deployment.capacity == {"local-cpu": 1, "c7i.2xlarge": 1}
    with pytest.raises(DeploymentConfigError, match="not configured"):
        deployment.served(["g5.xlarge"])
