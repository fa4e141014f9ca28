"""Packages for setuptools; everything else is in pyproject.toml.

The Alembic scripts live at the top level (`migrations/`) and ship inside the package as
`trainyard.migrations`. A package whose directory lies outside `trainyard/` has to be listed next
to the discovered ones, and pyproject.toml can either discover packages or list them, not both.
"""

from setuptools import find_namespace_packages, setup

setup(
    packages=[
        # trainyard.testing holds the suite's and the benchmarks' harness (moto server, local Ray
        # cluster); it is not part of the installed platform.
        *find_namespace_packages(include=["trainyard*"], exclude=["trainyard.testing*"]),
        "trainyard.migrations",
        "trainyard.migrations.versions",
    ],
    package_dir={"trainyard.migrations": "migrations"},
)
