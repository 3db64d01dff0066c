"""One summary document per query, built by the shipper from the query and its answer events.

Analysts want one line per question: what was asked, by whom, which sources
answered, the full answer text, the timings and how it ended. The events that
say so arrive on two topics, read in no particular order relative to each other,
so both sides write *partial updates* of ``<prefix>-summaries/_doc/<query_id>``
(bulk ``update`` with ``doc`` and ``upsert``; no scripts, which the local
Elasticsearch lacks):

* a ``queries`` record writes the question fields and ``@timestamp`` (asked at);
* the ``answers`` records of the query — one partition, in ``seq`` order — are
  folded into an :class:`AnswerState` (sources, the deltas concatenated, token
  count, timings, outcome on ``done``/``error``) whose fields are written after
  each batch; ``aichat.outcome`` only once the answer ended (``event.end`` set);
* a ``query_cancelled`` record (queries topic) writes ``aichat.cancel_reason`` and
  sets the outcome to ``cancelled`` unless the answer had already ended — a
  conditional write (``if_seq_no``) on what was just read, so a ``done`` shipped
  concurrently by another shipper is never overwritten (a lost race re-plans).

A ``feedback`` record (a rating) writes ``aichat.feedback`` into the summary of the
same tenant and user only (streams/feedback.py).

``aichat.outcome`` therefore ends as done/error code if the answer ended, else
``cancelled`` if the query was cancelled, else ``pending``, whatever the order.

Idempotent under replay: the question fields are the same values again, and the
state remembers the highest folded ``seq`` (``aichat.answer_seq``), so a replayed
answer event is skipped. The state of an open query lives in memory between
batches; when it is not there (restart, rebalance, eviction) it is read back from
the summary document itself (realtime ``mget``) before folding. Memory is only
advanced after Elasticsearch confirmed the batch (:meth:`SummaryBuilder.commit`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from streams import feedback
from streams.es_documents import EsDocument, StoredDocument, summary_index
from streams.metrics import SHIPPER_SUMMARIES

log = logging.getLogger(__name__)

DATASET = "aichat.summary"
QUESTION_FIELDS = ("query_id", "session_id", "tenant", "user", "text", "top_k", "filters",
                   "variant", "experiment", "deadline")
MAX_ANSWER_CHARS = 100_000


@dataclass
class AnswerState:
    query_id: str
    trace_id: str | None = None
    started_at: str | None = None
    seq: int = -1  # highest answer seq folded in
    answer: str = ""
    tokens: int = 0
    gaps: int = 0  # seqs never seen (should stay 0: one partition, in order)
    sources: list[dict[str, Any]] | None = None
    timings_ms: dict[str, Any] | None = None
    outcome: str = "pending"
    error: dict[str, Any] | None = None
    ended_at: str | None = None

    @property
    def finished(self) -> bool:
        return self.outcome != "pending"

    @classmethod
    def from_source(cls, query_id: str, source: Mapping[str, Any]) -> AnswerState:
        """The state as the summary document recorded it (after a restart or a rebalance)."""
        a = source.get("aichat") or {}
        ended_at = (source.get("event") or {}).get("end")
        return cls(
            query_id=query_id,
            trace_id=(source.get("trace") or {}).get("id"),
            started_at=source.get("@timestamp"),
            seq=int(a.get("answer_seq", -1)),
            answer=str(a.get("answer", "")),
            tokens=int(a.get("tokens", 0)),
            gaps=int(a.get("answer_gaps", 0)),
            sources=a.get("sources"),
            timings_ms=a.get("timings_ms"),
            # only the answer side ends an answer; "cancelled" alone does not
            outcome=str(a.get("outcome", "pending")) if ended_at else "pending",
            error=a.get("error"),
            ended_at=ended_at,
        )

    def fold(self, fields: Mapping[str, Any], timestamp: str | None, trace_id: str | None) -> bool:
        """Apply one answer event's fields; False when it was already folded (a replay)."""
        seq = fields.get("seq")
        if not isinstance(seq, int) or seq <= self.seq or self.finished:
            return False
        if seq > self.seq + 1:
            self.gaps += seq - self.seq - 1
            log.warning("summary of %s: answer events %d..%d never seen", self.query_id,
                        self.seq + 1, seq - 1, extra={"query_id": self.query_id, "trace_id": trace_id})
        self.seq = seq
        self.trace_id = self.trace_id or trace_id
        self.started_at = self.started_at or timestamp
        kind = fields.get("kind")
        if kind == "sources":
            self.sources = list(fields.get("sources") or [])
        elif kind == "token":
            if len(self.answer) < MAX_ANSWER_CHARS:
                self.answer += str(fields.get("delta") or "")
            self.tokens += 1
        elif kind == "done":
            self.outcome, self.ended_at = "done", timestamp
            self.timings_ms = dict(fields.get("timings_ms") or {})
        elif kind == "error":
            error = dict(fields.get("error") or {})
            self.outcome, self.ended_at, self.error = str(error.get("code") or "error"), timestamp, error
            self.timings_ms = dict(fields.get("timings_ms") or {}) or self.timings_ms
        return True

    def update(self, index: str) -> EsDocument:
        aichat: dict[str, Any] = {
            "query_id": self.query_id,
            "answer": self.answer,
            "answer_seq": self.seq,
            "answer_gaps": self.gaps,
            "tokens": self.tokens,
            "answer_complete": self.finished and self.gaps == 0,
        }
        if self.finished:  # pending is not written over a cancellation
            aichat["outcome"] = self.outcome
        if self.sources is not None:
            aichat["sources"] = self.sources
        if self.timings_ms:
            aichat["timings_ms"] = self.timings_ms
        if self.error:
            aichat["error"] = self.error
        event: dict[str, Any] = {"dataset": DATASET, "kind": "event"}
        if self.finished:
            event["outcome"] = "success" if self.outcome == "done" else "failure"
            event["end"] = self.ended_at
            total = (self.timings_ms or {}).get("total")
            if isinstance(total, int | float):
                event["duration"] = int(total * 1_000_000)  # ECS: nanoseconds
        doc: dict[str, Any] = {"event": event, "aichat": aichat}
        if self.trace_id:
            doc["trace"] = {"id": self.trace_id}
        upsert = {**doc, "@timestamp": self.started_at,
                  "aichat": {"outcome": self.outcome, **aichat},
                  "message": f"answer to query {self.query_id} (question not shipped yet)"}
        return EsDocument(index, self.query_id, doc, op="update", upsert=upsert)


