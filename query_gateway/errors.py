"""Errors of the gateway; each ``code`` is what the client sees in an ``error`` frame.

    GatewayError                 root; code "internal"
    ├── FrameRefused             a client frame was refused; the connection stays open
    │   ├── BadFrame             "bad_json": not JSON, not an object, or a binary frame
    │   ├── UnknownType          "unknown_type": ``type`` is not query / cancel / ping
    │   ├── FrameTooLarge        "frame_too_large": over ``max_frame_bytes``
    │   ├── InvalidQuery         "invalid_query": empty text, top_k out of range, bad filters, bad id
    │   ├── QueryTooLong         "query_too_long": text over ``max_query_chars``
    │   ├── TooManyInflight      "too_many_inflight": over ``max_inflight_per_connection``
    │   ├── DuplicateId          "duplicate_id": that client id is still in flight
    │   ├── UnknownId            "unknown_id": cancel of an id that is not in flight
    │   └── ShuttingDown         "shutting_down": the replica is draining; reconnect (retriable)
    ├── KafkaUnavailable         "kafka_unavailable": the query could not be published (retriable)
    ├── DeadlineExceeded         "deadline_exceeded": no final answer event by the deadline
    ├── Cancelled                "cancelled": the client cancelled the query
    └── GatewayUnreachable       "unreachable": (client side) no connection, or it closed mid-answer

``retriable`` says whether sending the same frame again later may succeed.
"""

from __future__ import annotations


class GatewayError(Exception):
    code: str = "internal"
    retriable: bool = False

    def __init__(self, message: str, *, client_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.client_id = client_id


class FrameRefused(GatewayError):
    code = "bad_frame"


class BadFrame(FrameRefused):
    code = "bad_json"


class UnknownType(FrameRefused):
    code = "unknown_type"


class FrameTooLarge(FrameRefused):
    code = "frame_too_large"


class InvalidQuery(FrameRefused):
    code = "invalid_query"


class QueryTooLong(FrameRefused):
    code = "query_too_long"


class TooManyInflight(FrameRefused):
    code = "too_many_inflight"
    retriable = True


class DuplicateId(FrameRefused):
    code = "duplicate_id"


class UnknownId(FrameRefused):
    code = "unknown_id"


class ShuttingDown(FrameRefused):
    code = "shutting_down"
    retriable = True


class KafkaUnavailable(GatewayError):
    code = "kafka_unavailable"
    retriable = True


class DeadlineExceeded(GatewayError):
    code = "deadline_exceeded"
    retriable = True


class Cancelled(GatewayError):
    code = "cancelled"


class GatewayUnreachable(GatewayError):
    code = "unreachable"
    retriable = True
