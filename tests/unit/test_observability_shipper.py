"""What the shipper writes: logs and acks as ECS documents, and per-query summaries that
converge to the same document whatever the order, the batch boundaries, replays and restarts."""

from __future__ import annotations

import copy
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from elastic_transport import ApiResponseMeta, HttpHeaders, NodeConfig
from elasticsearch import ApiError

from schemas.codec import encode
from schemas.events import (
    AnswerError,
    AnswerEvent,
    DocumentIndexed,
    QueryCancelled,
    QueryEvent,
    ReplyRoute,
    Source,
)
from streams.backoff import Backoff
from streams.config import ElasticSettings
from streams.ecs_logging import EcsJsonFormatter
from streams.elastic_sink import AccessDenied, ConcurrentUpdate, ElasticSink
from streams.errors import DependencyUnavailable, EffectFailed
from streams.es_documents import EsDocument, StoredDocument, bulk_body, logs_index_name, to_document
from streams.metrics import ELASTIC_ACCESS_DENIED
from streams.summaries import SummaryBuilder

TS = 1_790_000_000.0  # 2026-09-21
PREFIX = "aichat-events"


def _doc(dataset: str, value: bytes, offset: int, partition: int = 0) -> EsDocument:
    return to_document(prefix=PREFIX, dataset=dataset, topic=f"p.{dataset}", partition=partition,
                       offset=offset, key="k", timestamp_s=TS, value=value)


def test_a_log_record_is_shipped_as_ecs_into_the_logs_index() -> None:
    record = logging.LogRecord("streams.agents.chunker", logging.ERROR, __file__, 1,
                               "chunked %s", ("d1",), None)
    record.trace_id, record.doc_id = "t-1", "d1"
    line = EcsJsonFormatter(service_name="aichat-pipeline").format(record).encode()
    doc = _doc("logs", line, 3)
    assert doc.index == logs_index_name(PREFIX, TS) == "aichat-events-logs-2026.09.21"
    assert doc.id == "p.logs-0-3"
    src = doc.source
    assert src["event"]["dataset"] == "aichat.logs"
    assert src["event"]["outcome"] == "failure"  # an error line counts as a failure
    assert src["trace"]["id"] == "t-1"
    assert src["aichat"]["doc_id"] == "d1"
    assert src["service"]["name"] == "aichat-pipeline"
    assert src["host"]["hostname"] and src["process"]["pid"]
    assert src["message"] == "chunked d1"
    assert src["kafka"]["offset"] == 3


def test_an_index_acknowledgement_says_what_happened_and_how_fresh() -> None:
    ack = DocumentIndexed(doc_id="d", version=3, outcome="indexed", n_chunks=2, freshness_ms=412.5)
    src = _doc("indexed", encode(ack), 1).source
    assert src["event"]["action"] == "indexed"
    assert src["aichat"]["freshness_ms"] == 412.5
    assert "412 ms" in src["message"]


def test_updates_carry_doc_upsert_and_retry_on_conflict() -> None:
    body = bulk_body([EsDocument("i", "q1", {"a": 1}, op="update", upsert={"a": 1, "b": 2}),
                      EsDocument("i", "x-0-1", {"c": 3})])
    assert body[0] == {"update": {"_index": "i", "_id": "q1", "retry_on_conflict": 5}}
    assert body[1] == {"doc": {"a": 1}, "upsert": {"a": 1, "b": 2}}
    assert body[2] == {"index": {"_index": "i", "_id": "x-0-1"}}


# -- summaries ------------------------------------------------------------------------------------


