"""chunks → embeddings: add the model's normalised vector to each chunk, in micro-batches.

Up to ``batch_max_events`` chunks (or whatever arrived within ``batch_max_wait_ms``)
go through the model in one call, off the event loop; deletes and unchanged markers
pass through without a vector, in order.
"""

from __future__ import annotations

import faust

from schemas.codec import pack_vector
from schemas.events import ChunkEvent, EmbeddedChunk
from streams.context import AgentContext
from streams.metrics import EMBED_SECONDS
from streams.processing import Incoming, batch_agent, decoder

AGENT = "embedder"


def register(app: faust.App, ctx: AgentContext) -> None:
    embedder = ctx.embedder
    assert embedder is not None, "the embedder agent needs a model"

    async def handle(batch: list[tuple[Incoming, ChunkEvent]]) -> None:
        chunks = [chunk for _, chunk in batch]
        texts = [c.text for c in chunks if c.op == "upsert"]
        vectors = iter(())
        if texts:
            with EMBED_SECONDS.labels(AGENT).time():
                vectors = iter(await embedder.embed(texts))
        futures = []
        for chunk in chunks:
            fields = chunk.model_dump(exclude={"event_id", "produced_at"})
            if chunk.op == "upsert":
                fields.update(vector=pack_vector(next(vectors)), dim=embedder.dim, model=embedder.model_name)
            futures.append(await ctx.send(AGENT, ctx.topics.embeddings, chunk.kafka_key, EmbeddedChunk(**fields)))
        await ctx.delivered(futures)

    s = ctx.settings
    body = batch_agent(ctx, AGENT, decoder(ChunkEvent), handle, max_size=s.batch_max_events,
                       within_s=s.batch_max_wait_ms / 1000)
    app.agent(ctx.topics.chunks, name=AGENT, concurrency=1)(body)