def cancel_update(index: str, source: Mapping[str, Any],
                  stored: StoredDocument | None) -> EsDocument:
    """A ``query_cancelled`` record: conditional on the summary as just read (create if none)."""
    a = source.get("aichat") or {}
    query_id, reason = str(a["query_id"]), a.get("reason")
    ended = stored is not None and bool((stored.source.get("event") or {}).get("end"))
    doc: dict[str, Any] = {
        "event": {"dataset": DATASET, "kind": "event"},
        "aichat": {"query_id": query_id, "cancel_reason": reason},
    }
    if not ended:
        doc["aichat"]["outcome"] = "cancelled"
        doc["event"]["outcome"] = "unknown"  # the client's choice, not a failure of ours
    trace_id = (source.get("trace") or {}).get("id")
    if trace_id:
        doc["trace"] = {"id": trace_id}
    if stored is None:
        created = {**doc, "@timestamp": source.get("@timestamp"),
                   "message": f"query {query_id} cancelled ({reason}) (question not shipped yet)"}
        return EsDocument(index, query_id, created, op="create")
    return EsDocument(index, query_id, doc, op="update",
                      if_seq_no=stored.seq_no, if_primary_term=stored.primary_term)


def question_update(index: str, source: Mapping[str, Any]) -> EsDocument | None:
    """The partial summary a shipped ``queries`` document contributes (None if not a query)."""
    a = source.get("aichat") or {}
    query_id = a.get("query_id")
    if not isinstance(query_id, str) or not query_id or _is_cancellation(source):
        return None
    asked_at = source.get("@timestamp")
    doc: dict[str, Any] = {
        "@timestamp": asked_at,
        "message": f"question: {str(a.get('text', ''))[:500]}",
        "event": {"dataset": DATASET, "kind": "event", "start": asked_at},
        "aichat": {k: a[k] for k in QUESTION_FIELDS if k in a},
    }
    trace_id = (source.get("trace") or {}).get("id")
    if trace_id:
        doc["trace"] = {"id": trace_id}
    upsert = {**doc, "aichat": {**doc["aichat"], "outcome": "pending"}}
    return EsDocument(index, query_id, doc, op="update", upsert=upsert)


