"""every topic → Elasticsearch in bulk, one document per record, ``_id`` = topic-partition-offset.

Records are shipped as they are (undecodable ones too, marked as failures), in
micro-batches of up to ``elastic_bulk_size``: documents, chunks, embeddings
(without vectors), ``indexed`` acknowledgements, queries, answers (every token),
dead letters, ratings (``feedback``), and the processes' own logs (``logs`` topic,
streams/log_producer.py). Beside them, one summary document per query
(streams/summaries.py; ratings merged by streams/feedback.py) is updated in the same
bulk request.

Every bulk item is checked (streams/elastic_sink.py): 429/5xx items are sent again,
an unreachable cluster is retried with capped backoff for as long as it takes
(the shipper's lag grows, nothing is lost, it catches up by itself), and a
refused item fails the batch, which is then re-run one record at a time so only
the record refused alone is dead-lettered, with Elasticsearch's reason. Offsets
advance only after the whole batch is in Elasticsearch.
"""

from __future__ import annotations

import faust

from streams.delivery import batch_agent
from streams.elastic_sink import EventSink
from streams.es_documents import EsDocument, to_document
from streams.incoming import Incoming, raw
from streams.metrics import SHIPPED
from streams.resources import AgentContext, Need
from streams.summaries import SummaryBuilder
from streams.topics import raw_topic

AGENT = "shipper"
NEEDS: frozenset[Need] = frozenset({"elasticsearch"})
SHIPPED_TOPICS = ("documents", "chunks", "embeddings", "indexed", "queries", "answers", "dlq", "logs",
                  "feedback")


async def ship(sink: EventSink, summaries: SummaryBuilder, docs: list[EsDocument]) -> None:
    """One batch: the records' documents and the summaries they change, in one bulk request.

    The summaries' memory advances only after Elasticsearch took everything, so a
    failed batch (retried, or re-run record by record) is planned again from the same state.
    """
    stored = await sink.get_documents(summaries.index, summaries.missing(docs))
    plan = summaries.plan(docs, stored)
    await sink.write([*docs, *plan.updates])
    summaries.commit(plan)
    for doc in docs:
        SHIPPED.labels(doc.source["event"]["dataset"]).inc()
    if plan.updates:
        SHIPPED.labels("aichat.summary").inc(len(plan.updates))


def register(app: faust.App, ctx: AgentContext) -> None:
    sink = ctx.elasticsearch
    prefix = ctx.settings.elastic_index_prefix
    summaries = SummaryBuilder(prefix)

    def document(msg: Incoming) -> EsDocument:
        return to_document(
            prefix=prefix, dataset=ctx.topics.base_name(msg.topic), topic=msg.topic,
            partition=msg.partition, offset=msg.offset, key=msg.key_text,
            timestamp_s=msg.timestamp, value=msg.value,
        )

    async def handle(batch: list[tuple[Incoming, Incoming]]) -> None:
        await ship(sink, summaries, [document(msg) for msg, _ in batch])

    everything = raw_topic(app, *(ctx.topics.names[t] for t in SHIPPED_TOPICS))
    body = batch_agent(ctx, AGENT, raw, handle, max_size=ctx.settings.elastic_bulk_size,
                       within_s=ctx.settings.elastic_bulk_wait_ms / 1000)
    app.agent(everything, name=AGENT, concurrency=1)(body)
