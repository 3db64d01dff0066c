"""The fault suite's checker: what was published, asked and produced, against what arrived.

Three checks, each returning a frozen report with the numbers (``sent``, ``arrived``,
``lost``, ``duplicated``…), an ``ok`` property and a readable ``str()`` for the
assertion message::

    report = await check_index(settings, published)       # Weaviate + the indexed topic
    report = check_answers(answers, events)                # pure: frames (+ answers topic)
    report = await check_event_log(settings, topics)       # Kafka records vs Elasticsearch
    report = await check_event_log(settings, topics, ends=await end_offsets(settings, topics))
    assert report.ok, report

    # a fault delays work: poll until the report is ok, then assert on the last one
    report = await until_ok(lambda: check_index(settings, published), timeout_s=120)

* ``check_index(settings, published)``: ``published`` are the :class:`DocumentEvent`\\ s
  sent (or ``(tenant, doc_id, version)`` tuples, taken as upserts). The newest version of
  each document must be the one indexed in Weaviate (its document state), its chunks
  complete (seq 0..n-1) and each exactly once (no two objects with the same
  (tenant, doc_id, version, seq)), no chunk of another version or of an unpublished
  document left, and that version acknowledged on ``indexed``; a document whose newest
  event is a delete must have no chunks and a ``deleted`` acknowledgement.
* ``check_answers(answers, events=None)``: ``answers`` maps any key (one per query
  sent) to the frames the client received for it, in order, as
  :func:`query_gateway.client.ask` yields them. Each must end with exactly one ``done``
  or ``error`` and nothing after it, in the order ack → sources → tokens → final. With
  ``events`` (the ``answers`` topic, see :func:`read_answer_events`), a ``done`` query's
  tokens must be exactly those of the answerer's run that produced the ``done``
  (``seq`` 0..n without gaps): none missing, none repeated, none out of order.
* ``check_event_log(settings, topics)``: every record of the listed topics (base
  names like ``"documents"``), up to their end offsets when the check starts, is in
  Elasticsearch exactly once, identified by ``kafka.{topic,partition,offset}`` (the
  shipper's ``_id`` is ``topic-partition-offset``, which makes replays idempotent).

Also: :func:`read_records` (every record of some topics up to their ends),
:func:`end_offsets` and :func:`read_answer_events`.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import httpx
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from schemas.codec import decode
from schemas.errors import InvalidEvent
from schemas.events import AnswerEvent, DocumentEvent, DocumentIndexed
from streams.config import WorkerSettings
from streams.endpoints import elastic_http_options
from streams.weaviate_connect import weaviate_client

__all__ = [
    "AnswerReport", "DocVersion", "EventLogReport", "IndexReport", "check_answers", "check_event_log",
    "check_index", "end_offsets", "read_answer_events", "read_records", "until_ok",
]

DocVersion = tuple[str, str, int]  # (tenant, doc_id, version)
ChunkKey = tuple[str, str, int, int]  # (tenant, doc_id, version, seq)
Coordinate = tuple[str, int, int]  # (topic, partition, offset)
Frame = Mapping[str, Any]
SHOWN = 5  # examples named per problem in a message


class Report(Protocol):
    @property
    def ok(self) -> bool: ...


R = TypeVar("R", bound=Report)


async def until_ok(check: Callable[[], Awaitable[R]], *, timeout_s: float,
                   interval_s: float = 1.0) -> R:
    """Run ``check`` until its report is ok or ``timeout_s`` passed; the last report."""
    deadline = time.monotonic() + timeout_s
    while True:
        report = await check()
        if report.ok or time.monotonic() >= deadline:
            return report
        await asyncio.sleep(interval_s)


def _some(items: Iterable[Any]) -> str:
    listed = sorted(items, key=repr)
    more = f" … (+{len(listed) - SHOWN})" if len(listed) > SHOWN else ""
    return ", ".join(map(str, listed[:SHOWN])) + more


# -- Kafka -----------------------------------------------------------------------------------


Ends = Mapping[tuple[str, int], int]  # (full topic name, partition) -> end offset


async def _partitions(consumer: AIOKafkaConsumer, settings: WorkerSettings,
                      topics: Sequence[str]) -> list[TopicPartition]:
    """The partitions of these topics that exist (the consumer's own metadata only knows
    the topics it is assigned, hence the admin client)."""
    existing = await consumer.topics()
    names = [name for name in (settings.topic(t) for t in topics) if name in existing]
    if not names:
        return []
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics(names)
    finally:
        await admin.close()
    return sorted(TopicPartition(t["topic"], p["partition"]) for t in described
                  for p in t["partitions"])


async def end_offsets(settings: WorkerSettings, topics: Sequence[str]) -> dict[tuple[str, int], int]:
    """The end offset of every partition of these topics (base names) now."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        tps = await _partitions(consumer, settings, topics)
        ends = await consumer.end_offsets(tps) if tps else {}
    finally:
        await consumer.stop()
    return {(tp.topic, tp.partition): offset for tp, offset in ends.items()}


