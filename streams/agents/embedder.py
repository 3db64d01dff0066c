"""chunks → embeddings: add the model's normalised vector to each chunk."""

from __future__ import annotations

import faust

from schemas.codec import decode, pack_vector
from schemas.events import ChunkEvent, EmbeddedChunk
from streams.context import AgentContext
from streams.metrics import EMBED_SECONDS
from streams.processing import Incoming, per_event_agent

AGENT = "embedder"


def register(app: faust.App, ctx: AgentContext) -> None:
    embedder = ctx.embedder
    assert embedder is not None, "the embedder agent needs a model"

    async def handle(msg: Incoming) -> None:
        chunk = decode(ChunkEvent, msg.value)
        with EMBED_SECONDS.labels(AGENT).time():
            vectors = await embedder.embed([chunk.text])
        embedded = EmbeddedChunk(
            **chunk.model_dump(exclude={"event_id", "produced_at"}),
            vector=pack_vector(vectors[0]),
            dim=embedder.dim,
            model=embedder.model_name,
        )
        await (await ctx.send(AGENT, ctx.topics.embeddings, chunk.doc_id, embedded))

    app.agent(ctx.topics.chunks, name=AGENT, concurrency=1)(per_event_agent(ctx, AGENT, handle))
