"""Errors of the gateway; each ``code`` is what the client sees in an ``error`` frame.

    GatewayError                 root; code "internal"
    ├── HandshakeRefused         the upgrade was refused with an HTTP status (no websocket)
    │   ├── Unauthorized         401 "missing_token" / "invalid_token" / "token_expired"
    │   ├── OriginNotAllowed     403 "origin_not_allowed": the browser page is not allowed
    │   └── TooManyConnections   429 "too_many_connections": the user or the client address
    │       │                    holds its maximum of open websockets on this replica (retriable)
    │       └── GatewayBusy      503 "gateway_busy": this replica holds its maximum in total
    ├── SessionEnded             the server closes an open websocket (after an error frame)
    │   ├── TokenExpired         "token_expired", close code 4401
    │   ├── SlowClient           "slow_client", close code 4408 (frames not read in time)
    │   └── IdleTimeout          "idle_timeout", close code 4410 (no frame, nothing in flight)
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
    """The websocket upgrade is answered with ``status`` and a JSON body naming ``code``
    (or, where the server cannot answer a websocket request with HTTP, closed with
    ``close_code`` and ``code`` as the reason)."""

    status: int = 400
    code = "refused"
    close_code: int = 1008

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


class TooManyConnections(HandshakeRefused):
    """``reason`` names the limit: ``user``, ``client`` or ``total``."""

    status = 429
    code = "too_many_connections"
    close_code = 1013  # try again later
    retriable = True


class GatewayBusy(TooManyConnections):
    status = 503
    code = "gateway_busy"


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


class IdleTimeout(SessionEnded):
    code = "idle_timeout"
    close_code = 4410
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


class AnswerInterrupted(GatewayError):
    """The answerer restarted mid-answer and its second run differs from what the client
    already received (a sampling model): splicing the two would be an answer nobody gave."""

    code = "answer_interrupted"
    retriable = True


class Cancelled(GatewayError):
    code = "cancelled"


class GatewayUnreachable(GatewayError):
    code = "unreachable"
    retriable = True