@dataclass
class Plan:
    updates: list[EsDocument]
    states: dict[str, AnswerState]
    feedback: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (result, query id)


class SummaryBuilder:
    """Summaries of the queries whose events pass through one shipper."""

    def __init__(self, prefix: str, *, max_open: int = 10_000) -> None:
        self.index = summary_index(prefix)
        self.max_open = max_open
        self._open: OrderedDict[str, AnswerState] = OrderedDict()

    def __len__(self) -> int:
        return len(self._open)

    def missing(self, docs: Sequence[EsDocument]) -> list[str]:
        """Summaries to read (realtime) before planning ``docs``: open queries not in memory,
        and every cancelled query (its write is conditional on what it reads)."""
        ids = {q for q in (_answer_query_id(d) for d in docs) if q is not None and q not in self._open}
        ids.update(q for q in (_cancelled_query_id(d) for d in docs) if q is not None)
        ids.update(q for q in (feedback.feedback_query_id(d) for d in docs) if q is not None)
        return sorted(ids)

    def plan(self, docs: Sequence[EsDocument], stored: Mapping[str, StoredDocument]) -> Plan:
        """The summary updates for ``docs`` (shipped documents); memory is not touched (pure).

        Cancellations come first in the plan: their condition is the summary as read
        before this batch, which the batch's own updates would otherwise change.
        """
        cancels: list[EsDocument] = []
        updates: list[EsDocument] = []
        states: dict[str, AnswerState] = {}
        changed: list[str] = []
        asked: dict[str, feedback.Owner] = {}  # questions of this batch: whose they are
        for d in docs:
            dataset = d.source.get("event", {}).get("dataset")
            if dataset == "aichat.queries":
                cancelled = _cancelled_query_id(d)
                if cancelled is not None:
                    if all(c.id != cancelled for c in cancels):  # one per query and batch
                        cancels.append(cancel_update(self.index, d.source, stored.get(cancelled)))
                    continue
                update = question_update(self.index, d.source)
                if update is not None:
                    updates.append(update)
                    if (owner := feedback.owner_of(d.source)) is not None:
                        asked[update.id] = owner
                continue
            query_id = _answer_query_id(d)
            if query_id is None:
                continue
            state = states.get(query_id)
            if state is None:
                known = self._open.get(query_id)
                if known is not None:
                    state = dataclasses.replace(known)
                elif query_id in stored:
                    state = AnswerState.from_source(query_id, stored[query_id].source)
                else:
                    state = AnswerState(query_id)
                states[query_id] = state
            if state.fold(d.source.get("aichat") or {}, d.source.get("@timestamp"),
                          (d.source.get("trace") or {}).get("id")) and query_id not in changed:
                changed.append(query_id)
        updates.extend(states[q].update(self.index) for q in changed)
        rated, results = feedback.plan_feedback(self.index, docs, stored, asked)  # after the questions
        return Plan([*cancels, *updates, *rated], {q: states[q] for q in changed}, results)

    def commit(self, plan: Plan) -> None:
        """Elasticsearch took the plan's updates: remember open queries, forget finished ones."""
        feedback.count(plan.feedback)
        for query_id, state in plan.states.items():
            if state.finished:
                self._open.pop(query_id, None)
                SHIPPER_SUMMARIES.labels(state.outcome if state.outcome == "done" else "error").inc()
                continue
            self._open[query_id] = state
            self._open.move_to_end(query_id)
        while len(self._open) > self.max_open:
            self._open.popitem(last=False)


def _is_cancellation(source: Mapping[str, Any]) -> bool:
    return (source.get("aichat") or {}).get("type") == "query_cancelled"


def _cancelled_query_id(doc: EsDocument) -> str | None:
    if doc.source.get("event", {}).get("dataset") != "aichat.queries" or not _is_cancellation(doc.source):
        return None
    query_id = (doc.source.get("aichat") or {}).get("query_id")
    return query_id if isinstance(query_id, str) and query_id else None


def _answer_query_id(doc: EsDocument) -> str | None:
    if doc.source.get("event", {}).get("dataset") != "aichat.answers":
        return None
    query_id = (doc.source.get("aichat") or {}).get("query_id")
    return query_id if isinstance(query_id, str) and query_id else None