class FakeIndex:
    """Elasticsearch's write semantics, enough to check convergence: ``update`` inserts
    ``upsert`` when the document is missing, otherwise deep-merges ``doc`` (objects merge,
    the rest replaces; an unchanged document is a noop); ``create`` and ``if_seq_no``
    writes fail with a conflict when their condition does not hold."""

    def __init__(self) -> None:
        self.docs: dict[str, dict[str, Any]] = {}
        self.seq_no: dict[str, int] = {}
        self.writes = 0

    def apply(self, actions: list[EsDocument]) -> None:
        conflicts = 0
        for a in actions:
            current = self.docs.get(a.id)
            if a.op == "create" and current is not None:
                conflicts += 1
                continue
            if a.if_seq_no is not None and (current is None or self.seq_no[a.id] != a.if_seq_no):
                conflicts += 1
                continue
            if a.op == "update":
                new = copy.deepcopy(a.upsert or a.source) if current is None else _merge(current, a.source)
            else:
                new = copy.deepcopy(a.source)
            if new != current:
                self.docs[a.id] = new
                self.seq_no[a.id] = self.writes
                self.writes += 1
        if conflicts:
            raise ConcurrentUpdate(f"{conflicts} conflicts")

    def stored(self, ids: list[str]) -> dict[str, StoredDocument]:
        return {i: StoredDocument(copy.deepcopy(self.docs[i]), self.seq_no[i], 1)
                for i in ids if i in self.docs}


