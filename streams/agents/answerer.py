"""queries → answers: embed the question, hybrid search, generate, stream back.

Per query the asking gateway receives, on its own reply partition: one
``sources`` event, ``token`` events, then ``done`` with timings — or one
``error`` event with a code. A query past its deadline ends with an error,
never silence.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import faust

from schemas.codec import decode
from schemas.events import (
    AnswerError,
    AnswerEvent,
    AnswerKind,
    QueryEvent,
    Source,
)
from streams.answer_cache_agent import answer_cache
from streams.delivery import concurrent_queries
from streams.deltas import coalesce
from streams.dialogue import Conversations
from streams.errors import DependencyUnavailable, EffectFailed, ModelMismatch
from streams.followups import SearchPlan
from streams.generation import Generator
from streams.incoming import Incoming
from streams.metrics import ANSWER_SECONDS
from streams.passages import Passage
from streams.resources import AgentContext, Need
from streams.retrieval import Retrieved, Retriever

log = logging.getLogger(__name__)
AGENT = "answerer"
NEEDS: frozenset[Need] = frozenset({"model", "weaviate"})
SNIPPET_CHARS = 240
#: what answer_query hands the conversation before ``done``: the search and the answer text
BeforeDone = Callable[[Retrieved, str], Awaitable[None]]


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


async def answer_query(
    query: QueryEvent,
    reply: _Reply,
    retriever: Retriever,
    generator: Generator,
    started: float,
    *,
    token_interval_s: float,
    plan: SearchPlan | None = None,
    before_done: BeforeDone | None = None,
) -> dict[str, float]:
    """Retrieve, send the sources, stream the generated text, send ``done``; the timings.

    The generator's deltas go through :func:`~streams.deltas.coalesce`: the first at
    once, then at most one ``token`` event per ``token_interval_s``, whatever the
    generator (an extractive answer is one or two events; an LLM still streams).
    A follow-up's ``plan`` says what to search (streams/dialogue.py); ``before_done`` gets
    the search and the answer text before ``done`` goes out (the conversation's turn)."""
    found = await (retriever.retrieve(query) if plan is None else retriever.retrieve(query, plan))
    timings = {"embed": found.embed_ms, "search": found.search_ms}
    await reply.emit("sources", sources=to_sources(found.passages),
                     followup=plan.followup if plan is not None else None)
    t = time.perf_counter()
    answer: list[str] = []
    deltas = coalesce(generator.generate(query.text, found.passages), token_interval_s)
    async with contextlib.aclosing(deltas):
        async for delta in deltas:
            if "first_token" not in timings:
                timings["first_token"] = _ms_since(started)
            answer.append(delta)
            await reply.emit("token", delta=delta)
    timings["generate"] = _ms_since(t)
    if before_done is not None:
        await before_done(found, "".join(answer))
    timings["total"] = _ms_since(started)
    await reply.emit("done", timings_ms=timings)
    return timings


def register(app: faust.App, ctx: AgentContext) -> None:
    settings = ctx.settings
    retriever = Retriever(ctx.model, ctx.weaviate, settings)
    conversations = Conversations(settings, ctx.model)
    app.task(_keep_started(conversations))
    cached = answer_cache(app, ctx)  # streams/answer_cache_agent.py: off without a Redis URL

    interval_s = settings.answer_token_interval_ms / 1000

    async def handle(msg: Incoming) -> None:
        query = decode(QueryEvent, msg.value)
        reply = _Reply(ctx, query)
        started = time.perf_counter()
        remaining = (query.deadline - datetime.now(UTC)).total_seconds()
        outcome = "done"
        asked_at = datetime.now(UTC)
        try:
            if remaining <= 0:
                raise TimeoutError
            async with asyncio.timeout(remaining):
                turns = await conversations.earlier(query)
                plan = await conversations.plan(query, turns)

                async def record(found: Retrieved, text: str) -> None:
                    await conversations.record(query, asked_at, found, text, plan)

                looked = await cached.lookup(query, plan)
                if looked.hit is not None:  # no embedding, search or generation
                    timings = await cached.replay(looked.hit, reply, started, record)
                else:
                    timings = await answer_query(
                        query, reply, retriever, ctx.generator, started, token_interval_s=interval_s,
                        plan=plan, before_done=cached.keeping(query, looked, to_sources, record))
        except TimeoutError:
            outcome = "deadline_exceeded"
            await reply.emit("error", error=AnswerError(
                code="deadline_exceeded",
                message="the answer could not be completed before the query's deadline"))
        except ModelMismatch as exc:  # an operator's mistake: say it to the client and the log
            outcome = "misconfigured"
            error = AnswerError(code="misconfigured", message="the search index and the question "
                                "embedding model differ; an operator must re-index")
            log.error("query %s refused (error_id %s): %s", query.query_id, error.error_id, exc,
                      extra={"query_id": query.query_id, "trace_id": query.trace_id,
                             "error_id": error.error_id})
            await reply.emit("error", error=error)
        except DependencyUnavailable as exc:
            # a query is time-bound: say so now instead of retrying past its deadline
            outcome = "unavailable"
            error = AnswerError(code="unavailable", message="search is unavailable, try again shortly")
            log.warning("query %s failed (error_id %s): %s", query.query_id, error.error_id, exc,
                        extra={"query_id": query.query_id, "trace_id": query.trace_id,
                               "error_id": error.error_id})
            await reply.emit("error", error=error)
        await reply.flush()
        ANSWER_SECONDS.labels(outcome).observe(time.perf_counter() - started)
        if outcome == "done":
            log.info("answered %s in %.0f ms", query.query_id, timings["total"],
                     extra={"query_id": query.query_id, "trace_id": query.trace_id})

    app.agent(ctx.topics.queries, name=AGENT, concurrency=1)(
        concurrent_queries(ctx, AGENT, handle, settings.answer_concurrency)
    )


def _keep_started(conversations: Conversations) -> Callable[[], Awaitable[None]]:
    """An app task: the conversations log runs while the app does (started again while
    Kafka is not reachable yet), and stops with it."""
    async def run() -> None:
        try:
            while True:
                try:
                    await conversations.start()
                    break
                except DependencyUnavailable as exc:
                    log.warning("%s; trying again", exc)
                    await asyncio.sleep(1.0)
            await asyncio.Event().wait()
        finally:
            await conversations.stop()

    return run


def _ms_since(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 2)
