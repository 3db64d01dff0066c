"""Observability end to end, on the real Kafka, Weaviate and Elasticsearch with real worker and
gateway processes: every event and every process's logs in Elasticsearch, found with the Kibana
saved searches' own queries; /metrics of each process cover the alert rules and the dashboard;
Elasticsearch stopped during traffic and restarted: every event arrives exactly once.

The last test stops only Elasticsearch of the shared local stack for a few seconds and always
starts it again.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client.parser import text_string_to_metric_families

from infra import stack
from infra.config import StackSettings
from infra.elk.kibana import DOC_PLACEHOLDER, QUERY_PLACEHOLDER, TENANT_PLACEHOLDER, build_objects
from infra.elk.kibana.queries import search_request
from infra.grafana import build_dashboard
from infra.prometheus import (
    SCRAPE_SYNTHETIC,
    exposed_names,
    metric_names,
    recorded_names,
    rule_expressions,
)
from ingest.sdk import DocumentPublisher
from query_gateway.client import ask
from schemas.events import DocumentEvent
from streams.agents.shipper import SHIPPED_TOPICS
from streams.config import load_settings
from streams.endpoints import elastic_http_options
from tests.support import RunningSystem, cleaned_up, eventually, isolated_env

DOCS = {
    "handbook/vacation": ("Vacation policy", "Every full-time employee receives 25 days of paid "
                          "vacation per calendar year. Unused days expire in March."),
    "handbook/parking": ("Parking", "Staff park on level minus two of the north garage. "
                         "Visitors get a ticket at the front desk."),
}
Hit = dict[str, Any]


@pytest.fixture(scope="module")
async def system(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningSystem]:
    tmp = tmp_path_factory.mktemp("observability")
    sys_ = RunningSystem(env=isolated_env(uuid.uuid4().hex[:10], tmp), logs=tmp / "logs")
    async with cleaned_up(sys_):
        sys_.start("pipeline", "shipper")
        async with DocumentPublisher(sys_.settings()) as publisher:
            for doc_id, (title, text) in DOCS.items():
                await publisher.publish(DocumentEvent(doc_id=doc_id, version=1, title=title, text=text))
        yield sys_


def _saved(system: RunningSystem) -> dict[str, Hit]:
    return {o["id"]: o for o in build_objects(system.settings().elastic_index_prefix)}


async def _run_search(system: RunningSystem, saved_id: str, substitutions: dict[str, str] | None = None,
                      index: str | None = None) -> list[Hit]:
    """The saved search's query against the real cluster (as Discover would send it)."""
    s = system.settings()
    index = index or f"{s.elastic_index_prefix}-*"
    body = search_request(_saved(system)[saved_id], substitutions, size=5000)
    async with httpx.AsyncClient(**elastic_http_options(s), timeout=20) as http:
        await http.post(f"/{index}/_refresh")
        response = await http.post(f"/{index}/_search", json=body)
    response.raise_for_status()
    return [h["_source"] for h in response.json()["hits"]["hits"]]


def _datasets(hits: list[Hit]) -> list[str]:
    return [h["event"]["dataset"] for h in hits]


async def _answered(system: RunningSystem, question: str, doc_id: str) -> list[Hit] | None:
    frames = [f async for f in ask(system.ws_url, question, top_k=3, idle_timeout_s=30)]
    sources: list[Hit] = next((f for f in frames if f["type"] == "sources"), {"sources": []})["sources"]
    return frames if frames[-1]["type"] == "done" and any(s["doc_id"] == doc_id for s in sources) else None


async def test_a_questions_journey_query_answers_summary_and_logs(system: RunningSystem) -> None:
    frames = await eventually(
        lambda: _answered(system, "How many days of paid vacation?", "handbook/vacation"),
        timeout_s=120, what="the vacation document to be searchable")
    query_id = frames[0]["query_id"]
    tokens = [f["delta"] for f in frames if f["type"] == "token"]

    async def journey() -> list[Hit] | None:
        hits = await _run_search(system, "aichat-question-journey", {QUERY_PLACEHOLDER: query_id})
        summary = [h for h in hits if h["event"]["dataset"] == "aichat.summary"]
        logs = {h["service"]["name"] for h in hits if h["event"]["dataset"] == "aichat.logs"}
        complete = (summary and summary[0]["aichat"].get("outcome") == "done"
                    and summary[0]["aichat"].get("text") and {"aichat-gateway", "aichat-pipeline"} <= logs)
        return hits if complete else None

    hits = await eventually(journey, timeout_s=60, what=f"the journey of {query_id} in Elasticsearch")
    datasets = _datasets(hits)
    assert datasets.count("aichat.queries") == 1
    assert datasets.count("aichat.answers") == len(frames) - 1  # every frame but the gateway's ack
    assert all(h["trace"]["id"] == query_id for h in hits)  # one trace id across events and logs
    summary = next(h for h in hits if h["event"]["dataset"] == "aichat.summary")["aichat"]
    assert summary["text"] == "How many days of paid vacation?"
    assert summary["answer"] == "".join(tokens)
    assert summary["tokens"] == len(tokens) and summary["answer_complete"] is True
    assert summary["sources"][0]["doc_id"] == frames[1]["sources"][0]["doc_id"]
    assert summary["timings_ms"]["total"] == frames[-1]["timings_ms"]["total"]
    logs = [h for h in hits if h["event"]["dataset"] == "aichat.logs"]
    assert all(h["host"]["hostname"] and h["process"]["pid"] for h in logs)


