"""Multi-region failover controller for PostgreSQL logical-replication services."""

from __future__ import annotations

import importlib.metadata


def installed_version() -> str:
    """The version of the installed distribution: pyproject.toml is its one source, read
    from the package metadata so that a release never reports a stale constant."""
    try:
        return importlib.metadata.version("failover")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"  # run from a source tree that was never installed (PYTHONPATH)
