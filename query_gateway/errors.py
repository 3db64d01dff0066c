"""Errors of the gateway; each ``code`` is what the client sees in an ``error`` frame.

    GatewayError                 root; code "internal"
    ├── HandshakeRefused         the upgrade was refused with an HTTP status (no websocket)
    │   ├── Unauthorized         401 "missing_token" / "invalid_token" / "token_expired"
    │   └── OriginNotAllowed     403 "origin_not_allowed": the browser page is not allowed
    ├── SessionEnded             the server closes an open websocket (after an error frame)
    │   ├── TokenExpired         "token_expired", close code 4401
    │   └── SlowClient           "slow_client", close code 4408 (frames not read in time)
    ├── FrameRefused             a client frame was refused; the connection stays open
    │   ├── BadFrame             "bad_json": not JSON, not an object, or a binary frame
    │   ├── UnknownType          "unknown_type": ``type`` is not query / cancel / ping
    │   ├── FrameTooLarge        "frame_too_large": over ``max_frame_bytes``
    │   ├── InvalidQuery         "invalid_query": empty text, top_k out of range, bad filters, bad id
    │   ├── QueryTooLong         "query_too_long": text over ``max_query_chars``
    │   ├── TooManyInflight      "too_many_inflight": over ``max_inflight_per_connection``
    │   ├── RateLimited          "rate_limited": the user's query budget is spent; ``retry_after`` s
    │   ├── DuplicateId          "duplicate_id": that client id is still in flight
    │   ├── UnknownId            "unknown_id": cancel of an id that is not in flight
    │   └── ShuttingDown         "shutting_down": the replica is draining; reconnect (retriable)
    ├── KafkaUnavailable         "kafka_unavailable": the query could not be published (retriable)
    ├── DeadlineExceeded         "deadline_exceeded": no final answer event by the deadline
    ├── Cancelled                "cancelled": the client cancelled the query
    └── GatewayUnreachable       "unreachable": (client side) no connection, or it closed mid-answer

``retriable`` says whether sending the same frame again later may succeed;
``retry_after`` (seconds), when set, says when.
"""

from __future__ import annotations


class GatewayError(Exception):
    code: str = "internal"
    retriable: bool = False

    def __init__(
        self, message: str, *, client_id: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.client_id = client_id
        self.retry_after = retry_after


class HandshakeRefused(GatewayError):
    """The websocket upgrade is answered with ``status`` and a JSON body naming ``code``."""

    status: int = 400
    code = "refused"

    def __init__(self, message: str, *, code: str | None = None, reason: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        #: low-cardinality label of ``aichat_gateway_auth_refused_total``
        self.reason = reason or self.code


class Unauthorized(HandshakeRefused):
    status = 401
    code = "invalid_token"


class OriginNotAllowed(HandshakeRefused):
    status = 403
    code = "origin_not_allowed"


class SessionEnded(GatewayError):
    """An open session ends: the client gets an ``error`` frame, then this close code."""

    close_code: int = 1011


class TokenExpired(SessionEnded):
    code = "token_expired"
    close_code = 4401
    retriable = True


class SlowClient(SessionEnded):
    code = "slow_client"
    close_code = 4408
    retriable = True


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


class RateLimited(FrameRefused):
    code = "rate_limited"
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
