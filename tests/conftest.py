"""Suite-wide ordering only (no aws_cdk here: handler tests run on any Python).

The modules that synthesize every environment or the pipeline take most of the suite's
time; collected first, xdist's per-file scheduling starts them at once on separate workers
instead of leaving one of them for last."""

from __future__ import annotations

import pytest

SLOWEST_FIRST = ("test_environments.py", "test_pipeline.py", "test_packaging.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return SLOWEST_FIRST.index(name) if name in SLOWEST_FIRST else len(SLOWEST_FIRST)

    items.sort(key=rank)
