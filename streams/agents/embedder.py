"""chunks → embeddings: add the model's normalised vector to each chunk, in micro-batches.

Up to ``embed_max_events`` chunks (or whatever arrived within ``batch_max_wait_ms``)
go through the model in one call, off the event loop; deletes and unchanged markers
pass through without a vector, in order. The window is wider than the other agents'
batches because the model sorts a call's texts by length before cutting them into
``embed_batch_size`` rows: the wider the window, the less padding it computes
(bench/ingest.py measures the model in windows of this size beside one call over
everything). At low rates the time bound keeps batches small.

The handler returns its sends unawaited: with ``batch_pipeline_depth`` 2 the next
batch's inference runs while they are delivered, and a batch is acked only after its
own deliveries and every earlier batch's (streams/pipeline.py).
"""

from __future__ import annotations

import faust

from schemas.codec import pack_vector
from schemas.events import ChunkEvent, EmbeddedChunk
from streams.delivery import batch_agent
from streams.incoming import Incoming, decoder
from streams.metrics import EMBED_SECONDS
from streams.pipeline import Deliveries
from streams.resources import AgentContext, Need

AGENT = "embedder"
NEEDS: frozenset[Need] = frozenset({"model"})


def register(app: faust.App, ctx: AgentContext) -> None:
    embedder = ctx.model

    async def handle(batch: list[tuple[Incoming, ChunkEvent]]) -> Deliveries:
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
        return futures  # delivered before the batch is acked (streams/delivery.py)

    s = ctx.settings
    body = batch_agent(ctx, AGENT, decoder(ChunkEvent), handle, max_size=s.embed_max_events,
                       within_s=s.batch_max_wait_ms / 1000, depth=s.batch_pipeline_depth)
    app.agent(ctx.topics.chunks, name=AGENT, concurrency=1)(body)
