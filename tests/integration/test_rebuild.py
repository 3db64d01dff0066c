"""``aichat rebuild`` against the real Kafka and Weaviate: offsets reset, collections dropped,
and refused while a member of the group is running."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from infra.errors import StackError
from infra.kafka.topics import delete_prefixed_topics, ensure_topics
from infra.rebuild import group_id, rebuild, topic_partitions
from infra.weaviate.provision import ensure_collections
from streams.config import WorkerSettings
from streams.endpoints import weaviate_http_options


@pytest.fixture
async def isolated(services: WorkerSettings, unique: str) -> AsyncIterator[WorkerSettings]:
    settings = services.model_copy(update={"topic_prefix": f"rb{unique}.",
                                           "weaviate_collection": f"Rb{unique}"})
    await ensure_topics(settings)
    yield settings
    await delete_prefixed_topics(settings)
    async with httpx.AsyncClient(**weaviate_http_options(settings)) as http:
        for name in (settings.weaviate_collection, f"{settings.weaviate_collection}Docs"):
            await http.delete(f"/v1/schema/{name}")


async def _produce(settings: WorkerSettings, base: str, n: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for i in range(n):
            await producer.send_and_wait(settings.topic(base), b"{}", key=f"default/d{i}".encode())
    finally:
        await producer.stop()


async def _committed(settings: WorkerSettings, group: str, base: str) -> dict[int, int | None]:
    partitions = (await topic_partitions(settings, {base: settings.topic(base)}))[base]
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=group,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        return {tp.partition: await consumer.committed(tp) for tp in partitions}
    finally:
        await consumer.stop()


async def test_rebuild_replays_documents_and_skips_derived_topics(isolated: WorkerSettings) -> None:
    await ensure_collections(isolated)  # creates both collections
    await _produce(isolated, "documents", 6)
    await _produce(isolated, "embeddings", 4)
    assert await rebuild(isolated, "pipeline") == 6
    group = group_id(isolated, "pipeline")
    assert set((await _committed(isolated, group, "documents")).values()) == {0}
    assert sum(v or 0 for v in (await _committed(isolated, group, "embeddings")).values()) == 4
    async with httpx.AsyncClient(**weaviate_http_options(isolated)) as http:
        for name in (isolated.weaviate_collection, f"{isolated.weaviate_collection}Docs"):
            assert (await http.get(f"/v1/schema/{name}")).status_code == 404


async def test_rebuild_is_refused_while_a_worker_of_the_group_runs(isolated: WorkerSettings) -> None:
    await ensure_collections(isolated)
    member = AIOKafkaConsumer(isolated.topic("documents"), bootstrap_servers=isolated.kafka_bootstrap,
                              group_id=group_id(isolated, "pipeline"), enable_auto_commit=False)
    await member.start()
    try:
        await member.getmany(timeout_ms=3000)  # joined: the group now has a member
        with pytest.raises(StackError, match="stop its workers first") as refused:
            await rebuild(isolated, "pipeline")
        assert "IllegalState" not in str(refused.value)  # Kafka's own refusal, not ours
    finally:
        await member.stop()
    async with httpx.AsyncClient(**weaviate_http_options(isolated)) as http:
        # nothing was dropped: the refusal came first
        assert (await http.get(f"/v1/schema/{isolated.weaviate_collection}")).status_code == 200
