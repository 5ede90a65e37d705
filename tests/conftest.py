"""Suite-wide: deprecations in the project's own code fail the run, and template scanners
keep their reports in pytest's cache (no aws_cdk here: handler tests run on any Python).

Test files are not ordered here: xdist's per-file scheduling hands out files with the most
tests first whatever the collection order (its `--loadscope-reorder` default), and handing
out the slowest first instead measured no faster (0.99, `farm-bench`, three pairs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import deprecations


def pytest_configure(config: pytest.Config) -> None:
    deprecations.register(config)


@pytest.fixture(scope="session")
def scan_cache(request: pytest.FixtureRequest) -> Path | None:
    """Where template scanners keep their reports between runs (tests/scanners.py):
    pytest's cache directory, unless the cache plugin is off."""
    cache = getattr(request.config, "cache", None)
    return cache.mkdir("scans") if cache is not None else None
