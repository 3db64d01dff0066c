"""The shipper's documents in the real Elasticsearch, found by the Kibana saved searches' own
queries; summaries exact under replays; the dashboard's aggregations run; templates applied."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from infra.elk.kibana import DOC_PLACEHOLDER, QUERY_PLACEHOLDER, TENANT_PLACEHOLDER, build_objects
from infra.elk.kibana.queries import search_request, vis_request
from infra.elk.templates import ensure_index_templates, render_index_templates
from schemas.codec import encode, pack_vector
from schemas.events import (
    AnswerError,
    AnswerEvent,
    ChunkEvent,
    DeadLetter,
    DocumentEvent,
    DocumentIndexed,
    EmbeddedChunk,
    Event,
    QueryCancelled,
    QueryEvent,
    ReplyRoute,
    Source,
)
from schemas.feedback import FeedbackGiven
from streams.agents.shipper import ship
from streams.config import WorkerSettings
from streams.ecs_logging import EcsJsonFormatter
from streams.elastic_sink import ConcurrentUpdate, ElasticSink
from streams.errors import EffectFailed
from streams.es_documents import EsDocument, to_document
from streams.summaries import SummaryBuilder

NOW = datetime.now(UTC)


@pytest.fixture
async def sink(services: WorkerSettings, unique: str) -> AsyncIterator[ElasticSink]:
    settings = services.model_copy(update={"elastic_index_prefix": f"obs-{unique}"})
    await ensure_index_templates(settings)
    s = ElasticSink(settings)
    await s.start()
    yield s
    prefix = settings.elastic_index_prefix
    await s.client.options(ignore_status=404).indices.delete(index=f"{prefix}-*")
    for name in render_index_templates(settings):
        await s.client.options(ignore_status=404).indices.delete_index_template(name=name)
    await s.stop()


class Topics:
    """Records as the shipper sees them: offsets per topic, the record timestamp now."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.offsets: dict[str, int] = {}

    def record(self, dataset: str, value: bytes | Event, key: str = "k") -> EsDocument:
        offset = self.offsets.get(dataset, 0)
        self.offsets[dataset] = offset + 1
        raw = encode(value) if isinstance(value, Event) else value
        return to_document(prefix=self.prefix, dataset=dataset, topic=f"x.{dataset}", partition=0,
                           offset=offset, key=key, timestamp_s=NOW.timestamp(), value=raw)


def _log_line(message: str, level: int = logging.INFO, service: str = "aichat-gateway",
              **extra: str) -> bytes:
    record = logging.LogRecord("query_gateway.connection", level, __file__, 1, message, (), None)
    record.__dict__.update(extra)
    return EcsJsonFormatter(service_name=service).format(record).encode()


def _question(query_id: str, total_ms: float, *, fail: bool = False) -> tuple[Event, list[Event]]:
    query = QueryEvent(query_id=query_id, trace_id=query_id, text=f"question {query_id}?",
                       reply_to=ReplyRoute(topic="x.answers", partition=0),
                       deadline=NOW + timedelta(seconds=10))
    answers: list[Event] = [
        AnswerEvent(trace_id=query_id, query_id=query_id, seq=0, kind="sources",
                    sources=[Source(doc_id="handbook/vacation", chunk_id="c-1", score=0.8,
                                    title="Vacation policy")]),
        AnswerEvent(trace_id=query_id, query_id=query_id, seq=1, kind="token", delta="25 days "),
        AnswerEvent(trace_id=query_id, query_id=query_id, seq=2, kind="token", delta="[1]."),
    ]
    if fail:
        answers.append(AnswerEvent(trace_id=query_id, query_id=query_id, seq=3, kind="error",
                                   error=AnswerError(code="deadline_exceeded", message="late")))
    else:
        answers.append(AnswerEvent(trace_id=query_id, query_id=query_id, seq=3, kind="done",
                                   timings_ms={"embed": 10.0, "search": 3.0, "first_token": 20.0,
                                               "total": total_ms}))
    return query, answers


def _document_events(doc_id: str, tenant: str = "default") -> list[tuple[str, Event]]:
    doc = DocumentEvent(doc_id=doc_id, tenant=tenant, version=2, title="Vacation policy",
                        text="25 days.", metadata={"team": "hr", "pages": 3})
    chunk = ChunkEvent(chunk_id="c-1", doc_id=doc_id, tenant=tenant, version=2, seq=0, n_chunks=1,
                       text="25 days.", char_end=8, trace_id=doc.trace_id)
    return [
        ("documents", doc),
        ("chunks", chunk),
        ("embeddings", EmbeddedChunk(**chunk.model_dump(), vector=pack_vector(np.array([0.5, 0.5])), dim=2,
                                     model="m")),
        ("indexed", DocumentIndexed(doc_id=doc_id, tenant=tenant, version=2, outcome="indexed", n_chunks=1,
                                    freshness_ms=420.0, trace_id=doc.trace_id)),
    ]


