"""The shipped catalog, its validation, the estimator constants and the pools setting."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import yaml

from trainyard.platform.scheduling import (
    Catalog,
    CatalogError,
    PoolConfigError,
    available_types,
    load_catalog,
    load_constants,
    parse_pools,
)
from trainyard.platform.scheduling.catalog import DEFAULT_CATALOG_PATH
from trainyard.platform.scheduling.constants import DEFAULT_CONSTANTS_PATH

REQUIRED = {
    "local-cpu",
    "c7i.2xlarge",
    "c7i.8xlarge",
    "g6.xlarge",
    "g5.xlarge",
    "gpu_1x_a100_sxm4",
    "p4d.24xlarge",
    "a2-ultragpu-1g",
    "p4de.24xlarge",
    "gpu_1x_h100_sxm5",
    "p5.48xlarge",
    "p5e.48xlarge",
    "v5litepod-8",
    "v6e-1",
    "v6e-8",
}


@functools.cache
def _shipped_rows() -> tuple[dict, ...]:
    return tuple(yaml.safe_load(DEFAULT_CATALOG_PATH.read_text())["instance_types"])


def _rows() -> list[dict]:
    return [dict(r) for r in _shipped_rows()]


def _write(tmp_path: Path, rows: list[dict]) -> Path:
    path = tmp_path / "types.yaml"
    path.write_text(yaml.safe_dump({"instance_types": rows}))
    return path


def _row(name: str) -> dict:
    return next(dict(r) for r in _rows() if r["name"] == name)


# --- the shipped data ---------------------------------------------------------------------


def test_shipped_catalog_has_the_required_types(catalog: Catalog) -> None:
    assert set(catalog.names) >= REQUIRED
    kinds = {t.kind for t in catalog}
    assert kinds == {"cpu", "gpu", "multi_gpu", "tpu"}
    accelerators = {t.accelerator for t in catalog if t.accelerator}
    assert {"L4", "A10G", "A100-40GB", "A100-80GB", "H100", "H200", "TPU-v5e", "TPU-v6e"} <= accelerators


def test_every_row_is_sourced_and_sane(catalog: Catalog) -> None:
    for t in catalog:
        assert t.source and t.as_of, t.name
        assert t.on_demand_usd_per_hour > 0, t.name
        if t.spot_usd_per_hour is not None:
            assert 0 < t.spot_usd_per_hour < t.on_demand_usd_per_hour, t.name
        assert t.workers >= 1 and t.vcpus >= 1 and t.ram_gb > 0 and t.nodes >= 1
        if t.kind in ("gpu", "multi_gpu", "tpu"):
            assert t.workers == t.accelerator_count, "one Ray Train worker per device"
            assert t.accelerator_memory_gb and t.accelerator_memory_gb > 0
        if t.kind == "tpu":
            assert t.tpu_topology
        else:
            assert t.tpu_topology is None


def test_figures_from_the_reference_sheet(catalog: Catalog) -> None:
    g6 = catalog["g6.xlarge"]
    assert g6.on_demand_usd_per_hour == pytest.approx(0.8048)
    assert 0.388 <= (g6.spot_usd_per_hour or 0) <= 0.417
    assert catalog["v6e-8"].on_demand_usd_per_hour == pytest.approx(21.60)
    assert catalog["v6e-8"].tpu_topology == "2x4"
    assert catalog.accelerators["H100"].peak_bf16_tflops == 989
    assert catalog.accelerators["A100-80GB"].family == catalog.accelerators["A100-40GB"].family == "A100"
    # Figures the sheet marks unverified stay, and say so.
    assert "unverified" in (catalog.accelerators["A10G"].note or "")
    for name in ("c7i.2xlarge", "v5litepod-8", "a2-ultragpu-1g", "p5e.48xlarge"):
        assert "unverified" in (catalog[name].note or ""), name


def test_local_cpu_is_priced_by_the_operator(catalog: Catalog) -> None:
    local = catalog["local-cpu"]
    assert local.kind == "cpu" and local.accelerator is None and local.workers == 2
    assert local.source == "operator-set"
    assert 0 < local.on_demand_usd_per_hour < catalog["c7i.2xlarge"].on_demand_usd_per_hour


def test_lookup(catalog: Catalog) -> None:
    assert catalog.get("g5.xlarge") is catalog["g5.xlarge"]
    assert catalog.get("nope") is None
    assert "g5.xlarge" in catalog and "nope" not in catalog
    with pytest.raises(KeyError, match="unknown instance type 'nope'"):
        catalog["nope"]
    assert catalog["p5.48xlarge"].devices == 8 and catalog["local-cpu"].devices == 1
    assert catalog.accelerator_for(catalog["g6.xlarge"]).name == "L4"  # type: ignore[union-attr]


# --- validation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"spot_usd_per_hour": 2.0}, "spot_usd_per_hour", "exceeds on-demand"),
        ({"spot_usd_per_hour": 1.006}, "spot_usd_per_hour", "equals on-demand"),
        ({"on_demand_usd_per_hour": 0}, "on_demand_usd_per_hour", "must be positive"),
        ({"on_demand_usd_per_hour": -1.0}, "on_demand_usd_per_hour", "must be positive"),
        ({"on_demand_usd_per_hour": 700.0}, "on_demand_usd_per_hour", "placeholder"),
        ({"on_demand_usd_per_hour": "cheap"}, "on_demand_usd_per_hour", "not a number"),
        ({"accelerator": "K80"}, "accelerator", "unknown accelerator"),
        ({"accelerator_count": 2}, "accelerator_count", "multi_gpu"),
        ({"vcpus": 0}, "vcpus", ">= 1"),
        ({"workers": 3}, "workers", "one Ray Train worker per GPU"),
        ({"kind": "fpga"}, "kind", "must be one of"),
        ({"interconnect": "carrier-pigeon"}, "interconnect", "must be one of"),
        ({"source": ""}, "source", "is required"),
        ({"colour": "blue"}, "colour", "unknown field"),
    ],
)
def test_bad_row_is_rejected_naming_row_and_field(
    tmp_path: Path, change: dict, field: str, message: str
) -> None:
    bad = _row("g5.xlarge") | change
    rows = [_row("local-cpu"), bad]
    with pytest.raises(CatalogError) as info:
        load_catalog(_write(tmp_path, rows))
    text = str(info.value)
    assert "row 2 (g5.xlarge)" in text
    assert f"field '{field}'" in text
    assert message in text
    assert info.value.field == field


def test_duplicate_names_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match=r"row 2 \(g6.xlarge\).*duplicate.*row 1"):
        load_catalog(_write(tmp_path, [_row("g6.xlarge"), _row("g6.xlarge")]))


def test_tpu_topology_must_match_the_chip_count(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="tpu_topology"):
        load_catalog(_write(tmp_path, [_row("v6e-8") | {"tpu_topology": "2x2"}]))
    with pytest.raises(CatalogError, match="tpu_topology"):
        load_catalog(_write(tmp_path, [_row("v6e-8") | {"tpu_topology": None}]))


def test_cpu_rows_have_no_accelerator(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match=r"row 1 \(c7i.2xlarge\).*accelerator"):
        load_catalog(_write(tmp_path, [_row("c7i.2xlarge") | {"accelerator": "L4", "accelerator_count": 1}]))


def test_csv_catalog_loads_and_validates(tmp_path: Path) -> None:
    columns = [
        "name",
        "kind",
        "accelerator",
        "accelerator_count",
        "accelerator_memory_gb",
        "vcpus",
        "ram_gb",
        "on_demand_usd_per_hour",
        "spot_usd_per_hour",
        "nodes",
        "interconnect",
        "workers",
        "tpu_topology",
        "source",
        "as_of",
    ]
    good = "g6.xlarge,gpu,L4,1,24,4,16,0.8048,0.40,1,none,1,,snapshot,2026-11"
    cpu = "box,cpu,,0,,8,32,0.30,,1,host,2,,operator-set,2026-11"
    path = tmp_path / "types.csv"
    path.write_text(",".join(columns) + "\n" + good + "\n" + cpu + "\n")
    catalog = load_catalog(path)
    assert catalog.names == ("g6.xlarge", "box")
    assert catalog["box"].spot_usd_per_hour is None
    path.write_text(",".join(columns) + "\n" + good.replace("0.40", "0.90") + "\n")
    with pytest.raises(CatalogError, match=r"types.csv, row 1 \(g6.xlarge\), field 'spot_usd_per_hour'"):
        load_catalog(path)


def test_empty_or_unreadable_catalog(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="no instance types"):
        load_catalog(_write(tmp_path, []))
    with pytest.raises(CatalogError, match="cannot read"):
        load_catalog(tmp_path / "missing.yaml")


def test_constants_validation(tmp_path: Path) -> None:
    constants = load_constants()
    assert constants.full_flops_per_param_token == 6.0
    assert constants.utilisation("H100", "gpu") == 0.40
    assert constants.utilisation("B200", "gpu") == constants.utilisation_default_gpu
    doc = yaml.safe_load(DEFAULT_CONSTANTS_PATH.read_text())
    del doc["spot"]["restart_overhead_seconds"]
    path = tmp_path / "constants.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(CatalogError, match=r"field 'spot\.restart_overhead_seconds'"):
        load_constants(path)
    doc = yaml.safe_load(DEFAULT_CONSTANTS_PATH.read_text())
    doc["memory"]["usable_fraction"] = 1.5
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(CatalogError, match=r"memory\.usable_fraction.*fraction"):
        load_constants(path)


def test_an_operators_constants_file_replaces_the_packaged_assumptions(tmp_path: Path) -> None:
    from trainyard.platform.deployment import load_deployment
    from trainyard.settings import get_settings

    doc = yaml.safe_load(DEFAULT_CONSTANTS_PATH.read_text())
    doc["spot"]["preemptions_per_hour"]["cpu"] = 12.0
    path = tmp_path / "observed.yaml"
    path.write_text(yaml.safe_dump(doc))
    observed = load_deployment(get_settings(estimator_constants_path=str(path))).catalog.constants
    assert observed.spot_preemptions_per_hour["cpu"] == 12.0
    assert load_deployment(get_settings()).catalog.constants.spot_preemptions_per_hour["cpu"] == 0.02


# --- pools --------------------------------------------------------------------------------


def test_default_pool_is_local_cpu(catalog: Catalog) -> None:
    for value in (None, "", "  "):
        pools = parse_pools(value, catalog)
        assert [(p.instance_type, p.max_concurrent, p.ray_resource) for p in pools] == [
            ("local-cpu", 1, None)
        ]


def test_pools_from_json(catalog: Catalog) -> None:
    value = json.dumps(
        [
            {"instance_type": "g5.xlarge", "max_concurrent": 4, "ray_resource": {"pool-a10g": 1}},
            {"instance_type": "p5.48xlarge", "ray_resource": "pool-h100"},
            {"instance_type": "v6e-8", "node_labels": {"cloud.google.com/gke-tpu-topology": "2x4"}},
        ]
    )
    pools = parse_pools(value, catalog)
    assert pools[0].max_concurrent == 4 and dict(pools[0].ray_resource or {}) == {"pool-a10g": 1.0}
    assert dict(pools[1].ray_resource or {}) == {"pool-h100": 1.0} and pools[1].max_concurrent == 1
    assert pools[2].node_labels == {"cloud.google.com/gke-tpu-topology": "2x4"}
    assert available_types(pools) == {"g5.xlarge", "p5.48xlarge", "v6e-8"}
    assert pools[0].to_dict()["ray_resource"] == {"pool-a10g": 1.0}
    assert parse_pools([{"instance_type": "g6.xlarge"}], catalog)[0].instance_type == "g6.xlarge"


def test_a_pool_with_spot_and_on_demand_nodes_places_each_capacity_on_its_own(catalog: Catalog) -> None:
    from trainyard.workers.scaling import scaling_for

    [pool] = parse_pools(
        [
            {
                "instance_type": "c7i.2xlarge",
                "ray_resource": {"pool-cpu": 1},
                "capacity_resources": {"spot": "spot-node", "on_demand": {"on-demand-node": 1}},
            }
        ],
        catalog,
    )
    itype = catalog["c7i.2xlarge"]
    spot = scaling_for(itype, pool, spot=True).resources_per_worker
    on_demand = scaling_for(itype, pool, spot=False).resources_per_worker
    assert spot == {"CPU": 1.0, "pool-cpu": 1.0, "spot-node": 1.0}
    assert on_demand == {"CPU": 1.0, "pool-cpu": 1.0, "on-demand-node": 1.0}
    assert pool.to_dict()["capacity_resources"] == {
        "spot": {"spot-node": 1.0},
        "on_demand": {"on-demand-node": 1.0},
    }
    # Without capacity markers both capacities run wherever the pool's nodes are.
    [plain] = parse_pools([{"instance_type": "c7i.2xlarge", "ray_resource": "pool-cpu"}], catalog)
    assert plain.resources_for(spot=True) == plain.resources_for(spot=False) == {"pool-cpu": 1.0}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("[{", "not valid JSON"),
        ("[]", "non-empty"),
        ('[{"instance_type": "nope"}]', "not in the catalog"),
        ('[{"instance_type": "g5.xlarge", "max_concurrent": 0}]', "max_concurrent"),
        ('[{"instance_type": "g5.xlarge"}, {"instance_type": "g5.xlarge"}]', "a second pool"),
        ('[{"instance_type": "g5.xlarge", "ray_resource": {"x": -1}}]', "positive amount"),
        ('[{"instance_type": "g5.xlarge", "size": 3}]', "unknown field"),
        ('["g5.xlarge"]', "must be an object"),
        ('[{"instance_type": "g5.xlarge", "capacity_resources": {"preemptible": "x"}}]', "unknown capacity"),
        ('[{"instance_type": "g5.xlarge", "capacity_resources": {"spot": {"x": 0}}}]', "positive amount"),
        ('[{"instance_type": "g5.xlarge", "capacity_resources": []}]', "capacity"),
    ],
)
def test_bad_pools_are_rejected(catalog: Catalog, value: str, message: str) -> None:
    with pytest.raises(PoolConfigError, match=message):
        parse_pools(value, catalog)
