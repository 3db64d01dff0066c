"""The walking skeleton end to end, on the real Kafka, Weaviate and Elasticsearch:

publish three documents → chunker → embedder → indexer → Weaviate; ask over the
gateway's websocket → answerer → streamed, cited answer; the shipper puts the
query's and the documents' events into Elasticsearch.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ingest.sdk import DocumentPublisher
from query_gateway.client import ask
from schemas.events import DocumentEvent
from tests.support import RunningSystem, drop_isolated_state, eventually, isolated_env

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


@pytest.fixture
async def system(unique: str, tmp_path: Path) -> AsyncIterator[RunningSystem]:
    sys_ = RunningSystem(env=isolated_env(unique, tmp_path), logs=tmp_path / "logs")
    try:
        sys_.start("pipeline", "shipper")
        yield sys_
    except BaseException:
        print(sys_.log_tails())
        raise
    finally:
        sys_.stop()
        await drop_isolated_state(sys_.settings())


async def _frames(url: str, question: str) -> list[dict[str, Any]]:
    return [frame async for frame in ask(url, question, top_k=3, idle_timeout_s=20)]


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
        return frames if len(sources) == 3 else None

    frames = await eventually(answered_with_sources, timeout_s=90, what="all three documents searchable")
    kinds = [f["type"] for f in frames]
    assert kinds[0] == "ack"
    assert kinds[1] == "sources"
    assert kinds[-1] == "done", frames[-1]
    assert kinds.count("token") >= 3
    assert set(kinds[2:-1]) == {"token"}

    sources = frames[1]["sources"]
    assert sources[0]["doc_id"] == "handbook/vacation"
    answer = "".join(f["delta"] for f in frames if f["type"] == "token")
    assert "25 days of paid vacation" in answer
    assert "[1]" in answer
    assert {"embed", "search", "total"} <= set(frames[-1]["timings_ms"])

    query_id = frames[0]["query_id"]
    es = settings.elastic_url
    index = f"{settings.elastic_index_prefix}-*"

    async def hits(field: str, value: str, dataset: str) -> list[dict[str, Any]] | None:
        async with httpx.AsyncClient(timeout=10) as http:
            await http.post(f"{es}/{index}/_refresh")
            body = {"query": {"bool": {"filter": [
                {"term": {field: value}}, {"term": {"event.dataset": dataset}}]}}, "size": 100}
            response = await http.post(f"{es}/{index}/_search", json=body)
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
