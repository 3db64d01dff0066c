"""Ratings (``feedback`` topic) merged into their question's summary in Elasticsearch.

The shipper ships each ``FeedbackGiven`` record like any other (dataset
``aichat.feedback``) and, in the same bulk request, writes ``aichat.feedback``
(``rating``, ``comment``, ``rated_at``, ``session_id``) into
``<prefix>-summaries/_doc/<query_id>`` — but only when that summary belongs to the
same tenant and user as the rating: the summary read (realtime ``mget``, see
:meth:`~streams.summaries.SummaryBuilder.missing`) or the question shipped in the same
batch says whose question it is. The gateway already refuses ratings of other
users' questions (query_gateway/feedback.py); this holds for any producer.

Outcomes (``aichat_shipper_feedback_total{result}``, counted once Elasticsearch took
the batch): ``merged``; ``not_owner`` (another tenant or user: not merged, logged);
``no_summary`` (the question is not in Elasticsearch: the rating stays in the events
index only, logged); ``invalid`` (no query id or rating). A replayed rating writes the
same values again; a later rating of the same question replaces the earlier one.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from prometheus_client import Counter

from streams.es_documents import EsDocument, StoredDocument

log = logging.getLogger(__name__)

DATASET = "aichat.feedback"

FEEDBACK_MERGED = Counter(
    "aichat_shipper_feedback_total",
    "Ratings from the feedback topic, by what became of them in the summaries",
    ["result"],  # merged | not_owner | no_summary | invalid
)

#: (tenant, user) of a question
Owner = tuple[str, str]


def feedback_query_id(doc: EsDocument) -> str | None:
    """The query a shipped feedback document rates (None: not a rating)."""
    if doc.source.get("event", {}).get("dataset") != DATASET:
        return None
    query_id = (doc.source.get("aichat") or {}).get("query_id")
    return query_id if isinstance(query_id, str) and query_id else None


def owner_of(source: Mapping[str, Any]) -> Owner | None:
    """Whose question a summary (or a shipped query) is; None if it does not say."""
    a = source.get("aichat") or {}
    tenant, user = a.get("tenant"), a.get("user")
    return (tenant, user) if isinstance(tenant, str) and isinstance(user, str) else None


def plan_feedback(
    index: str,
    docs: Sequence[EsDocument],
    stored: Mapping[str, StoredDocument],
    asked: Mapping[str, Owner],
) -> tuple[list[EsDocument], list[tuple[str, str]]]:
    """The summary updates of the ratings among ``docs``, and (result, query id) of each.

    ``stored``: summaries as read before the batch; ``asked``: owners of the questions
    shipped in this same batch (their summaries are written before these updates).
    """
    updates: list[EsDocument] = []
    results: list[tuple[str, str]] = []
    for doc in docs:
        if doc.source.get("event", {}).get("dataset") != DATASET:
            continue
        a = doc.source.get("aichat") or {}
        query_id, rating = feedback_query_id(doc), a.get("rating")
        if query_id is None or rating not in (1, -1):
            results.append(("invalid", query_id or ""))
            continue
        summary = stored.get(query_id)
        owner = asked.get(query_id) or (owner_of(summary.source) if summary is not None else None)
        if owner is None:
            results.append(("no_summary", query_id))
            continue
        if owner != (a.get("tenant"), a.get("user")):
            results.append(("not_owner", query_id))
            continue
        feedback = {"rating": rating, "comment": str(a.get("comment") or ""),
                    "rated_at": a.get("rated_at") or doc.source.get("@timestamp"),
                    "session_id": a.get("session_id") or ""}
        updates.append(EsDocument(index, query_id, {"aichat": {"feedback": feedback}}, op="update"))
        results.append(("merged", query_id))
    return updates, results


def count(results: Sequence[tuple[str, str]]) -> None:
    """After Elasticsearch took the batch: count each rating, log those not merged."""
    for result, query_id in results:
        FEEDBACK_MERGED.labels(result).inc()
        if result != "merged":
            log.warning("rating of query %s not merged into its summary: %s", query_id or "?",
                        result, extra={"query_id": query_id, "trace_id": query_id})
