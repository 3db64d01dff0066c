"""Event contracts: one pydantic model per topic (see ARCHITECTURE.md).

Every event carries ``schema_version``, ``event_id``, ``trace_id`` and
``produced_at``. Version rules (``schemas/README.md``): adding an optional field
keeps ``schema_version``; removing or retyping a field raises it, and consumers
dead-letter versions they do not know.

The JSON Schema files in ``schemas/json/`` are generated from these models
(``python -m schemas.generate``); a unit test fails when they drift.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

SCHEMA_VERSION: Literal[1] = 1

#: namespace of deterministic chunk ids: uuid5(CHUNK_NAMESPACE, f"{tenant}/{doc_id}:{version}:{seq}")
CHUNK_NAMESPACE = uuid.UUID("6f1c1f5e-3c1e-4b5e-9a57-2b6f0c0a7e11")

Scalar = str | int | float | bool
Metadata = dict[Annotated[str, StringConstraints(min_length=1, max_length=128)], Scalar]
DocId = Annotated[str, StringConstraints(min_length=1, max_length=512)]
Tenant = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


def utc_now() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return str(uuid.uuid4())


#: Weaviate keeps numbers as doubles: a larger version (a nanosecond timestamp) would be
#: rounded, and "delete versions below N" could then remove what was just written
MAX_VERSION = 2**53 - 1

#: A document is (tenant, doc_id): two tenants may use the same doc_id.
DocKey = tuple[str, str]


def document_key(tenant: str, doc_id: str) -> str:
    """The Kafka key of every event of one document: ``tenant/doc_id``.

    A tenant name holds no ``/`` (``Tenant`` below), so the key is unambiguous; the
    compacted ``documents`` topic keeps the newest event per (tenant, doc_id), and all
    events of one document share a partition.
    """
    return f"{tenant}/{doc_id}"


def chunk_uuid(tenant: str, doc_id: str, version: int, seq: int) -> str:
    """Deterministic chunk id: a replayed chunk overwrites itself, and two tenants'
    documents with the same ``doc_id`` never share an id."""
    return str(uuid.uuid5(CHUNK_NAMESPACE, f"{document_key(tenant, doc_id)}:{version}:{seq}"))


class Event(BaseModel):
    """Fields common to every event."""

    model_config = ConfigDict(extra="ignore", frozen=True, str_strip_whitespace=False)

    schema_version: Literal[1] = SCHEMA_VERSION
    event_id: str = Field(default_factory=new_id, description="UUID of this event")
    trace_id: str = Field(
        default_factory=new_id,
        min_length=1,
        max_length=128,
        description="follows a document or a query through every hop",
    )
    produced_at: datetime = Field(default_factory=utc_now, description="UTC, RFC 3339")


class OfDocument:
    """Mixin of the events that belong to one document: its identity and Kafka key."""

    if TYPE_CHECKING:
        tenant: str
        doc_id: str

    @property
    def doc_key(self) -> DocKey:
        return (self.tenant, self.doc_id)

    @property
    def kafka_key(self) -> str:
        return document_key(self.tenant, self.doc_id)


class DocumentEvent(Event, OfDocument):
    """``documents`` topic, keyed by ``tenant/doc_id`` (:func:`document_key`), compacted:
    the source of truth."""

    op: Literal["upsert", "delete"] = "upsert"
    doc_id: DocId
    tenant: Tenant = "default"
    version: int = Field(
        ge=0, le=MAX_VERSION,
        description="monotonic per document; the higher wins; at most 2^53 - 1 (what every "
        "store holds exactly)",
    )
    title: str = Field("", max_length=1_000)
    text: str = Field("", description="full text; empty for op=delete")
    content_type: str = "text/plain"
    source_uri: str = ""
    metadata: Metadata = Field(default_factory=dict, description="flat, scalar values")
    content_hash: str = Field(
        "",
        max_length=128,
        description="sha256 hex of title + text + metadata, set by the producer; "
        "an upsert whose hash equals the indexed one is not re-embedded",
    )


class ChunkEvent(Event, OfDocument):
    """``chunks`` topic, keyed by ``tenant/doc_id``.

    ``op="delete"`` is the document's delete, and ``op="unchanged"`` a new version
    with the indexed content, travelling in order behind the document's earlier
    chunks (``seq=0``, ``n_chunks=0``, no text) so they can never overtake them.
    """

    op: Literal["upsert", "delete", "unchanged"] = "upsert"
    chunk_id: str
    doc_id: DocId
    tenant: Tenant = "default"
    version: int = Field(ge=0, le=MAX_VERSION)
    seq: int = Field(ge=0)
    n_chunks: int = Field(ge=0)
    text: str = ""
    char_start: int = Field(0, ge=0)
    char_end: int = Field(0, ge=0)
    title: str = ""
    source_uri: str = ""
    metadata: Metadata = Field(default_factory=dict)
    content_hash: str = ""
    published_at: datetime | None = Field(
        None, description="produced_at of the document event: start of the freshness clock"
    )

    @model_validator(mode="after")
    def _upserts_carry_text(self) -> ChunkEvent:
        if self.op == "upsert" and (not self.text or self.n_chunks < 1 or self.seq >= self.n_chunks):
            raise ValueError("an upsert chunk needs text and 0 <= seq < n_chunks")
        return self


class EmbeddedChunk(ChunkEvent):
    """``embeddings`` topic: the chunk plus its vector (little-endian float32, base64).

    A delete passes through with an empty vector (``dim=0``).
    """

    vector: str = Field("", description="base64 of little-endian float32 values")
    dim: int = Field(0, ge=0)
    model: str = ""


class DocumentIndexed(Event, OfDocument):
    """``indexed`` topic, keyed by ``tenant/doc_id``: one per document version the indexer finished.

    ``outcome``: ``indexed`` (searchable now, older versions removed), ``deleted``,
    ``stale`` (a newer version was already indexed: ignored), ``unchanged`` (same
    content hash as the indexed version: not re-embedded).
    """

    doc_id: DocId
    tenant: Tenant = "default"
    version: int = Field(ge=0, le=MAX_VERSION)
    outcome: Literal["indexed", "deleted", "stale", "unchanged"]
    n_chunks: int = Field(0, ge=0)
    removed_chunks: int = Field(0, ge=0, description="chunks of older versions removed")
    published_at: datetime | None = None
    indexed_at: datetime = Field(default_factory=utc_now)
    freshness_ms: float | None = Field(None, description="published_at → indexed_at")


class ReplyRoute(BaseModel):
    """Where the answerer sends the answer events of one query: the asking gateway's partition."""

    model_config = ConfigDict(frozen=True)

    topic: str
    partition: int = Field(ge=0)


