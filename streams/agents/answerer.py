"""queries → answers: embed the question, hybrid search, generate, stream back.

Per query the asking gateway receives, on its own reply partition: one
``sources`` event, ``token`` events, then ``done`` with timings — or one
``error`` event with a code. A query past its deadline ends with an error,
never silence.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Any

import faust

from schemas.codec import decode
from schemas.events import AnswerError, AnswerEvent, AnswerKind, QueryEvent, Source
from streams.context import AgentContext
from streams.errors import EffectFailed
from streams.generation import Passage
from streams.metrics import ANSWER_SECONDS, EMBED_SECONDS, SEARCH_SECONDS
from streams.processing import Incoming, per_event_agent

log = logging.getLogger(__name__)
AGENT = "answerer"
SNIPPET_CHARS = 240


def to_sources(passages: list[Passage]) -> list[Source]:
    return [
        Source(
            doc_id=p.doc_id,
            chunk_id=p.chunk_id,
            title=p.title,
            score=round(p.score, 6),
            snippet=p.text[:SNIPPET_CHARS],
            source_uri=p.source_uri,
        )
        for p in passages
    ]


class _Reply:
    """Numbers and sends the answer events of one query to its reply partition."""

    def __init__(self, ctx: AgentContext, query: QueryEvent) -> None:
        self.ctx, self.query = ctx, query
        self.seq = 0
        self.pending: list[Awaitable[Any]] = []
        if query.reply_to.topic != ctx.topics.names["answers"]:
            raise EffectFailed(
                f"reply_to topic {query.reply_to.topic!r} is not this deployment's answers topic"
            )

    async def emit(self, kind: AnswerKind, **fields: Any) -> None:
        event = AnswerEvent(
            trace_id=self.query.trace_id,
            query_id=self.query.query_id,
            seq=self.seq,
            kind=kind,
            **fields,
        )
        self.seq += 1
        self.pending.append(
            await self.ctx.send(
                AGENT, self.ctx.topics.answers, self.query.query_id, event,
                partition=self.query.reply_to.partition,
            )
        )

    async def flush(self) -> None:
        await self.ctx.delivered(self.pending)
        self.pending.clear()


def register(app: faust.App, ctx: AgentContext) -> None:
    embedder, store, settings = ctx.embedder, ctx.store, ctx.settings
    assert embedder is not None and store is not None, "the answerer needs a model and Weaviate"

    async def handle(msg: Incoming) -> None:
        query = decode(QueryEvent, msg.value)
        reply = _Reply(ctx, query)
        if query.deadline <= datetime.now(UTC):
            expired = AnswerError(
                code="deadline_exceeded", message="the query expired before it could be answered"
            )
            await reply.emit("error", error=expired)
            await reply.flush()
            ANSWER_SECONDS.labels("expired").observe(0)
            return
        started = time.perf_counter()
        timings: dict[str, float] = {}
        with EMBED_SECONDS.labels(AGENT).time():
            vector = (await embedder.embed([query.text]))[0]
        timings["embed"] = _ms_since(started)
        t = time.perf_counter()
        top_k = min(query.top_k, settings.top_k_max)
        with SEARCH_SECONDS.time():
            passages = await store.hybrid_search(
                query.text, vector.tolist(), tenant=query.tenant, top_k=top_k,
                alpha=settings.hybrid_alpha, filters=query.filters,
            )
        timings["search"] = _ms_since(t)
        await reply.emit("sources", sources=to_sources(passages))
        t = time.perf_counter()
        async for delta in ctx.generator.generate(query.text, passages):
            if "first_token" not in timings:
                timings["first_token"] = _ms_since(started)
            await reply.emit("token", delta=delta)
        timings["generate"] = _ms_since(t)
        timings["total"] = _ms_since(started)
        await reply.emit("done", timings_ms=timings)
        await reply.flush()
        ANSWER_SECONDS.labels("done").observe(timings["total"] / 1000)
        log.info(
            "answered %s with %d sources in %.0f ms", query.query_id, len(passages), timings["total"],
            extra={"query_id": query.query_id, "trace_id": query.trace_id},
        )

    app.agent(ctx.topics.queries, name=AGENT, concurrency=1)(per_event_agent(ctx, AGENT, handle))


def _ms_since(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 2)
