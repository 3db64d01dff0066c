"""Kafka records → Elasticsearch documents (ECS-shaped), and the indices they go to.

The document ``_id`` is ``topic-partition-offset`` and the daily index comes from
the record's own timestamp, so a replayed record lands on the same document:
replays never duplicate. Records of the ``logs`` topic (ECS JSON already) go to
``<prefix>-logs-YYYY.MM.DD``, everything else to ``<prefix>-YYYY.MM.DD``, per-query
summaries to ``<prefix>-summaries`` (streams/summaries.py). Vectors are not shipped
(analysts need the fact, not 384 floats). :func:`bulk_body` turns documents into the
bulk API's actions; streams/elastic_sink.py writes them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

_OWN_FIELDS_DROPPED = {"vector", "event_id", "trace_id", "produced_at"}

@dataclass(frozen=True, slots=True)
class EsDocument:
    """One bulk action: ``index`` (the whole document), ``create`` (only if it does not
    exist) or ``update`` (merge ``source``, or insert ``upsert`` when the document does
    not exist yet; with ``if_seq_no``/``if_primary_term`` only if unchanged since read)."""

    index: str
    id: str
    source: dict[str, Any]
    op: Literal["index", "create", "update"] = "index"
    upsert: dict[str, Any] | None = None
    if_seq_no: int | None = None
    if_primary_term: int | None = None


@dataclass(frozen=True, slots=True)
class StoredDocument:
    """A document as read (realtime), with what a conditional write needs."""

    source: dict[str, Any]
    seq_no: int
    primary_term: int


def index_name(prefix: str, timestamp_s: float) -> str:
    day = datetime.fromtimestamp(timestamp_s, UTC).strftime("%Y.%m.%d")
    return f"{prefix}-{day}"


def logs_index_name(prefix: str, timestamp_s: float) -> str:
    return index_name(f"{prefix}-logs", timestamp_s)


def summary_index(prefix: str) -> str:
    """The one index of per-query summaries (updated in place by ``query_id``)."""
    return f"{prefix}-summaries"


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
    record_time = datetime.fromtimestamp(timestamp_s, UTC).isoformat()
    _id = f"{topic}-{partition}-{offset}"
    try:
        data = orjson.loads(value) if value is not None else None
    except orjson.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        # not an event at all: keep a trace of it (the consuming agent dead-letters it too)
        raw = (value or b"")[:2000].decode("utf-8", errors="replace")
        doc["@timestamp"] = record_time
        doc["event"].update(kind="pipeline_error", outcome="failure")
        doc["message"] = f"undecodable record on {topic}: {raw}"
    elif dataset == "logs":
        # an ECS log record of some process (streams/log_producer.py): shipped as it is
        event = data.pop("event", None)
        doc = {**data, **doc}
        if isinstance(event, dict):
            doc["event"] = {**event, **doc["event"]}
        doc.setdefault("@timestamp", record_time)
        level = (data.get("log") or {}).get("level")
        if level in ("error", "critical"):
            doc["event"]["outcome"] = "failure"
        return EsDocument(logs_index_name(prefix, timestamp_s), _id, doc)
    else:
        doc["@timestamp"] = data.get("produced_at") or record_time
        doc["event"]["id"] = data.get("event_id")
        doc["trace"] = {"id": data.get("trace_id")}
        own = {k: v for k, v in data.items() if k not in _OWN_FIELDS_DROPPED}
        if dataset == "dlq":
            own = {"dead_letter": own, "schema_version": own.get("schema_version")}
            doc["event"].update(kind="pipeline_error", outcome="failure")
            doc["message"] = f"{data.get('agent')}: {data.get('error_type')}: {data.get('message')}"
        else:
            doc["event"]["action"] = (
                data.get("outcome") if dataset == "indexed" else None
            ) or data.get("type") or data.get("op") or data.get("kind") or dataset
            if dataset == "answers" and data.get("kind") == "error":
                doc["event"]["outcome"] = "failure"
            doc["message"] = _summary(dataset, data)
        doc["aichat"] = own
    return EsDocument(index_name(prefix, timestamp_s), _id, doc)


def _summary(dataset: str, data: dict[str, Any]) -> str:
    if dataset == "documents":
        return f"document {data.get('doc_id')} v{data.get('version')} {data.get('op', 'upsert')}"
    if dataset in ("chunks", "embeddings"):
        return f"{dataset[:-1]} {data.get('seq')}/{data.get('n_chunks')} of {data.get('doc_id')}"
    if dataset == "indexed":
        fresh = data.get("freshness_ms")
        took = f" in {fresh:.0f} ms" if isinstance(fresh, int | float) else ""
        return f"document {data.get('doc_id')} v{data.get('version')} {data.get('outcome')}{took}"
    if dataset == "queries" and data.get("type") == "query_cancelled":
        return f"query {data.get('query_id')} cancelled ({data.get('reason')})"
    if dataset == "queries":
        return f"query {data.get('query_id')}: {str(data.get('text'))[:200]}"
    if dataset == "answers":
        return f"answer {data.get('kind')} #{data.get('seq')} of {data.get('query_id')}"
    if dataset == "feedback":  # streams/feedback.py
        return f"rating {data.get('rating')} of query {data.get('query_id')}: {str(data.get('comment') or '')[:200]}"
    return dataset


def _now() -> str:
    return datetime.now(UTC).isoformat()


def bulk_body(docs: Iterable[EsDocument]) -> list[dict[str, Any]]:
    body: list[dict[str, Any]] = []
    for d in docs:
        meta: dict[str, Any] = {"_index": d.index, "_id": d.id}
        if d.op == "update" and d.if_seq_no is not None:
            # conditional: the document exists (it was read); Elasticsearch takes no upsert here
            meta.update(if_seq_no=d.if_seq_no, if_primary_term=d.if_primary_term)
            body.append({"update": meta})
            body.append({"doc": d.source})
        elif d.op == "update":
            meta["retry_on_conflict"] = 5
            body.append({"update": meta})
            body.append({"doc": d.source, "upsert": d.upsert if d.upsert is not None else d.source})
        else:
            body.append({d.op: meta})
            body.append(d.source)
    return body
