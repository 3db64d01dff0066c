"""The websocket protocol: client frames in (validated), server frames out.

Client → server (JSON text frames)::

    {"type": "query", "id": "q1", "text": "…", "top_k": 5, "filters": {"lang": "en"}}
    {"type": "cancel", "id": "q1"}
    {"type": "ping"}
    {"type": "history", "id": "h1", "conversation_id": "…"}

A query may name the ``conversation_id`` it continues; without one the gateway starts a
conversation, and ``ack`` says which. ``history`` answers with the caller's own turns
(query_gateway/history.py).

A query frame may carry ``"variant"`` only where the operator allows it
(query_gateway/experiments.py). ``{"type": "feedback", "id": "f1", "query_id": "…",
"rating": 1 | -1, "comment": "…"}`` rates one of the caller's own answered questions
(query_gateway/feedback.py); it is answered with ``feedback_ack``.

Server → client, per client ``id``: ``ack`` (with the ``query_id``), ``sources``,
many ``token`` (``delta``), then ``done`` (``timings_ms``) or ``error`` (``code``,
``message``, ``error_id``, and ``retry_after`` in seconds for ``rate_limited``);
``pong`` answers ``ping``. An ``error`` with ``"id": null`` concerns the whole
session (e.g. ``token_expired`` just before the server closes it).

Close codes the server uses: 1000 normal, 1009 frame over 1 MiB, 1011 keepalive
ping timeout, 1012 the replica restarts (reconnect), 4401 token expired,
4408 slow client (frames not read in time), 4410 idle (no frame for
``ws_idle_timeout_s``); the close reason is the error code.

What a refusal repeats of the client's frame (a type, an id, a filter key) is an
:func:`~query_gateway.refusals.excerpt`: a short prefix, control characters escaped.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)

from query_gateway.errors import (
    BadFrame,
    FrameTooLarge,
    GatewayError,
    InvalidQuery,
    QueryTooLong,
    UnknownType,
)
from query_gateway.refusals import excerpt
from schemas.codec import load_object
from schemas.conversations import ConversationId
from schemas.errors import NotAJsonObject
from schemas.events import TOP_K_MAX, AnswerEvent, FollowUp, Source
from schemas.feedback import MAX_COMMENT_CHARS

#: validation problems named in one ``invalid_query`` message, at most
MAX_PROBLEMS = 5

ClientId = Annotated[str, StringConstraints(min_length=1, max_length=128)]
FilterKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]
FilterValue = Annotated[str, StringConstraints(max_length=256)] | int | float | bool


class _Frame(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class QueryFrame(_Frame):
    type: Literal["query"]
    id: ClientId
    text: str
    top_k: int = Field(5, ge=1, le=TOP_K_MAX)
    filters: dict[FilterKey, FilterValue] = Field(default_factory=dict, max_length=32)
    conversation_id: ConversationId | None = None
    variant: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None


class CancelFrame(_Frame):
    type: Literal["cancel"]
    id: ClientId


class PingFrame(_Frame):
    type: Literal["ping"]


class HistoryFrame(_Frame):
    type: Literal["history"]
    id: ClientId
    conversation_id: ConversationId


class FeedbackFrame(_Frame):
    type: Literal["feedback"]
    id: ClientId
    query_id: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    rating: Literal[1, -1]
    comment: str = Field("", max_length=MAX_COMMENT_CHARS)

    @field_validator("rating", mode="before")
    @classmethod
    def _integer(cls, value: object) -> object:
        if type(value) is not int:  # not true/false, not 1.0
            raise ValueError("rating must be the integer 1 or -1")
        return value


ClientFrame = QueryFrame | CancelFrame | PingFrame | HistoryFrame | FeedbackFrame

_FRAMES: dict[str, type[QueryFrame] | type[CancelFrame] | type[PingFrame] | type[HistoryFrame]
              | type[FeedbackFrame]] = {
    "query": QueryFrame,
    "cancel": CancelFrame,
    "ping": PingFrame,
    "history": HistoryFrame,
    "feedback": FeedbackFrame,
}


def parse_frame(raw: str | bytes, *, max_frame_bytes: int, max_query_chars: int) -> ClientFrame:
    """Validate one client frame; raise a :class:`FrameRefused` child naming the problem."""
    if isinstance(raw, bytes):
        raise BadFrame("binary frames are not supported: send JSON text frames")
    size = len(raw.encode("utf-8", errors="replace"))
    if size > max_frame_bytes:
        raise FrameTooLarge(f"frame is {size} bytes; the limit is {max_frame_bytes} bytes")
    try:
        data = load_object(raw, not_json="frame is not valid JSON")
    except NotAJsonObject as exc:
        raise BadFrame(str(exc)) from None
    raw_id = data.get("id")
    client_id = raw_id if isinstance(raw_id, str) and 0 < len(raw_id) <= 128 else None
    kind = data.get("type")
    model = _FRAMES.get(kind) if isinstance(kind, str) else None
    if model is None:
        raise UnknownType(
            f"unknown frame type {excerpt(kind)}: expected one of {', '.join(_FRAMES)}",
            client_id=client_id,
        )
    try:
        frame = model.model_validate(data)
    except ValidationError as exc:
        raise InvalidQuery(f"invalid {kind} frame: {_problems(exc)}", client_id=client_id) from None
    if isinstance(frame, QueryFrame):
        if not frame.text.strip():
            raise InvalidQuery("invalid query frame: text is empty", client_id=client_id)
        if len(frame.text) > max_query_chars:
            raise QueryTooLong(
                f"query text is {len(frame.text)} characters; the limit is {max_query_chars}",
                client_id=client_id,
            )
    return frame


def _problems(exc: ValidationError) -> str:
    """The first problems, each at a location of the client's making (a filter key) shown
    as an excerpt; pydantic's messages hold no input."""
    errors = exc.errors(include_input=False, include_url=False)
    named = [
        f"{'.'.join(excerpt(p, quote=False) for p in err['loc']) or '(frame)'}: {err['msg']}"
        for err in errors[:MAX_PROBLEMS]
    ]
    if len(errors) > MAX_PROBLEMS:
        named.append(f"and {len(errors) - MAX_PROBLEMS} more")
    return "; ".join(named)