async def read_records(settings: WorkerSettings, topics: Sequence[str], *, ends: Ends | None = None,
                       timeout_s: float = 60.0) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of these topics (base names) from the beginning up to ``ends`` (default:
    their end offsets at the call), without a consumer group. Missing topics are empty."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        tps = await _partitions(consumer, settings, topics)
        if not tps:
            return []
        consumer.assign(tps)
        now = await consumer.end_offsets(tps)
        ends = {tp: (ends or {}).get((tp.topic, tp.partition), now[tp]) for tp in tps}
        await consumer.seek_to_beginning(*tps)
        records: list[ConsumerRecord[bytes, bytes]] = []
        deadline = time.monotonic() + timeout_s
        while True:
            todo = [tp for tp in tps if await consumer.position(tp) < ends[tp]]
            if not todo:
                return records
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topics} took longer than {timeout_s:.0f}s")
            batch = await consumer.getmany(*todo, timeout_ms=1000)
            records += [r for tp, rs in batch.items() for r in rs if r.offset < ends[tp]]
    finally:
        await consumer.stop()


async def read_answer_events(settings: WorkerSettings) -> list[AnswerEvent]:
    """The ``answers`` topic's events, in partition order (undecodable records skipped)."""
    events = []
    for record in await read_records(settings, ["answers"]):
        try:
            events.append(decode(AnswerEvent, record.value))
        except InvalidEvent:
            continue
    return events


# -- the index -------------------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class IndexReport:
    """Published documents against Weaviate's chunks and states and the ``indexed`` acks."""

    expected: frozenset[DocVersion]  # newest upsert per published document
    deleted: frozenset[DocVersion]  # newest event of the document is a delete
    indexed: frozenset[DocVersion]  # document states of status "indexed"
    chunks: int  # chunk objects read
    missing: tuple[DocVersion, ...] = ()  # expected (or deleted) but not in that state
    duplicated: tuple[ChunkKey, ...] = ()  # two or more objects with this key
    incomplete: tuple[str, ...] = ()  # a document's chunks: gaps, wrong count
    unexpected: tuple[str, ...] = ()  # chunks or states nothing published asks for
    unacknowledged: tuple[DocVersion, ...] = ()  # no matching DocumentIndexed

    @property
    def sent(self) -> int:
        return len(self.expected) + len(self.deleted)

    @property
    def lost(self) -> int:
        return len(self.missing)

    @property
    def arrived(self) -> int:
        return self.sent - self.lost

    @property
    def ok(self) -> bool:
        return not (self.missing or self.duplicated or self.incomplete or self.unexpected
                    or self.unacknowledged)

    def __repr__(self) -> str:
        return str(self)

    def __str__(self) -> str:
        head = (f"index: {self.sent} documents published ({len(self.deleted)} deleted), "
                f"{self.arrived} as expected, {self.lost} lost, {len(self.duplicated)} duplicated "
                f"chunks, {self.chunks} chunk objects")
        parts = [head]
        for name in ("missing", "duplicated", "incomplete", "unexpected", "unacknowledged"):
            items = getattr(self, name)
            if items:
                parts.append(f"{len(items)} {name}: {_some(items)}")
        return "; ".join(parts)


