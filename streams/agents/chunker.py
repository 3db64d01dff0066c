"""documents → chunks: split each document version into token-bounded chunks.

Per micro-batch of document events:

* an upsert becomes its chunks (``streams/chunking``), each carrying the document's
  metadata plus ``heading_path``, its content hash and ``published_at`` (the start
  of the freshness clock);
* a delete becomes one ``op="delete"`` marker, in order behind earlier chunks;
* an upsert whose content hash equals the indexed version's becomes one
  ``op="unchanged"`` marker instead of chunks, so it is not embedded again — but
  only when nothing this worker sent for the document is still in flight (the last
  version it forwarded is already the indexed one); after a restart it cannot know,
  and re-embeds once;
* an upsert that splits into more than ``max_chunks_per_document`` chunks goes to the
  dead-letter topic whole (:class:`TooManyChunks`, naming the count, the limit and the
  setting) before any of its chunks is sent: nothing of it is indexed, the version
  already in the index stays, and the chunker does not remember it as forwarded. The
  rest of the batch goes on.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict

import faust

from schemas.errors import InvalidEvent
from schemas.events import ChunkEvent, DocKey, DocumentEvent, chunk_uuid
from streams.chunking import TokenCounter, chunk_document, load_token_counter
from streams.dead_letters import dead_letter
from streams.delivery import batch_agent
from streams.docstate import DocState
from streams.incoming import Incoming, decoder
from streams.resources import AgentContext, Need

log = logging.getLogger(__name__)
AGENT = "chunker"
NEEDS: frozenset[Need] = frozenset({"weaviate"})
#: documents whose last forwarded version this worker remembers
FORWARDED_MEMORY = 200_000
#: longer texts are chunked in a thread so the event loop keeps serving Kafka
THREAD_ABOVE_CHARS = 50_000


class TooManyChunks(InvalidEvent):
    """An upsert splits into more chunks than ``max_chunks_per_document`` allows."""

    def __init__(self, doc: DocumentEvent, n_chunks: int, limit: int) -> None:
        super().__init__(
            f"upsert of {doc.doc_id} v{doc.version} splits into {n_chunks} chunks, more than the "
            f"limit of {limit} (AICHAT_MAX_CHUNKS_PER_DOCUMENT): nothing of it was indexed; split "
            "the document or raise the limit"
        )
        self.n_chunks = n_chunks
        self.limit = limit


def make_chunks(
    doc: DocumentEvent, *, counter: TokenCounter, max_tokens: int, overlap_tokens: int,
    max_chunks: int | None = None,
) -> list[ChunkEvent]:
    """The document's chunk events; :class:`TooManyChunks` above ``max_chunks`` (None: no limit)."""
    pieces = chunk_document(
        doc.text,
        counter=counter,
        content_type=doc.content_type,
        max_tokens=max_tokens,
        overlap_tokens=overlap_tokens,
    )
    if not pieces:
        raise InvalidEvent(f"upsert of {doc.doc_id} v{doc.version} has no text to index")
    if max_chunks is not None and len(pieces) > max_chunks:
        raise TooManyChunks(doc, len(pieces), max_chunks)
    return [
        ChunkEvent(
            trace_id=doc.trace_id,
            chunk_id=chunk_uuid(doc.tenant, doc.doc_id, doc.version, piece.seq),
            doc_id=doc.doc_id,
            tenant=doc.tenant,
            version=doc.version,
            seq=piece.seq,
            n_chunks=len(pieces),
            text=piece.text,
            char_start=piece.char_start,
            char_end=piece.char_end,
            title=doc.title,
            source_uri=doc.source_uri,
            metadata=_with_heading(doc, piece.heading_path),
            content_hash=doc.content_hash,
            published_at=doc.produced_at,
        )
        for piece in pieces
    ]


def _with_heading(doc: DocumentEvent, heading_path: tuple[str, ...]) -> dict[str, str | int | float | bool]:
    if not heading_path:
        return dict(doc.metadata)
    return {**doc.metadata, "heading_path": " > ".join(heading_path)}


def marker(doc: DocumentEvent, op: str) -> ChunkEvent:
    return ChunkEvent(
        op=op, trace_id=doc.trace_id, chunk_id=chunk_uuid(doc.tenant, doc.doc_id, doc.version, 0),
        doc_id=doc.doc_id, tenant=doc.tenant, version=doc.version, seq=0, n_chunks=0,
        title=doc.title, source_uri=doc.source_uri, content_hash=doc.content_hash,
        published_at=doc.produced_at,
    )


def is_unchanged(doc: DocumentEvent, state: DocState | None, last_forwarded: int | None) -> bool:
    """Same content as the indexed version, and nothing of this document in flight."""
    return (
        doc.op == "upsert"
        and bool(doc.content_hash)
        and state is not None
        and state.status == "indexed"
        and state.content_hash == doc.content_hash
        and doc.version >= state.version
        and last_forwarded is not None
        and last_forwarded <= state.version
    )


def register(app: faust.App, ctx: AgentContext) -> None:
    settings, store = ctx.settings, ctx.weaviate  # the document states
    # the tokenizer only, no model weights
    counter = load_token_counter(settings.embed_model, settings.model_cache_dir)
    forwarded: OrderedDict[DocKey, int] = OrderedDict()

    def remember(key: DocKey, version: int) -> None:
        forwarded[key] = version
        forwarded.move_to_end(key)
        if len(forwarded) > FORWARDED_MEMORY:
            forwarded.popitem(last=False)

    def chunk(doc: DocumentEvent) -> list[ChunkEvent]:
        return make_chunks(doc, counter=counter, max_tokens=settings.chunk_max_tokens,
                           overlap_tokens=settings.chunk_overlap_tokens,
                           max_chunks=settings.max_chunks_per_document)

    async def chunks_of(doc: DocumentEvent) -> list[ChunkEvent]:
        if len(doc.text) > THREAD_ABOVE_CHARS:
            return await asyncio.to_thread(chunk, doc)
        return chunk(doc)

    async def handle(batch: list[tuple[Incoming, DocumentEvent]]) -> None:
        states = await store.registry.get(doc.doc_key for _, doc in batch)
        futures = []
        for msg, doc in batch:
            if doc.op == "delete":
                out = [marker(doc, "delete")]
            elif is_unchanged(doc, states.get(doc.doc_key), forwarded.get(doc.doc_key)):
                out = [marker(doc, "unchanged")]
            else:
                try:
                    out = await chunks_of(doc)
                except TooManyChunks as exc:
                    # refused alone, here: raising would re-run the whole batch one by one
                    # (and chunk this large document twice); nothing of it was sent
                    await dead_letter(ctx, AGENT, msg, exc)
                    continue
            futures.extend([await ctx.send(AGENT, ctx.topics.chunks, doc.kafka_key, c) for c in out])
            remember(doc.doc_key, doc.version)
            log.debug("%s v%d → %d chunk events (%s)", doc.kafka_key, doc.version, len(out), out[0].op,
                      extra={"doc_id": doc.doc_id, "tenant": doc.tenant, "trace_id": doc.trace_id})
        await ctx.delivered(futures)

    body = batch_agent(ctx, AGENT, decoder(DocumentEvent), handle,
                       max_size=settings.batch_max_events, within_s=settings.batch_max_wait_ms / 1000)
    app.agent(ctx.topics.documents, name=AGENT, concurrency=1)(body)
