from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from infra.kafka.topics import delete_prefixed_topics, ensure_topics
from streams.config import KafkaSettings, WorkerSettings


@pytest.fixture(autouse=True)
def _real_services(services: WorkerSettings) -> None:
    """Every integration test runs against the real stack (see tests/conftest.py)."""


@pytest.fixture
async def kafka(services: WorkerSettings, unique: str) -> AsyncIterator[KafkaSettings]:
    """Topics of this test alone (prefix ``it{unique}.``, two partitions), deleted after it."""
    settings = KafkaSettings(kafka_bootstrap=services.kafka_bootstrap, topic_prefix=f"it{unique}.",
                             topic_partitions=2)
    await ensure_topics(settings)
    yield settings
    await delete_prefixed_topics(settings)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/tests/integration/" in str(item.path):
            item.add_marker(pytest.mark.integration)