#: passages a client may ask for at most: the gateway's cap on a query frame's ``top_k``
#: and the answerer's default ``AICHAT_TOP_K_MAX`` (an event itself may ask for up to 200,
#: for benchmarks that raise the answerer's cap)
TOP_K_MAX = 20


class QueryEvent(Event):
    """``queries`` topic, keyed by ``query_id``."""

    query_id: str = Field(default_factory=new_id)
    session_id: str = ""
    tenant: Tenant = "default"
    user: str = "anonymous"
    text: str = Field(min_length=1, max_length=4_000)
    top_k: int = Field(5, ge=1, le=200)
    filters: dict[Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")], Scalar] = Field(
        default_factory=dict, description="metadata equality filters"
    )
    reply_to: ReplyRoute
    variant: str = "default"
    experiment: str = Field(
        "", max_length=64,
        description="the A/B test that assigned the variant (query_gateway/experiments.py); empty: none")
    deadline: datetime = Field(description="answer by then or end with an error")
    conversation_id: str = Field(
        "", pattern=r"^[A-Za-z0-9_.:-]{0,64}$",
        description="the conversation this question continues (schemas/conversations.py); "
        "empty: it stands alone")


#: Kafka header that marks a record on ``queries`` that is not a ``QueryEvent``
EVENT_TYPE_HEADER = "aichat-event-type"
QUERY_CANCELLED = "query_cancelled"


