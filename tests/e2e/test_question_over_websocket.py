"""The walking skeleton end to end, on the real Kafka, Weaviate and Elasticsearch:

publish three documents → chunker → embedder → indexer → Weaviate; ask over the
gateway's websocket → answerer → streamed, cited answer; the shipper puts the
query's and the documents' events into Elasticsearch.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from ingest.sdk import DocumentPublisher
from query_gateway.client import ask
from schemas.codec import decode, encode
from schemas.events import DeadLetter, DocumentEvent
from streams.endpoints import elastic_http_options
from tests.support import RunningSystem, cleaned_up, eventually, isolated_env

DOCS = {
    "handbook/vacation": (
        "Vacation policy",
        "Every full-time employee receives 25 days of paid vacation per calendar year. "
        "Up to five unused days can be carried over into the next year.",
    ),
    "handbook/on-call": (
        "On-call rotation",
        "The primary on-call engineer must acknowledge a page within 15 minutes. "
        "Unacknowledged pages escalate to the secondary engineer.",
    ),
    "handbook/expenses": (
        "Expense reports",
        "Meals during business travel are covered up to 60 euros per day. "
        "Receipts must be submitted within 60 days.",
    ),
}


@pytest.fixture(scope="module")
async def system(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningSystem]:
    """One running system (two workers, a gateway) shared by this module's tests."""
    tmp = tmp_path_factory.mktemp("system")
    sys_ = RunningSystem(env=isolated_env(uuid.uuid4().hex[:10], tmp), logs=tmp / "logs")
    async with cleaned_up(sys_):
        sys_.start("pipeline", "shipper")
        yield sys_


async def _frames(url: str, question: str) -> list[dict[str, Any]]:
    return [frame async for frame in ask(url, question, top_k=5, idle_timeout_s=20)]


async def test_documents_in_question_out_and_every_event_in_elasticsearch(system: RunningSystem) -> None:
    settings = system.settings()
    async with DocumentPublisher(settings) as publisher:
        for doc_id, (title, text) in DOCS.items():
            await publisher.publish(DocumentEvent(doc_id=doc_id, version=1, title=title, text=text))

    question = "How many days of paid vacation does an employee receive?"

    async def answered_with_sources() -> list[dict[str, Any]] | None:
        frames = await _frames(system.ws_url, question)
        sources = next(f for f in frames if f["type"] == "sources")["sources"]
        # the documents are being indexed while we ask: retry until all three are searchable
        return frames if set(DOCS) <= {s["doc_id"] for s in sources} else None

    frames = await eventually(answered_with_sources, timeout_s=90, what="all three documents searchable")
    kinds = [f["type"] for f in frames]
    assert kinds[0] == "ack"
    assert kinds[1] == "sources"
    assert kinds[-1] == "done", frames[-1]
    assert kinds.count("token") >= 2  # a few words per token event
    assert set(kinds[2:-1]) == {"token"}

    sources = frames[1]["sources"]
    assert sources[0]["doc_id"] == "handbook/vacation"
    answer = "".join(f["delta"] for f in frames if f["type"] == "token")
    assert "25 days of paid vacation" in answer
    assert "[1]" in answer
    assert {"embed", "search", "total"} <= set(frames[-1]["timings_ms"])

    query_id = frames[0]["query_id"]
    index = f"{settings.elastic_index_prefix}-*"

    async def hits(field: str, value: str, dataset: str) -> list[dict[str, Any]] | None:
        async with httpx.AsyncClient(**elastic_http_options(settings), timeout=10) as http:
            await http.post(f"/{index}/_refresh")
            body = {"query": {"bool": {"filter": [
                {"term": {field: value}}, {"term": {"event.dataset": dataset}}]}}, "size": 100}
            response = await http.post(f"/{index}/_search", json=body)
            if response.status_code != 200:
                return None
            return [h["_source"] for h in response.json()["hits"]["hits"]] or None

    queries = await eventually(lambda: hits("aichat.query_id", query_id, "aichat.queries"),
                               timeout_s=30, what="the query event in Elasticsearch")
    assert queries[0]["aichat"]["text"] == question
    assert queries[0]["trace"]["id"]

    async def complete_answer() -> list[dict[str, Any]] | None:
        found = await hits("aichat.query_id", query_id, "aichat.answers")
        return found if found and any(a["aichat"]["kind"] == "done" for a in found) else None

    answers = await eventually(complete_answer, timeout_s=30, what="the answer events in Elasticsearch")
    assert {a["aichat"]["kind"] for a in answers} == {"sources", "token", "done"}
    assert len(answers) == len(frames) - 1  # every frame but the gateway's own ack

    for doc_id in DOCS:
        docs = await eventually(lambda d=doc_id: hits("aichat.doc_id", d, "aichat.documents"),
                                timeout_s=30, what=f"document {doc_id} in Elasticsearch")
        assert docs[0]["aichat"]["version"] == 1
        chunks = await eventually(lambda d=doc_id: hits("aichat.doc_id", d, "aichat.chunks"),
                                  timeout_s=30, what=f"chunks of {doc_id} in Elasticsearch")
        assert chunks[0]["trace"]["id"] == docs[0]["trace"]["id"]  # one trace per document


async def test_invalid_events_are_dead_lettered_with_a_reason_and_do_not_block(system: RunningSystem) -> None:
    settings = system.settings()
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        topic = settings.topic("documents")
        await producer.send_and_wait(topic, b"\x00\xffjunk bytes", key=b"poison/doc")
        await producer.send_and_wait(topic, b'{"schema_version": 1, "doc_id": "poison/doc"}', key=b"poison/doc")
        # the same partition goes on: a valid document after the poison ones is indexed
        valid = DocumentEvent(doc_id="poison/doc", version=2, title="After", text="Parking is on level minus two.")
        await producer.send_and_wait(topic, encode(valid), key=b"poison/doc")
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(settings.topic("dlq"), bootstrap_servers=settings.kafka_bootstrap,
                                auto_offset_reset="earliest", enable_auto_commit=False, group_id=None)
    await consumer.start()
    letters: list[DeadLetter] = []
    try:
        async def two_letters() -> list[DeadLetter] | None:
            batch = await consumer.getmany(timeout_ms=1000)
            letters.extend(decode(DeadLetter, r.value) for records in batch.values() for r in records)
            mine = [d for d in letters if d.key == "poison/doc"]
            return mine if len(mine) >= 2 else None

        mine = await eventually(two_letters, timeout_s=60, what="two dead letters")
    finally:
        await consumer.stop()
    by_reason = sorted(mine, key=lambda d: d.offset)
    assert all(d.agent == "chunker" and d.error_type == "InvalidEvent" for d in by_reason)
    assert "not JSON" in by_reason[0].message
    assert "version" in by_reason[1].message and "Field required" in by_reason[1].message
    assert by_reason[0].topic == settings.topic("documents")

    frames = await eventually(
        lambda: _frames_with_source(system.ws_url, "Where is parking?", "poison/doc"),
        timeout_s=60, what="the valid document after the poison ones to be searchable",
    )
    assert frames[-1]["type"] == "done"


async def _frames_with_source(url: str, question: str, doc_id: str) -> list[dict[str, Any]] | None:
    frames = await _frames(url, question)
    sources = next((f for f in frames if f["type"] == "sources"), {"sources": []})["sources"]
    return frames if any(s["doc_id"] == doc_id for s in sources) else None
