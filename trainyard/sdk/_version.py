"""The SDK's version, as installed; sent in the User-Agent so the server can tell clients apart."""

from __future__ import annotations

from importlib import metadata

try:
    __version__ = metadata.version("trainyard")
except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"
