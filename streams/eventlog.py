"""Kafka records → Elasticsearch documents (ECS-shaped), and the sink that writes them.

The document ``_id`` is ``topic-partition-offset`` and the daily index comes from
the record's own timestamp, so a replayed record lands on the same document:
replays never duplicate. Vectors are not shipped (analysts need the fact, not
384 floats). Every bulk item is checked; 429s are retried, other item failures
raise :class:`EffectFailed` naming the item.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from elastic_transport import ConnectionError as EsConnectionError
from elastic_transport import ConnectionTimeout
from elasticsearch import AsyncElasticsearch, TransportError

from infra.elk.templates import render_index_template, template_name
from streams.config import ElasticSettings
from streams.errors import DependencyUnavailable, EffectFailed

log = logging.getLogger(__name__)

_OWN_FIELDS_DROPPED = {"vector", "event_id", "trace_id", "produced_at"}


@dataclass(frozen=True, slots=True)
class EsDocument:
    index: str
    id: str
    source: dict[str, Any]


def index_name(prefix: str, timestamp_s: float) -> str:
    day = datetime.fromtimestamp(timestamp_s, UTC).strftime("%Y.%m.%d")
    return f"{prefix}-{day}"


def to_document(
    *,
    prefix: str,
    dataset: str,
    topic: str,
    partition: int,
    offset: int,
    key: str | None,
    timestamp_s: float,
    value: bytes | None,
) -> EsDocument:
    """One shipped record. ``dataset`` is the topic's base name (``documents``, ``answers``…)."""
    doc: dict[str, Any] = {
        "event": {"dataset": f"aichat.{dataset}", "kind": "event", "ingested": _now()},
        "kafka": {"topic": topic, "partition": partition, "offset": offset, "key": key},
    }
    try:
        data = orjson.loads(value) if value is not None else None
    except orjson.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        # not an event at all: keep a trace of it (the agent dead-letters it too)
        raw = (value or b"")[:2000].decode("utf-8", errors="replace")
        doc["@timestamp"] = datetime.fromtimestamp(timestamp_s, UTC).isoformat()
        doc["event"].update(kind="pipeline_error", outcome="failure")
        doc["message"] = f"undecodable record on {topic}: {raw}"
    else:
        doc["@timestamp"] = data.get("produced_at") or datetime.fromtimestamp(timestamp_s, UTC).isoformat()
        doc["event"]["id"] = data.get("event_id")
        doc["trace"] = {"id": data.get("trace_id")}
        own = {k: v for k, v in data.items() if k not in _OWN_FIELDS_DROPPED}
        if dataset == "dlq":
            own = {"dead_letter": own, "schema_version": own.get("schema_version")}
            doc["event"].update(kind="pipeline_error", outcome="failure")
            doc["message"] = f"{data.get('agent')}: {data.get('error_type')}: {data.get('message')}"
        else:
            doc["event"]["action"] = data.get("op") or data.get("kind") or dataset
            if dataset == "answers" and data.get("kind") == "error":
                doc["event"]["outcome"] = "failure"
            doc["message"] = _summary(dataset, data)
        doc["aichat"] = own
    return EsDocument(index_name(prefix, timestamp_s), f"{topic}-{partition}-{offset}", doc)


def _summary(dataset: str, data: dict[str, Any]) -> str:
    if dataset == "documents":
        return f"document {data.get('doc_id')} v{data.get('version')} {data.get('op', 'upsert')}"
    if dataset in ("chunks", "embeddings"):
        return f"{dataset[:-1]} {data.get('seq')}/{data.get('n_chunks')} of {data.get('doc_id')}"
    if dataset == "queries":
        return f"query {data.get('query_id')}: {str(data.get('text'))[:200]}"
    if dataset == "answers":
        return f"answer {data.get('kind')} #{data.get('seq')} of {data.get('query_id')}"
    return dataset


def _now() -> str:
    return datetime.now(UTC).isoformat()


class ElasticSink:
    """Owns one ``AsyncElasticsearch`` client; :meth:`write` is all-or-error per batch."""

    def __init__(self, settings: ElasticSettings) -> None:
        self.settings = settings
        self._client: AsyncElasticsearch | None = None

    async def start(self) -> None:
        s = self.settings
        self._client = AsyncElasticsearch(
            s.elastic_url,
            api_key=s.elastic_api_key.get_secret_value() if s.elastic_api_key else None,
            request_timeout=30,
            max_retries=2,
            retry_on_timeout=True,
        )
        await self.ensure_template()
        log.info("Elasticsearch sink to %s, indices %s-*", s.elastic_url, s.elastic_index_prefix)

    async def ensure_template(self) -> None:
        """Put the project's index template for this prefix (idempotent) before the first write."""
        body = render_index_template(self.settings)
        body["meta"] = body.pop("_meta", None)
        try:
            await self.client.indices.put_index_template(name=template_name(self.settings), **body)
        except (EsConnectionError, ConnectionTimeout) as exc:
            await self.stop()
            raise DependencyUnavailable(f"Elasticsearch unreachable: {exc}") from exc

    async def stop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    @property
    def client(self) -> AsyncElasticsearch:
        if self._client is None:
            raise RuntimeError("ElasticSink used before start()")
        return self._client

    async def write(self, docs: Sequence[EsDocument]) -> None:
        """Index every document or raise; 429 and connection trouble are retriable."""
        if not docs:
            return
        body: list[dict[str, Any]] = []
        for d in docs:
            body.append({"index": {"_index": d.index, "_id": d.id}})
            body.append(d.source)
        try:
            response = await self.client.bulk(operations=body, refresh=False)
        except (EsConnectionError, ConnectionTimeout) as exc:
            raise DependencyUnavailable(f"Elasticsearch unreachable: {exc}") from exc
        except TransportError as exc:
            raise DependencyUnavailable(f"Elasticsearch bulk failed: {exc}") from exc
        if not response.get("errors"):
            return
        throttled, failed = [], []
        for doc, item in zip(docs, response["items"], strict=True):
            result = item.get("index", {})
            if result.get("status", 200) == 429:
                throttled.append(doc)
            elif "error" in result:
                failed.append((doc, result["error"]))
        if failed:
            doc, error = failed[0]
            raise EffectFailed(
                f"{len(failed)} of {len(docs)} documents refused; first {doc.id}: "
                f"{error.get('type')}: {error.get('reason')}"
            )
        if throttled:
            raise DependencyUnavailable(f"Elasticsearch throttled {len(throttled)} documents (429)")