def _newest(published: Iterable[DocumentEvent | DocVersion]) -> dict[tuple[str, str], tuple[int, str]]:
    newest: dict[tuple[str, str], tuple[int, str]] = {}
    for item in published:
        if isinstance(item, DocumentEvent):
            key, version, op = (item.tenant, item.doc_id), item.version, item.op
        else:
            (tenant, doc_id, version), op = item, "upsert"
            key = (tenant, doc_id)
        if key not in newest or version >= newest[key][0]:
            # an equal version: the later event wins, as in the compacted topic
            newest[key] = (version, op)
    return newest


async def _weaviate_objects(settings: WorkerSettings, collection: str,
                            properties: list[str]) -> list[dict[str, Any]]:
    client = weaviate_client(settings)
    await client.connect()
    try:
        if not await client.collections.exists(collection):
            return []
        handle = client.collections.use(collection)
        return [dict(o.properties) async for o in handle.iterator(return_properties=properties)]
    finally:
        await client.close()


async def check_index(settings: WorkerSettings,
                      published: Iterable[DocumentEvent | DocVersion]) -> IndexReport:
    """See the module docstring. Reads every object of the settings' collection."""
    newest = _newest(published)
    expected = frozenset((t, d, v) for (t, d), (v, op) in newest.items() if op == "upsert")
    deleted = frozenset((t, d, v) for (t, d), (v, op) in newest.items() if op == "delete")
    name = settings.weaviate_collection
    chunks = await _weaviate_objects(settings, name,
                                     ["tenant", "doc_id", "version", "seq", "n_chunks"])
    states = await _weaviate_objects(settings, f"{name}Docs",
                                     ["tenant", "doc_id", "version", "status", "n_chunks"])
    acks = set()
    for record in await read_records(settings, ["indexed"]):
        try:
            a = decode(DocumentIndexed, record.value)
        except InvalidEvent:
            continue
        acks.add((a.tenant, a.doc_id, a.version, a.outcome))

    state_of = {(str(s["tenant"]), str(s["doc_id"])): s for s in states}
    indexed = frozenset((t, d, int(s["version"])) for (t, d), s in state_of.items()
                        if s["status"] == "indexed")
    gone = frozenset((t, d, int(s["version"])) for (t, d), s in state_of.items()
                     if s["status"] == "deleted")
    missing = sorted((expected - indexed) | (deleted - gone))
    unexpected = [f"state {t}/{d} v{v} indexed" for t, d, v in sorted(indexed - expected)]
    unexpected += [f"state {t}/{d} v{v} deleted" for t, d, v in sorted(gone - deleted)
                   if (t, d) not in newest]

    keys = Counter((str(c["tenant"]), str(c["doc_id"]), int(c["version"]), int(c["seq"]))
                   for c in chunks)
    duplicated = sorted(k for k, n in keys.items() if n > 1)
    by_doc: dict[tuple[str, str], dict[int, set[int]]] = defaultdict(lambda: defaultdict(set))
    n_of: dict[tuple[str, str, int], set[int]] = defaultdict(set)
    for c in chunks:
        t, d, v = str(c["tenant"]), str(c["doc_id"]), int(c["version"])
        by_doc[(t, d)][v].add(int(c["seq"]))
        n_of[(t, d, v)].add(int(c["n_chunks"]))
    incomplete: list[str] = []
    for (t, d), versions in sorted(by_doc.items()):
        wanted = newest.get((t, d))
        if wanted is None or wanted[1] == "delete":
            unexpected += [f"chunks of {t}/{d} v{v}" for v in sorted(versions)]
            continue
        # the chunks of the indexed version; an "unchanged" newer version keeps older chunks
        current = max(v for v in versions if v <= wanted[0]) if min(versions) <= wanted[0] else None
        unexpected += [f"chunks of {t}/{d} v{v} beside v{current}" for v in sorted(versions)
                       if v != current]
        if current is None:
            continue
        seqs, counts = versions[current], n_of[(t, d, current)]
        state = state_of.get((t, d))
        n = int(state["n_chunks"]) if state is not None else max(counts)
        if counts != {n} or seqs != set(range(n)):
            incomplete.append(f"{t}/{d} v{current}: seqs {_some(seqs)} of n_chunks {sorted(counts)}"
                              f" (state says {n})")
    for t, d, v in sorted(expected & indexed):
        if (t, d) not in by_doc:
            incomplete.append(f"{t}/{d} v{v}: indexed state but no chunks")

    unacknowledged = sorted(
        [(t, d, v) for t, d, v in expected
         if not {(t, d, v, "indexed"), (t, d, v, "unchanged")} & acks]
        + [(t, d, v) for t, d, v in deleted if (t, d, v, "deleted") not in acks])
    return IndexReport(expected=expected, deleted=deleted, indexed=indexed, chunks=len(chunks),
                       missing=tuple(missing), duplicated=tuple(duplicated),
                       incomplete=tuple(incomplete), unexpected=tuple(unexpected),
                       unacknowledged=tuple(unacknowledged))


