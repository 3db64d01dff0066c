"""Events the gateway produces besides ``QueryEvent``: the contract lives in ``schemas``.

``QueryCancelled`` goes onto the ``queries`` topic, keyed by ``query_id`` like the
query itself, so it lands on the same partition, after the query, with the Kafka
header ``aichat-event-type: query_cancelled``; the answerer stops that query.
"""

from __future__ import annotations

from schemas.events import EVENT_TYPE_HEADER, QUERY_CANCELLED, CancelReason, QueryCancelled

__all__ = ["EVENT_TYPE_HEADER", "QUERY_CANCELLED", "CancelReason", "QueryCancelled", "headers"]


def headers() -> list[tuple[str, bytes]]:
    """The Kafka headers of a ``QueryCancelled`` record."""
    return [(EVENT_TYPE_HEADER, QUERY_CANCELLED.encode())]