async def test_a_documents_journey_from_publish_to_searchable(system: RunningSystem) -> None:
    async def journey() -> list[Hit] | None:
        hits = await _run_search(system, "aichat-document-journey", {DOC_PLACEHOLDER: "handbook/parking", TENANT_PLACEHOLDER: "default"})
        wanted = {"aichat.documents", "aichat.chunks", "aichat.embeddings", "aichat.indexed", "aichat.logs"}
        return hits if wanted <= set(_datasets(hits)) else None

    hits = await eventually(journey, timeout_s=120, what="the journey of handbook/parking")
    indexed = next(h for h in hits if h["event"]["dataset"] == "aichat.indexed")
    assert indexed["aichat"]["outcome"] == "indexed" and indexed["aichat"]["freshness_ms"] > 0
    assert all("vector" not in h.get("aichat", {}) for h in hits)
    event_traces = {h["trace"]["id"] for h in hits if h["event"]["dataset"] != "aichat.logs"}
    assert len(event_traces) == 1
    assert {h["trace"]["id"] for h in hits if h["event"]["dataset"] == "aichat.logs"} <= event_traces
    # in order: published before chunked before searchable
    order = [h["event"]["dataset"] for h in hits if h["event"]["dataset"] != "aichat.logs"]
    assert order.index("aichat.documents") < order.index("aichat.indexed")


async def test_a_malformed_event_appears_under_failures_and_dead_letters(system: RunningSystem) -> None:
    settings = system.settings()
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(settings.topic("documents"), b"\x00\xff{broken", key=b"poison/obs")
    finally:
        await producer.stop()

    async def failures() -> list[Hit] | None:
        hits = await _run_search(system, "aichat-failures")
        mine = [h for h in hits if h.get("kafka", {}).get("key") == "poison/obs"
                or h.get("aichat", {}).get("dead_letter", {}).get("key") == "poison/obs"]
        return mine if {"aichat.dlq", "aichat.documents"} <= set(_datasets(mine)) else None

    mine = await eventually(failures, timeout_s=90, what="the malformed record under failures")
    letter = next(h for h in mine if h["event"]["dataset"] == "aichat.dlq")
    assert letter["aichat"]["dead_letter"]["agent"] == "chunker"
    assert letter["aichat"]["dead_letter"]["error_type"] == "InvalidEvent"
    assert letter["aichat"]["dead_letter"]["topic"] == settings.topic("documents")
    assert "not JSON" in letter["message"]
    raw = next(h for h in mine if h["event"]["dataset"] == "aichat.documents")
    assert raw["event"]["kind"] == "pipeline_error"


async def _scrape(url: str) -> str:
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.get(url)
    response.raise_for_status()
    return response.text


async def test_metrics_of_every_process_parse_and_cover_rules_and_dashboard(system: RunningSystem) -> None:
    env = system.env
    urls = {
        "pipeline": f"http://127.0.0.1:{env['AICHAT_WORKER_WEB_PORT']}/metrics",
        "shipper": f"http://127.0.0.1:{env['AICHAT_SHIPPER_WEB_PORT']}/metrics",
        "gateway": f"{system.gateway_ops_url}/metrics",  # the operator listener
    }
    group_prefix = system.settings().topic_prefix

    async def with_lag() -> dict[str, list[Any]] | None:
        families = {name: list(text_string_to_metric_families(await _scrape(url)))
                    for name, url in urls.items()}
        lagging = {role for role in ("pipeline", "shipper") for f in families[role]
                   if f.name == "aichat_consumer_lag_messages"
                   and any(s.labels.get("group") == f"{group_prefix}aichat-{role}" for s in f.samples)}
        return families if lagging == {"pipeline", "shipper"} else None

    families = await eventually(with_lag, timeout_s=60, what="consumer lag reported by both workers")
    exposed = set().union(*(exposed_names(f) for f in families.values()))
    used = metric_names(rule_expressions()) | metric_names(
        t["expr"] for p in build_dashboard()["panels"] for t in p.get("targets", []))
    missing = sorted(used - SCRAPE_SYNTHETIC - recorded_names() - exposed)
    assert not missing, f"used by rules/dashboard, exposed by no process: {missing}"
    gateway = exposed_names(families["gateway"])
    for name in ("aichat_gateway_open_connections", "aichat_gateway_time_to_done_seconds_bucket",
                 "aichat_gateway_auth_refused_total", "aichat_gateway_rate_limited_total",
                 "aichat_log_records_shipped_total"):
        assert name in gateway
    shipper = exposed_names(families["shipper"])
    assert {"aichat_shipper_bulk_seconds_bucket", "aichat_shipper_documents_total"} <= shipper