# -- answers ---------------------------------------------------------------------------------

FINAL = frozenset({"done", "error"})


@dataclass(frozen=True, repr=False)
class AnswerReport:
    """Queries sent against the frames that came back (and the answerer's events)."""

    sent: int
    outcomes: Mapping[str, int] = field(default_factory=dict)  # "done", "error:<code>"
    lost: tuple[str, ...] = ()  # no final frame
    duplicated: tuple[str, ...] = ()  # two finals, or frames after the final
    out_of_order: tuple[str, ...] = ()  # ack → sources → tokens → final broken
    incomplete: tuple[str, ...] = ()  # tokens differ from the answerer's run

    @property
    def arrived(self) -> int:
        return self.sent - len(self.lost)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.out_of_order or self.incomplete)

    def __repr__(self) -> str:
        return str(self)

    def __str__(self) -> str:
        parts = [f"answers: {self.sent} queries sent, {self.arrived} ended, {len(self.lost)} lost, "
                 f"{len(self.duplicated)} duplicated; outcomes {dict(self.outcomes)}"]
        for name in ("lost", "duplicated", "out_of_order", "incomplete"):
            items = getattr(self, name)
            if items:
                parts.append(f"{len(items)} {name}: {_some(items)}")
        return "; ".join(parts)


_RANK = {"ack": 0, "sources": 1, "token": 2, "done": 3, "error": 3}


def _runs(events: Sequence[AnswerEvent]) -> list[list[AnswerEvent]]:
    """One query's events split into the answerer's runs (a replay starts again at seq 0)."""
    runs: list[list[AnswerEvent]] = []
    for event in events:
        if event.seq == 0 or not runs:
            runs.append([])
        runs[-1].append(event)
    return runs


def check_answers(answers: Mapping[str, Sequence[Frame]],
                  events: Iterable[AnswerEvent] | None = None) -> AnswerReport:
    """See the module docstring. ``events`` in the topic's order (one partition per query)."""
    by_query: dict[str, list[AnswerEvent]] = defaultdict(list)
    for event in events or ():
        by_query[event.query_id].append(event)
    outcomes: Counter[str] = Counter()
    lost, duplicated, out_of_order, incomplete = [], [], [], []
    for key, frames in answers.items():
        kinds = [str(f.get("type")) for f in frames]
        finals = [i for i, k in enumerate(kinds) if k in FINAL]
        if not finals:
            lost.append(f"{key} ({len(frames)} frames, last {kinds[-1] if kinds else None})")
            continue
        final = frames[finals[0]]
        outcomes["done" if final["type"] == "done" else f"error:{final.get('code')}"] += 1
        if len(finals) > 1 or finals[-1] != len(frames) - 1:
            duplicated.append(f"{key}: {kinds}")
        ranks = [_RANK.get(k, -1) for k in kinds[: finals[0] + 1]]
        if (-1 in ranks or ranks != sorted(ranks) or kinds.count("sources") > 1
                or kinds.count("ack") > 1):
            out_of_order.append(f"{key}: {kinds}")
        if final["type"] != "done" or events is None:
            continue
        query_id = next((f.get("query_id") for f in frames if f.get("type") == "ack"), None)
        runs = [r for r in _runs(by_query.get(str(query_id), [])) if r[-1].kind == "done"]
        if not runs:
            incomplete.append(f"{key}: no run ending in done on the answers topic for {query_id}")
            continue
        run = runs[-1]
        if [e.seq for e in run] != list(range(len(run))):
            incomplete.append(f"{key}: the answerer's seqs {[e.seq for e in run]} have gaps")
        sent = [e.delta for e in run if e.kind == "token"]
        got = [str(f.get("delta")) for f in frames if f.get("type") == "token"]
        if got != sent:
            incomplete.append(f"{key}: client tokens {''.join(got)!r} != answerer's "
                              f"{''.join(sent)!r} ({len(got)} vs {len(sent)} tokens)")
    return AnswerReport(sent=len(answers), outcomes=dict(outcomes), lost=tuple(lost),
                        duplicated=tuple(duplicated), out_of_order=tuple(out_of_order),
                        incomplete=tuple(incomplete))


