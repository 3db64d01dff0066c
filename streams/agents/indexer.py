"""embeddings → Weaviate, exactly: versions win over arrival order, deletes remove all.

All events of a document travel on one partition, in order, so the last chunk
(``seq == n_chunks - 1``) of version N arrives after every earlier chunk of it.
Per micro-batch the indexer

1. reads the documents' states (streams/docstate.py) and *plans* each event:
   stale (an indexed newer version, or a delete at least as new, exists) → ignored;
   chunk → upserted; last chunk → version N complete; delete; unchanged;
2. upserts every chunk of the batch in one Weaviate batch (ids are deterministic,
   so a replay overwrites itself);
3. for each completed version removes the chunks of versions < N (new chunks are
   written first, so the document never disappears), for each delete removes the
   chunks of versions ≤ N: one call per finished version, up to ``DELETE_CONCURRENCY``
   at once (each removes a set of one document's older versions, written before, so
   their order does not matter; one call per document keeps each removal within its
   (tenant, doc_id) and its count exact);
4. records the new states and emits one ``DocumentIndexed`` per finished version,
   with its publish-to-searchable latency. The sends are returned unawaited: with
   ``batch_pipeline_depth`` 2 they are delivered while the next batch runs, and the
   batch is acked after them (streams/pipeline.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Literal

import faust

from schemas.codec import unpack_vector
from schemas.events import DocKey, DocumentIndexed, EmbeddedChunk
from streams.dead_letters import dead_letter
from streams.delivery import batch_agent
from streams.docstate import DocState
from streams.errors import EffectFailed
from streams.incoming import Incoming, decoder
from streams.metrics import FRESHNESS_SECONDS, UPSERT_SECONDS
from streams.pipeline import Deliveries
from streams.resources import AgentContext, Need
from streams.vectorstore import ChunkVector

log = logging.getLogger(__name__)
AGENT = "indexer"
NEEDS: frozenset[Need] = frozenset({"weaviate"})
Outcome = Literal["indexed", "deleted", "stale", "unchanged"]
#: Weaviate deletes of one batch in flight at once (one per finished version)
DELETE_CONCURRENCY = 8


@dataclass(frozen=True, slots=True)
class Finish:
    outcome: Outcome
    chunk: EmbeddedChunk  # the last chunk, delete or unchanged marker of the version
    msg: Incoming | None = None


@dataclass
class Plan:
    upserts: list[tuple[EmbeddedChunk, Incoming | None]] = field(default_factory=list)
    finished: list[Finish] = field(default_factory=list)
    rejected: list[tuple[Incoming | None, str]] = field(default_factory=list)


def plan_batch(
    batch: Sequence[tuple[Incoming | None, EmbeddedChunk]],
    states: dict[DocKey, DocState],
    now: datetime,
) -> Plan:
    """Decide what each event does, given the documents' states before the batch (pure).

    States are keyed by (tenant, doc_id): one tenant's versions never make another
    tenant's document with the same ``doc_id`` stale.
    """
    plan = Plan()
    current = dict(states)
    for msg, chunk in batch:
        state = current.get(chunk.doc_key)
        last = chunk.op != "upsert" or chunk.seq == chunk.n_chunks - 1
        if state is not None and state.supersedes(chunk.version):
            if last:
                plan.finished.append(Finish("stale", chunk, msg))
            continue
        if (chunk.op == "upsert" and state is not None and state.version == chunk.version
                and state.status == "indexed" and state.content_hash and chunk.content_hash
                and state.content_hash != chunk.content_hash):
            if last:  # one dead letter per version, not per chunk
                plan.rejected.append(
                    (msg, f"version {chunk.version} of {chunk.kafka_key} is already indexed with "
                          "other content (a different content hash): publish the change as a "
                          "higher version")
                )
            continue
        if chunk.op == "upsert":
            plan.upserts.append((chunk, msg))
            if last:
                plan.finished.append(Finish("indexed", chunk, msg))
                current[chunk.doc_key] = _state(chunk, "indexed", now)
        elif chunk.op == "delete":
            plan.finished.append(Finish("deleted", chunk, msg))
            current[chunk.doc_key] = _state(chunk, "deleted", now)
        elif state is not None and state.status == "indexed" and state.content_hash == chunk.content_hash:
            plan.finished.append(Finish("unchanged", chunk, msg))
            current[chunk.doc_key] = replace(state, version=chunk.version, indexed_at=now)
        else:
            plan.rejected.append(
                (msg, f"version {chunk.version} of {chunk.doc_id} was marked unchanged, but the "
                      "index does not hold that content: publish the document again")
            )
    return plan


def _state(chunk: EmbeddedChunk, status: Literal["indexed", "deleted"], now: datetime) -> DocState:
    return DocState(
        doc_id=chunk.doc_id, tenant=chunk.tenant, version=chunk.version, status=status,
        content_hash=chunk.content_hash if status == "indexed" else "",
        n_chunks=chunk.n_chunks if status == "indexed" else 0, indexed_at=now,
    )


def register(app: faust.App, ctx: AgentContext) -> None:
    store = ctx.weaviate

    limit = asyncio.Semaphore(DELETE_CONCURRENCY)

    async def remove(finish: Finish) -> int:
        chunk = finish.chunk
        async with limit:
            if finish.outcome == "indexed":
                return await store.delete_chunks(*chunk.doc_key, versions_below=chunk.version)
            return await store.delete_chunks(*chunk.doc_key, versions_up_to=chunk.version)

    async def handle(batch: list[tuple[Incoming, EmbeddedChunk]]) -> Deliveries:
        now = datetime.now(UTC)
        states = await store.registry.get(chunk.doc_key for _, chunk in batch)
        plan = plan_batch(batch, states, now)
        if plan.upserts:
            items = [ChunkVector(c, unpack_vector(c.vector, c.dim).tolist()) for c, _ in plan.upserts]
            with UPSERT_SECONDS.time():
                await store.upsert(items)
        deleting = [f for f in plan.finished if f.outcome in ("indexed", "deleted")]
        removed = dict(zip(map(id, deleting), await asyncio.gather(*map(remove, deleting)), strict=True))
        new_states: dict[DocKey, DocState] = {}
        acks = []
        for finish in plan.finished:
            chunk = finish.chunk
            if finish.outcome in ("indexed", "deleted"):
                new_states[chunk.doc_key] = _state(chunk, "indexed" if finish.outcome == "indexed" else "deleted", now)
            elif finish.outcome == "unchanged":
                before = new_states.get(chunk.doc_key) or states[chunk.doc_key]
                new_states[chunk.doc_key] = replace(before, version=chunk.version, indexed_at=now)
            acks.append(_ack(finish, removed.get(id(finish), 0)))
        await store.registry.put(list(new_states.values()))
        futures = [await ctx.send(AGENT, ctx.topics.indexed, a.kafka_key, a) for a in acks]
        for ack in acks:
            if ack.freshness_ms is not None and ack.outcome != "stale":
                FRESHNESS_SECONDS.observe(ack.freshness_ms / 1000)
            log.info(
                "%s %s v%d (%d chunks, %d old removed)", ack.outcome, ack.kafka_key, ack.version,
                ack.n_chunks, ack.removed_chunks,
                extra={"doc_id": ack.doc_id, "tenant": ack.tenant, "trace_id": ack.trace_id},
            )
        for msg, reason in plan.rejected:
            if msg is not None:
                await dead_letter(ctx, AGENT, msg, EffectFailed(reason))
        return futures  # delivered before the batch is acked (streams/delivery.py)

    s = ctx.settings
    body = batch_agent(ctx, AGENT, decoder(EmbeddedChunk), handle, max_size=s.batch_max_events,
                       within_s=s.batch_max_wait_ms / 1000, depth=s.batch_pipeline_depth)
    app.agent(ctx.topics.embeddings, name=AGENT, concurrency=1)(body)


def _ack(finish: Finish, removed: int) -> DocumentIndexed:
    chunk = finish.chunk
    indexed_at = datetime.now(UTC)
    freshness = None
    if chunk.published_at is not None:
        freshness = round((indexed_at - chunk.published_at).total_seconds() * 1000, 1)
    return DocumentIndexed(
        trace_id=chunk.trace_id, doc_id=chunk.doc_id, tenant=chunk.tenant, version=chunk.version,
        outcome=finish.outcome, n_chunks=chunk.n_chunks, removed_chunks=removed,
        published_at=chunk.published_at, indexed_at=indexed_at, freshness_ms=freshness,
    )