# -- Elasticsearch down during traffic, then back -------------------------------------------------


async def _end_offsets(system: RunningSystem) -> dict[tuple[str, int], int]:
    """Log end offset of every partition of every shipped topic (they start at 0: fresh topics)."""
    s = system.settings()
    admin = AIOKafkaAdminClient(bootstrap_servers=s.kafka_bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=s.kafka_bootstrap, group_id=None)
    await admin.start()
    await consumer.start()
    try:
        meta = await admin.describe_topics([s.topic(t) for t in SHIPPED_TOPICS])
        tps = [TopicPartition(t["topic"], p["partition"]) for t in meta for p in t["partitions"]]
        ends = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
        await admin.close()
    return {(tp.topic, tp.partition): offset for tp, offset in ends.items()}


async def _shipped_offsets(system: RunningSystem) -> list[tuple[str, int, int]]:
    """(topic, partition, offset) of every shipped record document, duplicates kept."""
    s = system.settings()
    body = {"size": 10_000, "_source": ["kafka"], "query": {"exists": {"field": "kafka.offset"}}}
    async with httpx.AsyncClient(**elastic_http_options(s), timeout=30) as http:
        await http.post(f"/{s.elastic_index_prefix}-*/_refresh")
        response = await http.post(f"/{s.elastic_index_prefix}-*/_search", json=body)
    response.raise_for_status()
    return [(h["_source"]["kafka"]["topic"], h["_source"]["kafka"]["partition"], h["_source"]["kafka"]["offset"])
            for h in response.json()["hits"]["hits"]]


async def _shipper_lag(system: RunningSystem) -> float:
    text = await _scrape(f"http://127.0.0.1:{system.env['AICHAT_SHIPPER_WEB_PORT']}/metrics")
    group = f"{system.settings().topic_prefix}aichat-shipper"
    return sum(s.value for f in text_string_to_metric_families(text)
               if f.name == "aichat_consumer_lag_messages" for s in f.samples if s.labels["group"] == group)


@pytest.mark.timeout(600)
async def test_elasticsearch_down_during_traffic_every_event_arrives_exactly_once(
        system: RunningSystem) -> None:
    stack_settings = load_settings(StackSettings)
    await asyncio.to_thread(stack.down, stack_settings, services=["elasticsearch"])
    try:
        async with DocumentPublisher(system.settings()) as publisher:
            for n in range(20):
                await publisher.publish(DocumentEvent(doc_id=f"outage/{n}", version=1, title=f"Outage {n}",
                                                      text=f"Document {n} was published while Elasticsearch was down."))
        frames = [f async for f in ask(system.ws_url, "Where do staff park?", top_k=3, idle_timeout_s=30)]
        assert frames[-1]["type"] == "done", frames[-1]
        outage_query = frames[0]["query_id"]
        # the shipper cannot write: its lag grows instead of anything being dropped
        await eventually(lambda: _positive(_shipper_lag(system)), timeout_s=45,
                         what="the shipper's consumer lag to grow while Elasticsearch is down")
    finally:
        await asyncio.to_thread(stack.up, stack_settings, services=["elasticsearch"])

    ends = await _end_offsets(system)  # traffic is over (logs keep coming: compare below these ends)

    async def caught_up() -> list[tuple[str, int, int]] | None:
        shipped = await _shipped_offsets(system)
        below = [r for r in shipped if r[2] < ends.get((r[0], r[1]), 0)]
        return below if len(set(below)) == sum(ends.values()) else None

    shipped = await eventually(caught_up, timeout_s=240, what="the shipper to catch up after the outage")
    assert len(shipped) == len(set(shipped)), "an event arrived twice"
    # caught up by itself: what is left is the trickle of new log records, not the backlog
    assert await eventually(lambda: _small(_shipper_lag(system)), timeout_s=60,
                            what="the shipper's lag back to (nearly) zero")

    hits = await _run_search(system, "aichat-question-journey", {QUERY_PLACEHOLDER: outage_query})
    summary = next(h for h in hits if h["event"]["dataset"] == "aichat.summary")["aichat"]
    assert summary["outcome"] == "done"
    assert summary["answer"] == "".join(f["delta"] for f in frames if f["type"] == "token")
    docs = await _run_search(system, "aichat-document-journey", {DOC_PLACEHOLDER: "outage/7", TENANT_PLACEHOLDER: "default"})
    assert {"aichat.documents", "aichat.indexed"} <= set(_datasets(docs))


async def _positive(value: Any) -> bool:
    return bool(await value > 0)


async def _small(value: Any) -> bool:
    return bool(await value < 10)
