"""Fixtures of the fault scenarios.

Every test here runs against real services: Weaviate and Elasticsearch of the main stack
(``services`` in tests/conftest.py: skipped on a developer's machine without them, a
failure under ``CI=true``). The broker scenarios get their own 3-broker cluster
(``kafka_cluster``, one per module), started by the stack's code in a temporary stack dir
on free ports, and torn down at the end of the module.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from streams.config import WorkerSettings
from tests.faults.cluster import Cluster


@pytest.fixture(autouse=True)
def _real_services(services: WorkerSettings) -> None:
    """Every fault test runs against the real stack (see tests/conftest.py)."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/tests/faults/" in str(item.path):
            item.add_marker(pytest.mark.faults)


@pytest.fixture(scope="module")
async def kafka_cluster(
    tmp_path_factory: pytest.TempPathFactory, services: WorkerSettings
) -> AsyncIterator[Cluster]:
    """Three KRaft nodes (RF 3, min.insync.replicas 2) of this module alone."""
    cluster = Cluster.on_free_ports(tmp_path_factory.mktemp("kafka-cluster"))
    try:
        await asyncio.to_thread(cluster.up)
        yield cluster
    except BaseException:
        print(cluster.log_tails())
        raise
    finally:
        await asyncio.to_thread(cluster.down)
