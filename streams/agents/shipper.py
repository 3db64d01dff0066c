"""every topic → Elasticsearch, one document per record, ``_id`` = topic-partition-offset."""

from __future__ import annotations

import faust

from streams.context import AgentContext
from streams.eventlog import to_document
from streams.metrics import SHIPPED
from streams.processing import Incoming, per_event_agent
from streams.topics import raw_topic

AGENT = "shipper"
SHIPPED_TOPICS = ("documents", "chunks", "embeddings", "indexed", "queries", "answers", "dlq")


def register(app: faust.App, ctx: AgentContext) -> None:
    sink = ctx.sink
    assert sink is not None, "the shipper needs Elasticsearch"
    prefix = ctx.settings.elastic_index_prefix

    async def handle(msg: Incoming) -> None:
        dataset = ctx.topics.base_name(msg.topic)
        doc = to_document(
            prefix=prefix, dataset=dataset, topic=msg.topic, partition=msg.partition,
            offset=msg.offset, key=msg.key_text, timestamp_s=msg.timestamp, value=msg.value,
        )
        await sink.write([doc])
        SHIPPED.labels(dataset).inc()

    everything = raw_topic(app, *(ctx.topics.names[t] for t in SHIPPED_TOPICS))
    app.agent(everything, name=AGENT, concurrency=1)(per_event_agent(ctx, AGENT, handle))