# -- server frames -------------------------------------------------------------------------


def dumps(frame: dict[str, Any]) -> str:
    return orjson.dumps(frame).decode("utf-8")


def ack(client_id: str, query_id: str, conversation_id: str | None = None) -> dict[str, Any]:
    frame = {"type": "ack", "id": client_id, "query_id": query_id}
    if conversation_id:
        frame["conversation_id"] = conversation_id
    return frame


def sources(client_id: str, items: list[Source], followup: FollowUp | None = None) -> dict[str, Any]:
    frame: dict[str, Any] = {
        "type": "sources",
        "id": client_id,
        "sources": [s.model_dump(mode="json") for s in items],
    }
    if followup is not None:
        frame["followup"] = followup.model_dump(mode="json")
    return frame


def token(client_id: str, delta: str) -> dict[str, Any]:
    return {"type": "token", "id": client_id, "delta": delta}


def done(client_id: str, timings_ms: dict[str, float], cached: bool = False) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "done", "id": client_id, "timings_ms": timings_ms}
    if cached:  # answered from the answer cache (streams/answer_cache.py)
        frame["cached"] = True
    return frame


def error(client_id: str | None, code: str, message: str, error_id: str) -> dict[str, Any]:
    return {
        "type": "error",
        "id": client_id,
        "code": code,
        "message": message,
        "error_id": error_id,
    }


def error_from(exc: GatewayError, error_id: str, client_id: str | None = None) -> dict[str, Any]:
    frame = error(
        client_id if client_id is not None else exc.client_id, exc.code, exc.message, error_id
    )
    if exc.retry_after is not None:
        frame["retry_after"] = exc.retry_after
    return frame


def new_error_id() -> str:
    """The ``error_id`` of an error frame, also logged with the error: how a report finds its line."""
    return str(uuid.uuid4())


def feedback_ack(client_id: str, query_id: str) -> dict[str, Any]:
    return {"type": "feedback_ack", "id": client_id, "query_id": query_id}


def pong() -> dict[str, Any]:
    return {"type": "pong"}


def answer_frame(client_id: str, event: AnswerEvent) -> dict[str, Any]:
    """The frame a client sees for one answer event (``done`` timings as sent by the answerer)."""
    if event.kind == "sources":
        return sources(client_id, event.sources, event.followup)
    if event.kind == "token":
        return token(client_id, event.delta)
    if event.kind == "done":
        return done(client_id, dict(event.timings_ms), event.cached)
    if event.error is not None:
        return error(client_id, event.error.code, event.error.message, event.error.error_id)
    return error(
        client_id, "answer_failed", "the answerer reported an error without details", event.event_id
    )