def _merge(into: dict[str, Any], doc: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(into)
    for key, value in doc.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _ship(builder: SummaryBuilder, index: FakeIndex, docs: list[EsDocument]) -> list[EsDocument]:
    """What the shipper's handler does with one batch (a lost race retries the batch)."""
    for _ in range(3):
        plan = builder.plan(docs, index.stored(builder.missing(docs)))
        try:
            index.apply([*docs, *plan.updates])
        except ConcurrentUpdate:
            continue
        builder.commit(plan)
        return plan.updates
    raise AssertionError("the batch kept conflicting")


def _conversation(query_id: str = "q-1", *, fail: bool = False) -> tuple[EsDocument, list[EsDocument]]:
    asked = datetime(2026, 9, 21, 10, 0, tzinfo=UTC)
    query = QueryEvent(query_id=query_id, trace_id=query_id, text="How many vacation days?",
                       user="ana", reply_to=ReplyRoute(topic="p.answers", partition=0),
                       deadline=asked + timedelta(seconds=10), produced_at=asked)
    events = [AnswerEvent(trace_id=query_id, query_id=query_id, seq=0, kind="sources",
                          sources=[Source(doc_id="handbook/vacation", chunk_id="c1", score=0.9)])]
    events += [AnswerEvent(trace_id=query_id, query_id=query_id, seq=i, kind="token", delta=d)
               for i, d in enumerate(["Every ", "employee ", "gets 25 days [1]."], start=1)]
    if fail:
        events.append(AnswerEvent(trace_id=query_id, query_id=query_id, seq=4, kind="error",
                                  error=AnswerError(code="deadline_exceeded", message="too slow")))
    else:
        events.append(AnswerEvent(trace_id=query_id, query_id=query_id, seq=4, kind="done",
                                  timings_ms={"embed": 20.0, "search": 5.0, "first_token": 30.0,
                                              "total": 250.0}))
    return (_doc("queries", encode(query), 7),
            [_doc("answers", encode(e), 100 + i) for i, e in enumerate(events)])


def _expected_summary(index: FakeIndex, query_id: str = "q-1") -> dict[str, Any]:
    doc = index.docs[query_id]
    assert doc["event"]["dataset"] == "aichat.summary"
    return doc


def test_one_summary_per_answered_query_with_question_sources_answer_and_timings() -> None:
    index, builder = FakeIndex(), SummaryBuilder(PREFIX)
    query, answers = _conversation()
    _ship(builder, index, [query, *answers])
    summary = _expected_summary(index)
    a = summary["aichat"]
    assert a["text"] == "How many vacation days?" and a["user"] == "ana"
    assert a["answer"] == "Every employee gets 25 days [1]."
    assert a["tokens"] == 3 and a["answer_seq"] == 4 and a["answer_complete"] is True
    assert a["sources"][0]["doc_id"] == "handbook/vacation"
    assert a["timings_ms"]["total"] == 250.0
    assert a["outcome"] == "done"
    assert summary["event"]["outcome"] == "success"
    assert summary["event"]["duration"] == 250_000_000
    assert summary["@timestamp"].startswith("2026-09-21T10:00:00")  # when it was asked
    assert summary["trace"]["id"] == "q-1"
    assert len(builder) == 0  # finished queries are not kept in memory


@pytest.mark.parametrize("order", ["query_first", "answers_first", "query_last_in_batch"])
def test_the_order_of_the_two_topics_does_not_matter(order: str) -> None:
    query, answers = _conversation()
    reference, ref_builder = FakeIndex(), SummaryBuilder(PREFIX)
    _ship(ref_builder, reference, [query, *answers])
    index, builder = FakeIndex(), SummaryBuilder(PREFIX)
    if order == "query_first":
        _ship(builder, index, [query])
        _ship(builder, index, answers)
    elif order == "answers_first":
        _ship(builder, index, answers[:2])
        _ship(builder, index, answers[2:])
        _ship(builder, index, [query])
    else:
        _ship(builder, index, [*answers, query])
    assert _strip(index.docs["q-1"]) == _strip(reference.docs["q-1"])


def _strip(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != "message"}  # message says "not shipped yet" until then


def test_replays_and_restarts_mid_answer_do_not_change_the_summary() -> None:
    query, answers = _conversation()
    reference, ref_builder = FakeIndex(), SummaryBuilder(PREFIX)
    _ship(ref_builder, reference, [query, *answers])

    index = FakeIndex()
    first = SummaryBuilder(PREFIX)
    _ship(first, index, [query, *answers[:3]])
    # the shipper crashes before committing its offsets: a new one replays from the query
    second = SummaryBuilder(PREFIX)
    _ship(second, index, [query, *answers[:2]])  # replayed events: skipped by seq
    assert index.docs["q-1"]["aichat"]["answer"] == "Every employee "
    _ship(second, index, answers[2:])
    assert index.docs["q-1"] == reference.docs["q-1"]
    # a full replay after the end changes nothing and plans nothing for the answer
    third = SummaryBuilder(PREFIX)
    updates = _ship(third, index, [query, *answers])
    assert [u.source.get("event", {}).get("start") for u in updates] == [query.source["@timestamp"]]
    assert index.docs["q-1"] == reference.docs["q-1"]


def test_a_failed_write_is_planned_again_from_the_same_state() -> None:
    query, answers = _conversation()
    builder = SummaryBuilder(PREFIX)
    plan_a = builder.plan(answers[:3], {})
    plan_b = builder.plan(answers[:3], {})  # not committed: the same plan again
    assert [u.source for u in plan_a.updates] == [u.source for u in plan_b.updates]
    builder.commit(plan_b)
    assert builder.plan(answers[:3], {}).updates == []


def test_an_error_ends_the_summary_as_a_failure() -> None:
    index, builder = FakeIndex(), SummaryBuilder(PREFIX)
    query, answers = _conversation(fail=True)
    _ship(builder, index, [query, *answers])
    summary = index.docs["q-1"]
    assert summary["aichat"]["outcome"] == "deadline_exceeded"
    assert summary["aichat"]["error"]["message"] == "too slow"
    assert summary["event"]["outcome"] == "failure"


def test_a_question_without_an_answer_yet_is_pending() -> None:
    index, builder = FakeIndex(), SummaryBuilder(PREFIX)
    query, answers = _conversation()
    _ship(builder, index, [query])
    assert index.docs["q-1"]["aichat"]["outcome"] == "pending"
    _ship(builder, index, answers)
    assert index.docs["q-1"]["aichat"]["outcome"] == "done"


def test_a_missing_answer_event_is_recorded_as_a_gap() -> None:
    index, builder = FakeIndex(), SummaryBuilder(PREFIX)
    query, answers = _conversation()
    _ship(builder, index, [query, answers[0], *answers[2:]])  # token #1 never arrives
    a = index.docs["q-1"]["aichat"]
    assert a["answer_gaps"] == 1 and a["answer_complete"] is False
    assert a["outcome"] == "done"


def test_open_queries_are_bounded_in_memory_and_read_back_when_evicted() -> None:
    index, builder = FakeIndex(), SummaryBuilder(PREFIX, max_open=2)
    convs = [_conversation(f"q-{n}") for n in range(3)]
    for _, answers in convs:
        _ship(builder, index, answers[:2])
    assert len(builder) == 2 and builder.missing(convs[0][1][2:]) == ["q-0"]
    for _, answers in convs:
        _ship(builder, index, answers[2:])
    assert all(index.docs[f"q-{n}"]["aichat"]["answer"] == "Every employee gets 25 days [1]."
               for n in range(3))


def test_undecodable_answer_records_are_shipped_but_not_summarised() -> None:
    builder = SummaryBuilder(PREFIX)
    junk = _doc("answers", b"\xff not json", 9)
    assert builder.missing([junk]) == []
    assert builder.plan([junk], {}).updates == []
    assert orjson.dumps(junk.source)  # still a valid document


# -- cancellations (queries topic, racing the answers topic) ----------------------------------------


def _cancel(query_id: str = "q-1", offset: int = 8) -> EsDocument:
    event = QueryCancelled(query_id=query_id, trace_id=query_id, reason="client")
    return _doc("queries", encode(event), offset)


def test_a_cancelled_query_without_an_answer_ends_cancelled() -> None:
    index, builder = FakeIndex(), SummaryBuilder(PREFIX)
    query, answers = _conversation()
    _ship(builder, index, [query])
    _ship(builder, index, [_cancel()])
    _ship(builder, index, answers[:3])  # the answerer had streamed a little before it stopped
    a = index.docs["q-1"]["aichat"]
    assert a["outcome"] == "cancelled" and a["cancel_reason"] == "client"
    assert a["answer"] == "Every employee "
    assert index.docs["q-1"]["event"]["outcome"] == "unknown"
    assert index.docs["q-1"]["aichat"]["text"] == "How many vacation days?"


@pytest.mark.parametrize("order", ["cancel_first", "cancel_last", "one_batch_cancel_first",
                                   "one_batch_cancel_last", "cancel_only_then_rest"])
def test_an_answer_that_ended_wins_over_a_cancellation_in_any_order(order: str) -> None:
    index, builder = FakeIndex(), SummaryBuilder(PREFIX)
    query, answers = _conversation()
    cancel = _cancel()
    batches = {
        "cancel_first": [[query, cancel], answers],
        "cancel_last": [[query], answers, [cancel]],
        "one_batch_cancel_first": [[cancel, query, *answers]],
        "one_batch_cancel_last": [[query, *answers, cancel]],
        "cancel_only_then_rest": [[cancel], answers[:2], [query], answers[2:]],
    }[order]
    for batch in batches:
        _ship(builder, index, batch)
    a = index.docs["q-1"]["aichat"]
    assert a["outcome"] == "done" and a["cancel_reason"] == "client"
    assert a["answer"] == "Every employee gets 25 days [1]."
    assert index.docs["q-1"]["event"]["outcome"] == "success"
    assert index.docs["q-1"]["@timestamp"].startswith("2026-09-21T10:00:00")


def test_a_cancellation_racing_a_done_written_by_another_shipper_is_planned_again() -> None:
    index = FakeIndex()
    query, answers = _conversation()
    _ship(SummaryBuilder(PREFIX), index, [query, *answers[:3]])
    queries_shipper, answers_shipper = SummaryBuilder(PREFIX), SummaryBuilder(PREFIX)
    cancel = _cancel()
    stale = queries_shipper.plan([cancel], index.stored(queries_shipper.missing([cancel])))
    _ship(answers_shipper, index, answers[3:])  # done lands between the read and the write
    with pytest.raises(ConcurrentUpdate):
        index.apply([cancel, *stale.updates])
    _ship(queries_shipper, index, [cancel])  # the retry reads again
    assert index.docs["q-1"]["aichat"]["outcome"] == "done"
    assert index.docs["q-1"]["aichat"]["cancel_reason"] == "client"


def test_cancellations_are_shipped_as_events_too() -> None:
    src = _cancel().source
    assert src["event"]["action"] == "query_cancelled"
    assert src["message"] == "query q-1 cancelled (client)"
    assert src["aichat"]["reason"] == "client"


# -- every bulk item checked (a stand-in client: the real cluster is in tests/integration) ---------


class _Bulk:
    """Answers bulk requests with the given per-item statuses, one list per request."""

    def __init__(self, *rounds: list[int] | int, max_items: int | None = None) -> None:
        self.rounds = list(rounds)
        self.sent: list[list[str]] = []
        self.max_items = max_items  # more items in one request → HTTP 413

    async def bulk(self, operations: list[dict[str, Any]], refresh: bool) -> dict[str, Any]:
        ids = [next(iter(op.values()))["_id"] for op in operations[::2]]
        self.sent.append(ids)
        if self.max_items is not None and len(ids) > self.max_items:
            raise _api_error(413)
        if self.rounds and isinstance(self.rounds[0], int):  # the whole request refused
            raise _api_error(self.rounds.pop(0))  # type: ignore[arg-type]
        statuses = self.rounds.pop(0) if self.rounds else [201] * len(ids)
        assert isinstance(statuses, list)
        items = [{"index": {"_id": i, "status": st, **({"error": {"type": f"e{st}", "reason": "why"}}
                                                          if st >= 300 else {})}}
                 for i, st in zip(ids, statuses, strict=True)]
        return {"errors": any(st >= 300 for st in statuses), "items": items}

    async def close(self) -> None:
        return None


def _api_error(status: int) -> ApiError:
    meta = ApiResponseMeta(status=status, http_version="1.1", headers=HttpHeaders(), duration=0.0,
                           node=NodeConfig("http", "127.0.0.1", 9200))
    return ApiError(f"HTTP {status}", meta=meta, body={"error": {"type": f"status_{status}"}})


def _sink(client: _Bulk, monkeypatch: pytest.MonkeyPatch) -> ElasticSink:
    monkeypatch.setattr("streams.elastic_sink.THROTTLE", Backoff(first_s=0.001, max_s=0.002))
    sink = ElasticSink(ElasticSettings())
    sink._client = client  # type: ignore[assignment]
    return sink


def _three() -> list[EsDocument]:
    return [EsDocument("i", f"t-0-{n}", {"n": n}) for n in range(3)]


async def test_throttled_items_alone_are_sent_again(monkeypatch: pytest.MonkeyPatch) -> None:
    client = _Bulk([201, 429, 503], [200, 201])
    await _sink(client, monkeypatch).write(_three())
    assert client.sent == [["t-0-0", "t-0-1", "t-0-2"], ["t-0-1", "t-0-2"]]


async def test_items_throttled_for_too_long_make_the_batch_retriable(monkeypatch: pytest.MonkeyPatch) -> None:
    client = _Bulk(*([[429, 429, 429]] + [[429, 429, 429]] * 10))
    with pytest.raises(DependencyUnavailable, match="kept refusing 3 of 3"):
        await _sink(client, monkeypatch).write(_three())


async def test_a_refused_item_names_itself_and_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    client = _Bulk([201, 400, 201])
    with pytest.raises(EffectFailed, match=r"1 of 3 documents refused; first i/t-0-1 \(HTTP 400\): e400: why"):
        await _sink(client, monkeypatch).write(_three())


async def test_a_lost_conditional_write_is_retriable(monkeypatch: pytest.MonkeyPatch) -> None:
    client = _Bulk([201, 409, 201])
    with pytest.raises(ConcurrentUpdate):
        await _sink(client, monkeypatch).write(_three())


@pytest.mark.parametrize("status", [401, 403])
async def test_a_refused_key_is_the_clusters_fault_not_the_records(
    status: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An expired key (401) or a missing privilege (403) is retried (nothing dead-lettered),
    says so until a request passes, then clears by itself."""
    client = _Bulk(status)
    sink = _sink(client, monkeypatch)
    with pytest.raises(AccessDenied, match=f"HTTP {status}") as raised:
        await sink.write(_three())
    assert raised.value.retriable
    assert sink.refusing is not None and f"HTTP {status}" in sink.refusing
    assert ELASTIC_ACCESS_DENIED._value.get() == 1
    await sink.write(_three())  # the operator fixed the key
    assert sink.refusing is None and ELASTIC_ACCESS_DENIED._value.get() == 0


async def test_a_bulk_too_large_is_split_until_it_fits(monkeypatch: pytest.MonkeyPatch) -> None:
    client = _Bulk(max_items=1)
    docs = [EsDocument("i", f"t-0-{n}", {"n": n}) for n in range(4)]
    await _sink(client, monkeypatch).write(docs)
    written = [ids for ids in client.sent if len(ids) == 1]
    assert sorted(i for ids in written for i in ids) == [d.id for d in docs]


async def test_one_document_too_large_alone_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    client = _Bulk(max_items=0)
    with pytest.raises(EffectFailed, match="alone is larger than the cluster accepts"):
        await _sink(client, monkeypatch).write([EsDocument("i", "t-0-0", {"n": 0})])
