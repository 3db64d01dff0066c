from __future__ import annotations

import pytest

from streams.config import WorkerSettings


@pytest.fixture(autouse=True)
def _real_services(services: WorkerSettings) -> None:
    """Every e2e test runs against the real stack (see tests/conftest.py)."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/tests/e2e/" in str(item.path):
            item.add_marker(pytest.mark.e2e)