def cancellation_headers() -> list[tuple[str, bytes]]:
    """The Kafka headers of a ``QueryCancelled`` record."""
    return [(EVENT_TYPE_HEADER, QUERY_CANCELLED.encode())]


CancelReason = Literal["client", "disconnected", "token_expired", "slow_client", "shutdown"]


class QueryCancelled(Event):
    """``queries`` topic, keyed by ``query_id`` (so it follows its query): stop working on it.

    Marked by the header ``aichat-event-type: query_cancelled`` and ``"type"`` in the
    body. The answerer stops generating (or skips the query) and sends nothing more:
    the gateway has already told the client.
    """

    type: Literal["query_cancelled"] = "query_cancelled"
    query_id: str = Field(min_length=1)
    session_id: str = ""
    tenant: Tenant = "default"
    user: str = "anonymous"
    reason: CancelReason = Field(
        description="client: a cancel frame; disconnected: the websocket closed; "
        "token_expired / slow_client: the gateway ended the session; shutdown: replica stopping"
    )


class Source(BaseModel):
    model_config = ConfigDict(frozen=True)

    doc_id: str
    chunk_id: str
    title: str = ""
    score: float
    snippet: str = ""
    source_uri: str = ""


class AnswerError(BaseModel):
    model_config = ConfigDict(frozen=True)

    code: str
    message: str
    error_id: str = Field(default_factory=new_id)


AnswerKind = Literal["sources", "token", "done", "error"]


class FollowUp(BaseModel):
    """How a question of a conversation was searched (on its ``sources`` event)."""

    model_config = ConfigDict(frozen=True)

    method: Literal["offline", "rewrite"]
    turns: int = Field(ge=1, description="earlier turns used")
    rewrite: str = Field("", description="the standalone question the model wrote (method rewrite)")


class AnswerEvent(Event):
    """``answers`` topic, on the partition named by the query's ``reply_to``."""

    query_id: str
    seq: int = Field(ge=0, description="order of this event within the query's answer")
    kind: AnswerKind
    delta: str = ""
    sources: list[Source] = Field(default_factory=list)
    timings_ms: dict[str, float] = Field(default_factory=dict)
    error: AnswerError | None = None
    cached: bool = Field(False, description="done: answered from the answer cache "
                         "(streams/answer_cache.py)")
    followup: FollowUp | None = Field(None, description="sources of a follow-up question")


class DeadLetter(Event):
    """``dlq`` topic: an input that could not be processed, and why.

    It keeps bounded prefixes of the record (the record itself stays in its topic by
    retention, at the offset given), with the sizes and a hash to find and compare it.
    """

    topic: str
    partition: int
    offset: int
    key: str | None = Field(None, description="original key, UTF-8 (invalid bytes replaced), cut at 1 KiB")
    key_truncated: bool = False
    key_bytes: int = Field(0, ge=0, description="size of the original key")
    value: str = Field(description="original value, UTF-8 (invalid bytes replaced), cut at 64 KiB")
    value_truncated: bool = False
    value_bytes: int = Field(0, ge=0, description="size of the original value")
    value_sha256: str = Field("", description="sha256 hex of the original value")
    agent: str
    error_type: str
    message: str


#: topic name (without prefix) → event model carried on it
TOPIC_EVENTS: dict[str, type[Event]] = {
    "documents": DocumentEvent,
    "chunks": ChunkEvent,
    "embeddings": EmbeddedChunk,
    "queries": QueryEvent,
    "answers": AnswerEvent,
    "dlq": DeadLetter,
    "indexed": DocumentIndexed,
}
