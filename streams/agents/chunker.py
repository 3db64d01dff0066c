"""documents → chunks: split each upserted document into overlapping chunks."""

from __future__ import annotations

import logging

import faust

from schemas.codec import decode
from schemas.events import ChunkEvent, DocumentEvent, chunk_uuid
from streams.chunking import chunk_text
from streams.context import AgentContext
from streams.processing import Incoming, per_event_agent

log = logging.getLogger(__name__)
AGENT = "chunker"


def make_chunks(doc: DocumentEvent, *, max_chars: int, overlap_chars: int) -> list[ChunkEvent]:
    pieces = chunk_text(doc.text, max_chars=max_chars, overlap_chars=overlap_chars)
    return [
        ChunkEvent(
            trace_id=doc.trace_id,
            chunk_id=chunk_uuid(doc.doc_id, doc.version, piece.seq),
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
            metadata=doc.metadata,
        )
        for piece in pieces
    ]


def register(app: faust.App, ctx: AgentContext) -> None:
    settings = ctx.settings

    async def handle(msg: Incoming) -> None:
        doc = decode(DocumentEvent, msg.value)
        if doc.op == "delete":
            log.info("delete of %s passed on to the indexer", doc.doc_id, extra={"doc_id": doc.doc_id})
            return  # the skeleton indexes upserts; deletes are handled by the indexer later
        chunks = make_chunks(
            doc, max_chars=settings.chunk_max_chars, overlap_chars=settings.chunk_overlap_chars
        )
        futures = [await ctx.send(AGENT, ctx.topics.chunks, doc.doc_id, c) for c in chunks]
        await ctx.delivered(futures)
        log.info(
            "chunked %s v%d into %d chunks", doc.doc_id, doc.version, len(chunks),
            extra={"doc_id": doc.doc_id, "trace_id": doc.trace_id},
        )

    app.agent(ctx.topics.documents, name=AGENT, concurrency=1)(per_event_agent(ctx, AGENT, handle))
