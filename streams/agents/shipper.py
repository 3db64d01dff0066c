"""every topic → Elasticsearch in bulk, one document per record, ``_id`` = topic-partition-offset.

Records are shipped as they are (undecodable ones too, marked as failures), in
micro-batches of up to ``elastic_bulk_size``. A bulk item refused by Elasticsearch
is isolated and dead-lettered with the reason; 429s and an unreachable cluster are
retried, so while Elasticsearch is down the shipper's lag grows and nothing is lost.
"""

from __future__ import annotations

import faust

from streams.context import AgentContext
from streams.eventlog import to_document
from streams.metrics import SHIPPED
from streams.processing import Incoming, batch_agent, raw
from streams.topics import raw_topic

AGENT = "shipper"
SHIPPED_TOPICS = ("documents", "chunks", "embeddings", "indexed", "queries", "answers", "dlq")


def register(app: faust.App, ctx: AgentContext) -> None:
    sink = ctx.sink
    assert sink is not None, "the shipper needs Elasticsearch"
    prefix = ctx.settings.elastic_index_prefix

    async def handle(batch: list[tuple[Incoming, Incoming]]) -> None:
        docs = []
        for msg, _ in batch:
            docs.append(
                to_document(
                    prefix=prefix, dataset=ctx.topics.base_name(msg.topic), topic=msg.topic,
                    partition=msg.partition, offset=msg.offset, key=msg.key_text,
                    timestamp_s=msg.timestamp, value=msg.value,
                )
            )
        await sink.write(docs)
        for doc in docs:
            SHIPPED.labels(doc.source["event"]["dataset"]).inc()

    everything = raw_topic(app, *(ctx.topics.names[t] for t in SHIPPED_TOPICS))
    body = batch_agent(ctx, AGENT, raw, handle, max_size=ctx.settings.elastic_bulk_size,
                       within_s=ctx.settings.batch_max_wait_ms / 1000)
    app.agent(everything, name=AGENT, concurrency=1)(body)
