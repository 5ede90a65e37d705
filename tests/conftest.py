"""Suite-wide ordering, and deprecations in the project's own code failing the run (no
aws_cdk here: handler tests run on any Python).

The modules that synthesize every environment or the pipeline take most of the suite's
time; collected first, xdist's per-file scheduling starts them at once on separate workers
instead of leaving one of them for last. The next costliest follow (measured with
`--durations=0`, summed per file), so the workers end close together."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import deprecations

SLOWEST_FIRST = (
    "test_environments.py",
    "test_pipeline.py",
    "test_bundling.py",
    "test_api.py",
    "test_packaging.py",
    "test_local_template.py",
    "test_backup.py",
    "test_snapshot_cleanup.py",
    "test_readme.py",
    "test_local_server.py",
    "test_env_scheduler.py",
    "test_lock_files.py",
    "test_user_service.py",
)


def pytest_configure(config: pytest.Config) -> None:
    deprecations.register(config)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return SLOWEST_FIRST.index(name) if name in SLOWEST_FIRST else len(SLOWEST_FIRST)

    items.sort(key=rank)


@pytest.fixture(scope="session")
def scan_cache(request: pytest.FixtureRequest) -> Path | None:
    """Where template scanners keep their reports between runs (tests/scanners.py):
    pytest's cache directory, unless the cache plugin is off."""
    cache = getattr(request.config, "cache", None)
    return cache.mkdir("scans") if cache is not None else None
