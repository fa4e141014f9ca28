"""The deployment: the instance catalog and the pools this installation runs, built once from
settings and handed to the API, the worker daemon and each attempt process.

Every process that plans, claims or launches work reads the same object, so a pool's capacity
is enforced the same way by `trainyard worker`, the embedded stack and the API.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from trainyard.platform.scheduling.catalog import Catalog, CatalogError, InstanceType, load_catalog
from trainyard.platform.scheduling.pools import Pool, PoolConfigError, parse_pools
from trainyard.settings import Settings


class DeploymentConfigError(ValueError):
    """The catalog or the pools in the settings cannot be used."""


@dataclass(frozen=True)
class Deployment:
    catalog: Catalog
    pools: tuple[Pool, ...]
    _by_name: Mapping[str, Pool] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {p.instance_type: p for p in self.pools})

    @property
    def available(self) -> frozenset[str]:
        """Instance types some pool here can run."""
        return frozenset(self._by_name)

    @property
    def capacity(self) -> dict[str, int]:
        """Pool name -> how many jobs it runs at once."""
        return {p.instance_type: p.max_concurrent for p in self.pools}

    def pool(self, name: str | None) -> Pool | None:
        return self._by_name.get(name) if name else None

    def instance_type(self, name: str) -> InstanceType:
        itype = self.catalog.get(name)
        if itype is None:
            raise KeyError(f"instance type {name!r} is not in the catalog")
        return itype


def load_deployment(settings: Settings) -> Deployment:
    """The deployment the settings describe; a bad catalog or pool list is refused here, at start."""
    try:
        catalog = load_catalog(settings.catalog_path)
        pools = parse_pools(settings.pools, catalog)
    except (CatalogError, PoolConfigError) as exc:
        raise DeploymentConfigError(f"scheduling configuration is invalid: {exc}") from exc
    return Deployment(catalog=catalog, pools=tuple(pools))
