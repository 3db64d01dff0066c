"""Against the real Kafka and Weaviate, through a real ingest worker: a document above
``AICHAT_MAX_CHUNKS_PER_DOCUMENT`` is dead-lettered whole with a reason naming the count, the
limit and the setting; nothing of it is indexed, the version already indexed stays, and the
documents around it are indexed as usual."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
from aiokafka import AIOKafkaConsumer

from ingest.sdk import DocumentPublisher
from schemas.codec import decode
from schemas.events import DeadLetter, DocumentEvent
from streams.vectorstore import WeaviateStore
from tests.support import RunningSystem, cleaned_up, eventually, isolated_env

LIMIT = 3
LONG = " ".join(f"Sentence {i} explains why oversized documents must not block a partition." for i in range(120))


async def dead_letters(system: RunningSystem) -> AsyncIterator[DeadLetter]:
    settings = system.settings()
    consumer = AIOKafkaConsumer(settings.topic("dlq"), bootstrap_servers=settings.kafka_bootstrap,
                                group_id=None, auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    try:
        for records in (await consumer.getmany(timeout_ms=2000)).values():
            for record in records:
                yield decode(DeadLetter, record.value)
    finally:
        await consumer.stop()


async def test_a_document_above_the_chunk_limit_is_dead_lettered_whole(tmp_path: Path) -> None:
    env = {**isolated_env(uuid.uuid4().hex[:10], tmp_path), "AICHAT_MAX_CHUNKS_PER_DOCUMENT": str(LIMIT),
           "AICHAT_CHUNK_MAX_TOKENS": "64", "AICHAT_CHUNK_OVERLAP_TOKENS": "0"}
    system = RunningSystem(env=env, logs=tmp_path / "logs")
    async with cleaned_up(system):
        system.start("ingest", gateway=False)
        settings = system.settings()
        store = WeaviateStore(settings)
        await store.start()
        try:
            async with DocumentPublisher(settings) as publisher:
                await publisher.publish(DocumentEvent(doc_id="big", version=1, title="Big", text="A short first version."))

            async def indexed(doc_id: str, version: int) -> bool:
                state = (await store.registry.get([("default", doc_id)])).get(("default", doc_id))
                return state is not None and state.version == version

            await eventually(lambda: indexed("big", 1), timeout_s=120, what="big v1 indexed")
            async with DocumentPublisher(settings) as publisher:
                # v2 is too large; the document behind it on the topic is indexed as usual
                await publisher.publish(DocumentEvent(doc_id="big", version=2, title="Big", text=LONG))
                await publisher.publish(DocumentEvent(doc_id="after", version=1, title="After", text="Small."))
            await eventually(lambda: indexed("after", 1), timeout_s=120, what="the next document indexed")

            async def refused() -> list[DeadLetter]:
                return [d async for d in dead_letters(system) if d.agent == "chunker"]

            letters = await eventually(refused, timeout_s=60, what="the chunker's dead letter")
            assert len(letters) == 1
            letter = letters[0]
            assert (letter.error_type, letter.topic, letter.key) == ("TooManyChunks", settings.topic("documents"),
                                                                      "default/big")
            assert "big v2 splits into" in letter.message
            assert f"limit of {LIMIT} (AICHAT_MAX_CHUNKS_PER_DOCUMENT)" in letter.message
            # nothing of v2: v1 stays indexed and searchable, its state is not advanced
            assert await store.count_chunks("default", "big", 2) == 0
            assert await store.count_chunks("default", "big", 1) == 1
            state = (await store.registry.get([("default", "big")]))[("default", "big")]
            assert state.version == 1
            async with httpx.AsyncClient(timeout=10) as http:
                metrics = (await http.get(system.children[0].health_url.replace("/health/ready", "/metrics"))).text
            assert 'aichat_dead_letters_total{agent="chunker",error_type="TooManyChunks"} 1.0' in metrics
        finally:
            await store.stop()