# -- the event log ---------------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class EventLogReport:
    """Kafka records of some topics against the documents the shipper wrote."""

    sent: int  # records in Kafka (below the end offsets at the check)
    per_topic: Mapping[str, int]  # records per topic
    lost: tuple[Coordinate, ...] = ()  # in Kafka, not in Elasticsearch
    duplicated: tuple[tuple[Coordinate, int], ...] = ()  # in Elasticsearch more than once

    @property
    def arrived(self) -> int:
        return self.sent - len(self.lost)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated)

    def __repr__(self) -> str:
        return str(self)

    def __str__(self) -> str:
        parts = [f"event log: {self.sent} records {dict(self.per_topic)}, {self.arrived} in "
                 f"Elasticsearch, {len(self.lost)} lost, {len(self.duplicated)} duplicated"]
        if self.lost:
            parts.append(f"lost: {_some(self.lost)}")
        if self.duplicated:
            parts.append(f"duplicated (coordinate, copies): {_some(self.duplicated)}")
        return "; ".join(parts)


async def _shipped(settings: WorkerSettings, topics: set[str]) -> Counter[Coordinate]:
    """(topic, partition, offset) of every shipped record document, with copies counted."""
    index = f"{settings.elastic_index_prefix}-*"
    body = {"size": 5000, "_source": ["kafka"], "query": {"exists": {"field": "kafka.offset"}}}
    found: Counter[Coordinate] = Counter()
    async with httpx.AsyncClient(**elastic_http_options(settings), timeout=60) as es:
        (await es.post(f"/{index}/_refresh", params={"allow_no_indices": "true"})).raise_for_status()
        response = await es.post(f"/{index}/_search", json=body,
                                 params={"scroll": "1m", "allow_no_indices": "true"})
        response.raise_for_status()
        page = response.json()
        try:
            while hits := page["hits"]["hits"]:
                for hit in hits:
                    kafka = hit["_source"]["kafka"]
                    if kafka["topic"] in topics:
                        found[(kafka["topic"], int(kafka["partition"]), int(kafka["offset"]))] += 1
                response = await es.post("/_search/scroll",
                                         json={"scroll": "1m", "scroll_id": page["_scroll_id"]})
                response.raise_for_status()
                page = response.json()
        finally:
            if "_scroll_id" in page:
                await es.request("DELETE", "/_search/scroll", json={"scroll_id": page["_scroll_id"]})
    return found


async def check_event_log(settings: WorkerSettings, topics: Sequence[str], *,
                          ends: Ends | None = None) -> EventLogReport:
    """See the module docstring. ``topics`` are base names (``settings.topic()`` adds the
    prefix). With ``ends`` (:func:`end_offsets` taken after the traffic), only the records
    below them count: a topic that keeps growing (``logs``) then has a fixed target."""
    records = await read_records(settings, topics, ends=ends)
    in_kafka = {(r.topic, r.partition, r.offset) for r in records}
    shipped = await _shipped(settings, {settings.topic(t) for t in topics})
    per_topic = Counter(t for t, _, _ in in_kafka)
    return EventLogReport(
        sent=len(in_kafka),
        per_topic={t: per_topic.get(settings.topic(t), 0) for t in topics},
        lost=tuple(sorted(in_kafka - set(shipped))),
        duplicated=tuple(sorted((c, n) for c, n in shipped.items() if n > 1 and c in in_kafka)),
    )