async def _search(sink: ElasticSink, index: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    await sink.client.indices.refresh(index=f"{sink.settings.elastic_index_prefix}-*")
    response = await sink.client.search(index=index, **body)
    return [h["_source"] for h in response["hits"]["hits"]]


def _saved(prefix: str) -> dict[str, dict[str, Any]]:
    return {o["id"]: o for o in build_objects(prefix)}


async def test_a_questions_journey_holds_query_answers_summary_and_logs(sink: ElasticSink) -> None:
    prefix = sink.settings.elastic_index_prefix
    topics, summaries = Topics(prefix), SummaryBuilder(prefix)
    query, answers = _question("q-journey", 80.0)
    other_query, other_answers = _question("q-other", 60.0)
    batch = [topics.record("queries", query, "q-journey"), topics.record("queries", other_query)]
    batch += [topics.record("answers", a, "q-journey") for a in [*answers[:2], *other_answers]]
    batch += [topics.record("logs", _log_line("query q-journey published", trace_id="q-journey",
                                              query_id="q-journey"), "aichat-gateway")]
    await ship(sink, summaries, batch)
    await ship(sink, summaries, [  # the rest of the answer in the next batch
        *(topics.record("answers", a, "q-journey") for a in answers[2:]),
        topics.record("logs", _log_line("answered q-journey", service="aichat-pipeline",
                                        trace_id="q-journey", query_id="q-journey")),
    ])

    search = _saved(prefix)["aichat-question-journey"]
    hits = await _search(sink, f"{prefix}-*", search_request(search, {QUERY_PLACEHOLDER: "q-journey"}))
    datasets = sorted(h["event"]["dataset"] for h in hits)
    assert datasets == sorted(["aichat.queries", *["aichat.answers"] * 4, "aichat.summary",
                               "aichat.logs", "aichat.logs"])
    assert {h["service"]["name"] for h in hits if h["event"]["dataset"] == "aichat.logs"} == {
        "aichat-gateway", "aichat-pipeline"}
    summary = next(h for h in hits if h["event"]["dataset"] == "aichat.summary")
    assert summary["aichat"]["text"] == "question q-journey?"
    assert summary["aichat"]["answer"] == "25 days [1]."
    assert summary["aichat"]["sources"][0]["doc_id"] == "handbook/vacation"
    assert summary["aichat"]["timings_ms"]["total"] == 80.0
    assert summary["aichat"]["outcome"] == "done" and summary["event"]["outcome"] == "success"


async def test_replays_neither_duplicate_events_nor_change_summaries(sink: ElasticSink) -> None:
    prefix = sink.settings.elastic_index_prefix
    topics = Topics(prefix)
    query, answers = _question("q-replay", 50.0)
    batch = [topics.record("queries", query), *(topics.record("answers", a) for a in answers)]
    await ship(sink, SummaryBuilder(prefix), batch)
    before = await sink.client.get(index=f"{prefix}-summaries", id="q-replay")
    await ship(sink, SummaryBuilder(prefix), batch)  # a restarted shipper replays the batch
    await ship(sink, SummaryBuilder(prefix), batch[2:])  # and a part of it
    after = await sink.client.get(index=f"{prefix}-summaries", id="q-replay")
    assert after["_seq_no"] == before["_seq_no"] and after["_source"] == before["_source"]
    await sink.client.indices.refresh(index=f"{prefix}-*")
    count = await sink.client.count(index=f"{prefix}-*", query={"term": {"aichat.query_id": "q-replay"}})
    assert count["count"] == len(batch) + 1  # every record once, plus the summary


async def test_a_documents_journey_from_publish_to_searchable(sink: ElasticSink) -> None:
    prefix = sink.settings.elastic_index_prefix
    topics = Topics(prefix)
    docs = [topics.record(dataset, event, "acme/handbook/vacation")
            for dataset, event in _document_events("handbook/vacation", "acme")]
    docs += [topics.record(d, e, "acme/handbook/other")
             for d, e in _document_events("handbook/other", "acme")]
    # another tenant's document with the same doc_id is another document
    docs += [topics.record(d, e, "globex/handbook/vacation")
             for d, e in _document_events("handbook/vacation", "globex")]
    docs.append(topics.record("dlq", DeadLetter(topic="x.documents", partition=0, offset=9,
                                                key="acme/handbook/vacation", value="{bad",
                                                agent="chunker", error_type="InvalidEvent",
                                                message="not JSON"), "acme/handbook/vacation"))
    docs.append(topics.record("logs", _log_line("indexed handbook/vacation v2", service="aichat-pipeline",
                                                doc_id="handbook/vacation", tenant="acme")))
    docs.append(topics.record("logs", _log_line("indexed handbook/vacation v2", service="aichat-pipeline",
                                                doc_id="handbook/vacation", tenant="globex")))
    await ship(sink, SummaryBuilder(prefix), docs)
    search = _saved(prefix)["aichat-document-journey"]
    hits = await _search(sink, f"{prefix}-*", search_request(
        search, {DOC_PLACEHOLDER: "handbook/vacation", TENANT_PLACEHOLDER: "acme"}))
    assert sorted(h["event"]["dataset"] for h in hits) == sorted(
        ["aichat.documents", "aichat.chunks", "aichat.embeddings", "aichat.indexed", "aichat.dlq",
         "aichat.logs"])
    embedded = next(h for h in hits if h["event"]["dataset"] == "aichat.embeddings")
    assert "vector" not in embedded["aichat"] and embedded["aichat"]["model"] == "m"
    indexed = next(h for h in hits if h["event"]["dataset"] == "aichat.indexed")
    assert indexed["aichat"]["freshness_ms"] == 420.0
    traces = {h["trace"]["id"] for h in hits if h["event"]["dataset"] != "aichat.logs"
              and h["event"]["dataset"] != "aichat.dlq"}
    assert len(traces) == 1  # one trace follows the document through every hop


async def test_failures_and_dead_letters_and_nothing_else(sink: ElasticSink) -> None:
    prefix = sink.settings.elastic_index_prefix
    topics = Topics(prefix)
    query, answers = _question("q-failed", 40.0, fail=True)
    fine_query, fine_answers = _question("q-fine", 40.0)
    batch = [
        topics.record("documents", b"\x00\xff not json", "poison"),
        topics.record("dlq", DeadLetter(topic="x.documents", partition=0, offset=0, key="poison",
                                        value="\ufffd not json", agent="chunker",
                                        error_type="InvalidEvent", message="not JSON")),
        topics.record("logs", _log_line("query failed", level=logging.ERROR, trace_id="q-failed")),
        topics.record("logs", _log_line("all good")),
        topics.record("queries", query), *(topics.record("answers", a) for a in answers),
        topics.record("queries", fine_query), *(topics.record("answers", a) for a in fine_answers),
    ]
    await ship(sink, SummaryBuilder(prefix), batch)
    hits = await _search(sink, f"{prefix}-*", search_request(_saved(prefix)["aichat-failures"]))
    found = sorted((h["event"]["dataset"], h.get("event", {}).get("kind")) for h in hits)
    assert found == sorted([
        ("aichat.documents", "pipeline_error"),  # the undecodable record itself
        ("aichat.dlq", "pipeline_error"),  # its dead letter, with the reason
        ("aichat.logs", "event"),  # the error log line
        ("aichat.answers", "event"),  # the error answer event
        ("aichat.summary", "event"),  # the failed question's summary
    ])
    letter = next(h for h in hits if h["event"]["dataset"] == "aichat.dlq")
    assert letter["aichat"]["dead_letter"]["error_type"] == "InvalidEvent"
    assert letter["message"] == "chunker: InvalidEvent: not JSON"


async def test_slow_answers_lists_only_answers_over_200_ms(sink: ElasticSink) -> None:
    prefix = sink.settings.elastic_index_prefix
    topics = Topics(prefix)
    batch = []
    for query_id, total in (("q-slow", 850.0), ("q-fast", 45.0), ("q-slower", 1200.0)):
        query, answers = _question(query_id, total)
        batch += [topics.record("queries", query), *(topics.record("answers", a) for a in answers)]
    await ship(sink, SummaryBuilder(prefix), batch)
    search = _saved(prefix)["aichat-slow-answers"]
    hits = await _search(sink, f"{prefix}-summaries", search_request(search))
    assert [h["aichat"]["query_id"] for h in hits] == ["q-slower", "q-slow"]  # slowest first


async def test_every_dashboard_visualization_aggregates(sink: ElasticSink) -> None:
    prefix = sink.settings.elastic_index_prefix
    topics = Topics(prefix)
    batch = [topics.record(d, e, "handbook/a") for d, e in _document_events("handbook/a")]
    for query_id, total, fail in (("q-1", 100.0, False), ("q-2", 300.0, False), ("q-3", 0.0, True)):
        query, answers = _question(query_id, total, fail=fail)
        if query_id == "q-1":  # in an experiment, and rated: the feedback and experiment panels
            query = query.model_copy(update={"experiment": "retrieval", "variant": "bm25"})
        batch += [topics.record("queries", query), *(topics.record("answers", a) for a in answers)]
    batch.append(topics.record("feedback", FeedbackGiven(query_id="q-1", trace_id="q-1", rating=-1,
                                                         variant="bm25", experiment="retrieval")))
    batch.append(topics.record("dlq", DeadLetter(topic="x.chunks", partition=0, offset=1, value="",
                                                 agent="embedder", error_type="InvalidEvent",
                                                 message="empty")))
    await ship(sink, SummaryBuilder(prefix), batch)
    await sink.client.indices.refresh(index=f"{prefix}-*")
    views = {o["id"]: o["attributes"]["title"] for o in build_objects(prefix) if o["type"] == "index-pattern"}
    for obj in build_objects(prefix):
        if obj["type"] != "visualization":
            continue
        view = views[obj["references"][0]["id"]]
        response = await sink.client.search(index=view, **vis_request(obj))
        assert response["hits"]["total"]["value"] > 0, obj["id"]
        assert response["aggregations"], obj["id"]
    outcome = next(o for o in build_objects(prefix) if o["id"] == "aichat-vis-answers-by-outcome")
    response = await sink.client.search(index=f"{prefix}-summaries", **vis_request(outcome))
    buckets = {b["key"]: b["doc_count"] for b in response["aggregations"]["2"]["buckets"]}
    assert buckets == {"done": 2, "deadline_exceeded": 1}


async def test_cancellations_against_the_real_cluster(sink: ElasticSink) -> None:
    prefix = sink.settings.elastic_index_prefix
    topics = Topics(prefix)
    query, answers = _question("q-cancel", 70.0)
    cancel = QueryCancelled(query_id="q-cancel", trace_id="q-cancel", reason="disconnected")
    await ship(sink, SummaryBuilder(prefix), [topics.record("queries", cancel),
                                              topics.record("queries", query)])
    summary = (await sink.client.get(index=f"{prefix}-summaries", id="q-cancel"))["_source"]
    assert summary["aichat"]["outcome"] == "cancelled" and summary["aichat"]["text"]
    # a write conditional on an old read loses (409) and is reported as retriable
    stale = EsDocument(f"{prefix}-summaries", "q-cancel", {"aichat": {"outcome": "x"}}, op="update",
                       if_seq_no=0, if_primary_term=1)
    with pytest.raises(ConcurrentUpdate):
        await sink.write([stale])
    await ship(sink, SummaryBuilder(prefix), [topics.record("answers", a) for a in answers])
    summary = (await sink.client.get(index=f"{prefix}-summaries", id="q-cancel"))["_source"]
    assert summary["aichat"]["outcome"] == "done"  # the answer had ended: done wins
    assert summary["aichat"]["cancel_reason"] == "disconnected"


async def test_templates_map_logs_and_summaries_and_refuse_a_malformed_field(sink: ElasticSink) -> None:
    prefix = sink.settings.elastic_index_prefix
    topics = Topics(prefix)
    query, answers = _question("q-map", 70.0)
    await ship(sink, SummaryBuilder(prefix), [topics.record("logs", _log_line("hello")),
                                              topics.record("queries", query)])
    logs = await sink.client.indices.get_mapping(index=f"{prefix}-logs-*")
    mapping = next(iter(logs.body.values()))["mappings"]["properties"]
    assert mapping["log"]["properties"]["level"] == {"type": "keyword"}
    settings = await sink.client.indices.get_settings(index=f"{prefix}-summaries")
    assert next(iter(settings.body.values()))["settings"]["index"]["mapping"]["total_fields"]["limit"] == "500"
    bad = topics.record("documents", DocumentEvent(doc_id="d", version=1, text="x"))
    bad.source["aichat"]["version"] = "not a number"
    with pytest.raises(EffectFailed, match="mapper_parsing_exception|document_parsing_exception"):
        await ship(sink, SummaryBuilder(prefix), [bad])
