"""embeddings → Weaviate: upsert each chunk under its deterministic id."""

from __future__ import annotations

import faust

from schemas.codec import decode, unpack_vector
from schemas.events import EmbeddedChunk
from streams.context import AgentContext
from streams.metrics import UPSERT_SECONDS
from streams.processing import Incoming, per_event_agent
from streams.vectorstore import ChunkVector

AGENT = "indexer"


def register(app: faust.App, ctx: AgentContext) -> None:
    store = ctx.store
    assert store is not None, "the indexer agent needs Weaviate"

    async def handle(msg: Incoming) -> None:
        chunk = decode(EmbeddedChunk, msg.value)
        vector = unpack_vector(chunk.vector, chunk.dim)
        with UPSERT_SECONDS.time():
            await store.upsert([ChunkVector(chunk, vector.tolist())])

    app.agent(ctx.topics.embeddings, name=AGENT, concurrency=1)(per_event_agent(ctx, AGENT, handle))
