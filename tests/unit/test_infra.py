"""The deployment files and examples hang together: they parse, the compose services and the
KubeRay cluster agree with the pools, and every example job is a valid spec the scheduler can
place. Fast, no network, no Ray."""

from __future__ import annotations

import importlib.util
import json
import re
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from support import ROOT

from trainyard.platform.registry.table import packaged_table
from trainyard.platform.scheduling import (
    Catalog,
    ModelInfo,
    choose,
    estimate_all,
    parse_pools,
    resolve_dataset_tokens,
)
from trainyard.platform.spec import Hyperparameters, JobSpec

INFRA = ROOT / "infra"
EXAMPLES = ROOT / "examples"
COMPOSE = INFRA / "compose.yaml"
POOLS = INFRA / "pools.example.json"
RAYCLUSTER = INFRA / "kuberay" / "raycluster.yaml"
TRAINYARD_KUBE = INFRA / "kuberay" / "trainyard.yaml"
EXAMPLE_SPECS = sorted(EXAMPLES.glob("*.yaml"))

ACCELERATOR_KINDS = {"gpu", "multi_gpu", "tpu"}


# ------------------------------------------------------------------------------------------ helpers


def _docs(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


def _one(path: Path) -> Any:
    docs = _docs(path)
    assert len(docs) == 1, f"{path} should hold one YAML document"
    return docs[0]


def _kube(kind: str, path: Path) -> list[dict[str, Any]]:
    return [d for d in _docs(path) if d.get("kind") == kind]


def _ray_resources(value: str) -> dict[str, int]:
    """rayStartParams.resources as KubeRay's autoscaler reads it: drop the outer quotes and any
    backslash escapes, then JSON ('{"a": 1}' and '"{\\"a\\": 1}"' both work)."""
    text = value.strip()
    assert text[0] == text[-1] and text[0] in "'\"", f"resources must be quoted for the shell: {value!r}"
    parsed = json.loads(text[1:-1].replace("\\", ""))
    assert isinstance(parsed, dict)
    assert all(isinstance(v, int) for v in parsed.values()), "the autoscaler wants whole numbers"
    return parsed


def _compose_ray_resources(command: list[str]) -> dict[str, float]:
    for arg in command:
        if arg.startswith("--resources="):
            return json.loads(arg.removeprefix("--resources="))
    return {}


def _pool_entries() -> list[dict[str, Any]]:
    return json.loads(POOLS.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return _one(COMPOSE)


@pytest.fixture(scope="module")
def raycluster() -> dict[str, Any]:
    (cluster,) = _kube("RayCluster", RAYCLUSTER)
    return cluster


def _load_make_data() -> ModuleType:
    spec = importlib.util.spec_from_file_location("examples_make_data", EXAMPLES / "make_data.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------------------------------ parsing


def test_every_infra_and_example_file_parses() -> None:
    yaml_files = sorted({*INFRA.rglob("*.yaml"), *INFRA.rglob("*.yml"), *EXAMPLE_SPECS})
    json_files = sorted(INFRA.rglob("*.json"))
    assert COMPOSE in yaml_files and RAYCLUSTER in yaml_files and TRAINYARD_KUBE in yaml_files
    assert len(EXAMPLE_SPECS) >= 3 and POOLS in json_files
    for path in yaml_files:
        docs = _docs(path)
        assert docs, f"{path} is empty"
        assert all(isinstance(d, dict) for d in docs), f"{path}: every document should be a mapping"
    for path in json_files:
        json.loads(path.read_text(encoding="utf-8"))
    for path in (RAYCLUSTER, TRAINYARD_KUBE):
        for doc in _docs(path):
            assert {"apiVersion", "kind", "metadata"} <= set(doc), f"{path}: {doc.get('kind')} is incomplete"


def test_dockerfile_builds_the_cli_image() -> None:
    text = (INFRA / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    assert re.search(r"^ARG TORCH_INDEX_URL=\S+/whl/cpu$", text, re.M), "CPU torch by default"
    assert "constraints.txt" in text
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0"), "the image runs as a non-root user"
    assert re.search(r'^ENTRYPOINT \["trainyard"\]$', text, re.M)


# ------------------------------------------------------------------------------------------ pools


def test_pools_example_parses_with_the_shipped_catalog(catalog: Catalog) -> None:
    pools = parse_pools(POOLS.read_text(encoding="utf-8"), catalog)
    assert {p.instance_type for p in pools} == {
        "c7i.8xlarge",
        "g5.xlarge",
        "p4d.24xlarge",
        "p5.48xlarge",
        "v6e-8",
    }
    for pool in pools:
        assert pool.ray_resource, f"{pool.instance_type}: a cluster pool needs a ray_resource to pin it"
    names = [name for p in pools for name in p.ray_resource or {}]
    assert len(names) == len(set(names)), "each pool needs a resource of its own"


def test_kube_config_map_carries_the_example_pools() -> None:
    (config,) = _kube("ConfigMap", TRAINYARD_KUBE)
    assert json.loads(config["data"]["TRAINYARD_POOLS"]) == _pool_entries()


# ------------------------------------------------------------------------------------------ compose


def test_compose_services_depend_on_each_other_consistently(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"postgres", "minio", "create-bucket", "migrate", "ray-head", "api", "worker"} <= set(services)
    for name, service in services.items():
        for target in service.get("depends_on") or {}:
            assert target in services, f"{name} depends on unknown service {target}"

    api_deps = services["api"]["depends_on"]
    assert api_deps["postgres"]["condition"] == "service_healthy"
    assert api_deps["minio"]["condition"] == "service_healthy"
    assert api_deps["migrate"]["condition"] == "service_completed_successfully"
    assert api_deps["create-bucket"]["condition"] == "service_completed_successfully"
    assert services["worker"]["depends_on"]["ray-head"]["condition"] == "service_healthy"
    assert services["migrate"]["command"] == ["migrate"]
    assert services["api"]["command"][0] == "api"
    assert "trainyard worker" in " ".join(services["worker"]["command"])

    for name in ("postgres", "minio", "api"):
        assert services[name].get("healthcheck", {}).get("test"), f"{name} needs a healthcheck"
    assert "/healthz" in " ".join(services["api"]["healthcheck"]["test"])
    assert services["postgres"]["image"].startswith("postgres:16")


def test_compose_environment_points_at_the_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    worker_env = services["worker"]["environment"]
    ray_address = worker_env["RAY_ADDRESS"]
    host = ray_address.removeprefix("ray://").split(":")[0]
    assert host in services and host == "ray-head"

    for name in ("migrate", "api", "worker", "ray-head"):
        env = services[name]["environment"]
        db_host = re.search(r"@([^:/]+)[:/]", env["TRAINYARD_DATABASE_URL"])
        assert db_host and db_host.group(1) == "postgres"
        assert env["TRAINYARD_STORAGE_URI"] == "s3://trainyard/prod"
        assert env["AWS_ENDPOINT_URL_S3"] == "http://minio:9000"
        assert env["AWS_ACCESS_KEY_ID"] and env["AWS_SECRET_ACCESS_KEY"]
        assert env["TRAINYARD_POOLS"] == services["api"]["environment"]["TRAINYARD_POOLS"]

    bucket = services["api"]["environment"]["TRAINYARD_STORAGE_URI"].removeprefix("s3://").split("/")[0]
    assert f"mb --ignore-existing local/{bucket}" in " ".join(services["create-bucket"]["command"])


def test_compose_turns_ray_token_auth_off_on_every_ray_process(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("ray-head", "worker", "api", "migrate"):
        assert services[name]["environment"]["RAY_AUTH_MODE"] == "disabled", name


def test_compose_head_advertises_every_compose_pool(compose: dict[str, Any], catalog: Catalog) -> None:
    services = compose["services"]
    pools = parse_pools(services["api"]["environment"]["TRAINYARD_POOLS"], catalog)
    advertised = _compose_ray_resources(services["ray-head"]["command"])
    for pool in pools:
        itype = catalog.get(pool.instance_type)
        for name, amount in (pool.ray_resource or {}).items():
            assert advertised.get(name, 0) >= amount * itype.workers, (pool.instance_type, name)


# ------------------------------------------------------------------------------------------ KubeRay


def test_raycluster_autoscales_with_a_head_group(raycluster: dict[str, Any]) -> None:
    assert raycluster["apiVersion"] == "ray.io/v1"
    spec = raycluster["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["headGroupSpec"]["template"]["spec"]["containers"]
    assert spec["rayVersion"].startswith("2.60")


def test_worker_groups_and_pools_match_one_to_one(raycluster: dict[str, Any]) -> None:
    groups = raycluster["spec"]["workerGroupSpecs"]
    advertised: dict[str, str] = {}
    for group in groups:
        resources = _ray_resources(group["rayStartParams"]["resources"])
        pool_resources = [name for name in resources if name.startswith("pool-")]
        assert pool_resources, f"group {group['groupName']} advertises no pool resource"
        for name in pool_resources:
            assert name not in advertised, f"{name} is advertised by two groups"
            advertised[name] = group["groupName"]
    used = {name for entry in _pool_entries() for name in entry["ray_resource"]}
    assert set(advertised) == used


def test_worker_groups_fit_their_instance_types(raycluster: dict[str, Any], catalog: Catalog) -> None:
    by_resource = {
        name: group
        for group in raycluster["spec"]["workerGroupSpecs"]
        for name in _ray_resources(group["rayStartParams"]["resources"])
    }
    for entry in _pool_entries():
        itype = catalog.get(entry["instance_type"])
        ((name, amount),) = entry["ray_resource"].items()
        group = by_resource[name]
        where = f"{group['groupName']} ({itype.name})"
        pod = group["template"]["spec"]
        (container,) = pod["containers"]
        limits = container["resources"]["limits"]
        selector = pod.get("nodeSelector", {})
        offered = _ray_resources(group["rayStartParams"]["resources"])[name]

        # Every worker of one job fits on one node without the pool resource binding.
        assert offered >= amount * itype.workers, where
        if itype.kind in ACCELERATOR_KINDS:
            assert group["minReplicas"] == 0, f"{where}: accelerator groups scale from zero"
            # Each node holds one whole job, so the pool cannot queue more than the group runs.
            assert entry["max_concurrent"] <= group["maxReplicas"], where
        assert group["minReplicas"] <= group["maxReplicas"], where

        if itype.kind in ("gpu", "multi_gpu"):
            assert int(group["rayStartParams"]["num-gpus"]) == itype.accelerator_count, where
            assert int(limits["nvidia.com/gpu"]) == itype.accelerator_count, where
            assert selector.get("node.kubernetes.io/instance-type") == itype.name, where
            assert any(t.get("key") == "nvidia.com/gpu" for t in pod.get("tolerations", [])), where
        elif itype.kind == "tpu":
            assert selector.get("cloud.google.com/gke-tpu-accelerator") == "tpu-v6e-slice", where
            assert selector.get("cloud.google.com/gke-tpu-topology") == itype.tpu_topology, where
            assert int(limits["google.com/tpu"]) == itype.accelerator_count, where
            assert group.get("numOfHosts", 1) == itype.nodes, where
            assert any(t.get("key") == "google.com/tpu" for t in pod.get("tolerations", [])), where
        else:
            assert "nvidia.com/gpu" not in limits and "google.com/tpu" not in limits, where
            assert selector.get("node.kubernetes.io/instance-type") == itype.name, where
            assert float(limits["cpu"]) <= itype.vcpus, where


def test_every_ray_container_disables_token_auth_and_reads_the_secret(raycluster: dict[str, Any]) -> None:
    spec = raycluster["spec"]
    templates = [spec["headGroupSpec"]["template"]] + [g["template"] for g in spec["workerGroupSpecs"]]
    for template in templates:
        for container in template["spec"]["containers"]:
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            assert env.get("RAY_AUTH_MODE") == "disabled", container["name"]
            secrets = [s["secretRef"]["name"] for s in container.get("envFrom", []) if "secretRef" in s]
            assert "trainyard-env" in secrets, container["name"]
    autoscaler_env = {e["name"]: e.get("value") for e in spec["autoscalerOptions"].get("env", [])}
    assert autoscaler_env.get("RAY_AUTH_MODE") == "disabled"


def test_kube_deployments_wire_the_api_and_worker(raycluster: dict[str, Any]) -> None:
    deployments = {d["metadata"]["name"]: d for d in _kube("Deployment", TRAINYARD_KUBE)}
    assert {"trainyard-api", "trainyard-worker"} <= set(deployments)
    (config,) = _kube("ConfigMap", TRAINYARD_KUBE)
    config_name = config["metadata"]["name"]

    for deployment in deployments.values():
        pod = deployment["spec"]["template"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
        for container in pod["spec"]["containers"] + pod["spec"].get("initContainers", []):
            sources = container.get("envFrom", [])
            assert {"secretRef": {"name": "trainyard-env"}} in sources, container["name"]
            assert {"configMapRef": {"name": config_name}} in sources, container["name"]

    api = deployments["trainyard-api"]["spec"]["template"]
    (api_container,) = api["spec"]["containers"]
    assert api_container["args"][0] == "api"
    assert api_container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert [c["args"] for c in api["spec"]["initContainers"]] == [["migrate"]]

    (service,) = _kube("Service", TRAINYARD_KUBE)
    assert service["spec"]["selector"].items() <= api["metadata"]["labels"].items()
    port_names = {p["name"] for p in api_container["ports"]}
    assert all(p["targetPort"] in port_names for p in service["spec"]["ports"])

    worker = deployments["trainyard-worker"]["spec"]["template"]["spec"]["containers"][0]
    assert "trainyard worker" in " ".join(worker["args"])
    head_service = f"{raycluster['metadata']['name']}-head-svc"
    assert config["data"]["RAY_ADDRESS"].removeprefix("ray://").split(":")[0] == head_service
    assert config["data"]["RAY_AUTH_MODE"] == "disabled"


# ------------------------------------------------------------------------------------------ examples


@pytest.mark.parametrize("path", EXAMPLE_SPECS, ids=lambda p: p.name)
def test_every_example_is_a_valid_job_spec(path: Path) -> None:
    from trainyard.cli.jobfile import load_job_file

    _one(path)
    # As `trainyard submit` reads it: a relative deadline (+7d) becomes a time.
    spec = JobSpec.model_validate(load_job_file(path))
    if spec.sweep is not None:
        base = spec.hyperparameters.model_dump()
        for key, values in spec.sweep.param_space.items():
            assert key in Hyperparameters.model_fields
            for value in values:
                Hyperparameters.model_validate({**base, key: value})


def test_the_examples_cover_cpu_lora_and_sweep() -> None:
    names = {p.name for p in EXAMPLE_SPECS}
    assert {"tiny-cpu.yaml", "lora-8b-deadline.yaml", "sweep.yaml"} <= names
    sweep = JobSpec.model_validate(_one(EXAMPLES / "sweep.yaml")).sweep
    assert sweep is not None and "learning_rate" in sweep.param_space and sweep.asha


def test_lora_8b_gets_a_fitting_gpu_before_its_deadline(catalog: Catalog) -> None:
    from trainyard.cli.jobfile import load_job_file

    spec = JobSpec.model_validate(load_job_file(EXAMPLES / "lora-8b-deadline.yaml"))
    assert spec.method == "lora" and spec.policy.objective == "deadline" and spec.policy.spot == "auto"
    assert spec.policy.allowed_accelerators and spec.policy.deadline is not None
    # The model registry sizes it: the hub is never asked.
    entry = packaged_table().get(spec.base_model)
    assert entry is not None and spec.model_parameters is None
    model = entry.info
    assert model.source == "registry" and model.parameters == 8_030_261_248
    tokens = resolve_dataset_tokens(spec, None)
    # Two days before the deadline, whatever today's date.
    now = spec.policy.deadline - timedelta(days=2)
    decision = choose(spec, estimate_all(spec, catalog, model, tokens, now=now))
    chosen = decision.chosen
    assert chosen.kind in ("gpu", "multi_gpu"), decision.reason
    assert chosen.fits and chosen.meets_deadline, decision.reason


@pytest.mark.parametrize("name", ["tiny-cpu.yaml", "sweep.yaml"])
def test_tiny_examples_run_on_the_cheapest_cpu_pool(name: str, catalog: Catalog) -> None:
    spec = JobSpec.model_validate(_one(EXAMPLES / name))
    model = ModelInfo(parameters=31_488, source="spec")  # what make_data.py's tiny GPT-2 has
    tokens = resolve_dataset_tokens(spec, None)
    local = choose(spec, estimate_all(spec, catalog, model, tokens), available=frozenset({"local-cpu"}))
    assert local.instance_type == "local-cpu"
    cluster_types = frozenset(p.instance_type for p in parse_pools(POOLS.read_text(), catalog))
    on_cluster = choose(spec, estimate_all(spec, catalog, model, tokens), available=cluster_types)
    assert catalog.get(on_cluster.instance_type).kind == "cpu"


def test_make_data_rewrites_every_data_path_of_the_examples(tmp_path: Path) -> None:
    make_data = _load_make_data()
    names = [Path(p).name for p in make_data.TEMPLATE_PATHS.values()]
    uris = {name: f"s3://trainyard/prod/examples/{name}" for name in names}
    written = make_data.write_examples(uris, tmp_path)
    assert {p.name for p in written} == set(make_data.TEMPLATES)
    for path in written:
        spec = JobSpec.model_validate(_one(path))
        for field in make_data.URI_FIELDS:
            value = getattr(spec, field)
            assert value is None or value in uris.values(), f"{path.name}: {field} = {value}"

    # The committed examples refer to examples/data only through the paths make_data.py makes.
    for path in EXAMPLE_SPECS:
        spec = _one(path)
        for field in make_data.URI_FIELDS:
            value = spec.get(field)
            if isinstance(value, str) and value.startswith("examples/data"):
                assert value in make_data.TEMPLATE_PATHS, f"{path.name}: {field}"
                assert path.name in make_data.TEMPLATES, path.name
