"""The answer cache in the answer worker: hits replayed, misses stored, ``indexed`` → invalidation.

:class:`CachedQueries` is the answerer's hook (streams/agents/answerer.py): ``lookup`` before
retrieval; on a hit :meth:`~CachedQueries.replay` sends the same events as a miss — ``sources``,
one ``token`` with the whole answer, ``done`` with ``cached: true`` — without embedding,
searching or generating; a miss's ``before_done`` (:meth:`~CachedQueries.keeping`) stores it
with the version of each source's chunk (streams/answer_cache.py checks them against the
floors).

:func:`register_invalidation` adds the agent ``answer_cache`` on the ``indexed`` topic to the
answer worker's app: the answer workers' consumer group reads each ``DocumentIndexed`` once
and raises the document's floor in the shared Redis, for every replica. A Redis outage
retries the event (streams/delivery.py) rather than dropping an invalidation.

A follow-up's answer depends on the earlier turns: its search plan (what was searched:
the question expanded with the earlier ones, or the model's standalone rewrite) enters the
key (:func:`cache_context`); a first question, or one searched alone, has none. A hit still
records the conversation's turn (``before_done``), from the cached sources.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import faust
import orjson

from schemas.events import DocumentIndexed, QueryEvent, Source
from streams.answer_cache import AnswerCache, CachedAnswer, Cited, entry_digest, floor_of, identity
from streams.delivery import per_event_agent
from streams.incoming import Incoming, decoder
from streams.passages import Passage
from streams.resources import AgentContext
from streams.retrieval import Retrieved

log = logging.getLogger(__name__)
AGENT = "answer_cache"
#: the worker settings an answer depends on (besides the query): in every key
IDENTITY_FIELDS = (
    "weaviate_collection", "embed_query_prompt", "hybrid_alpha", "hybrid_alpha_ko",
    "hybrid_fusion", "top_k_max", "generator", "generator_model", "generator_base_url",
    "generator_max_tokens", "generator_temperature", "answer_min_similarity",
    "followup", "followup_turns", "followup_decay",
)


class Emitter(Protocol):
    async def emit(self, kind: Any, **fields: Any) -> None: ...


#: what the answerer runs before ``done`` (the conversation's turn): the search, the answer text
BeforeDone = Callable[[Retrieved, str], Awaitable[None]]


def cache_context(plan: Any) -> str:
    """What of a conversation a follow-up's answer depends on: its search plan
    (streams/followups.py: the text searched, earlier questions expanded in, or the model's
    standalone rewrite); "" for a question searched on its own (``plan`` None)."""
    if plan is None:
        return ""
    followup = getattr(plan, "followup", None)
    return orjson.dumps([
        getattr(plan, "text", ""), getattr(plan, "language_of", ""),
        getattr(followup, "method", ""), getattr(followup, "turns", 0), getattr(followup, "rewrite", ""),
    ]).decode()


@dataclass(frozen=True, slots=True)
class Lookup:
    digest: str
    hit: CachedAnswer | None
    #: time.monotonic() before the lookup: no search of a miss began earlier
    at: float


class CachedQueries:
    """The answerer's hook: :meth:`lookup`, then :meth:`replay` a hit or :meth:`keeping` a miss."""

    def __init__(self, cache: AnswerCache | None, settings: Any, model_name: str) -> None:
        self.cache = cache  # None: no cache, every lookup a miss that is not stored
        self._top_k_max = int(settings.top_k_max)
        self._identity = identity(settings, IDENTITY_FIELDS, model_name)

    def digest(self, query: QueryEvent, plan: Any = None) -> str:
        top_k = max(1, min(query.top_k, self._top_k_max))
        return entry_digest(query, top_k=top_k, identity=self._identity, context=cache_context(plan))

    async def lookup(self, query: QueryEvent, plan: Any = None) -> Lookup:
        at = time.monotonic()
        if self.cache is None:
            return Lookup("", None, at)
        digest = self.digest(query, plan)
        return Lookup(digest, await self.cache.lookup(query.tenant, digest), at)

    @staticmethod
    async def replay(hit: CachedAnswer, reply: Emitter, started: float,
                     before_done: BeforeDone | None = None) -> dict[str, float]:
        """The events of a miss from the entry: ``sources``, one ``token``, ``done`` (cached)."""
        timings = {"cache": _ms_since(started)}
        await reply.emit("sources", sources=hit.sources)
        timings["first_token"] = _ms_since(started)
        if hit.text:
            await reply.emit("token", delta=hit.text)
        if before_done is not None:
            passages = [Passage(doc_id=s.doc_id, chunk_id=s.chunk_id, title=s.title, text=s.snippet,
                                score=s.score, source_uri=s.source_uri) for s in hit.sources]
            await before_done(Retrieved(passages=passages, alpha=0.0, embed_ms=0.0, search_ms=0.0),
                              hit.text)
        timings["total"] = _ms_since(started)
        await reply.emit("done", timings_ms=timings, cached=True)
        return timings

    def keeping(self, query: QueryEvent, looked: Lookup, sources: Callable[[list[Passage]], list[Source]],
                then: BeforeDone | None = None) -> BeforeDone | None:
        """``before_done`` of a miss: runs ``then``, and stores the answer with the version of
        each source's chunk (not stored when one has none: it could not be checked)."""
        cache = self.cache
        if cache is None:
            return then

        async def keep(found: Retrieved, text: str) -> None:
            if then is not None:
                await then(found, text)
            cited = [Cited(p.doc_id, p.version) for p in found.passages if p.version is not None]
            if len(cited) == len(found.passages):
                await cache.store(query.tenant, looked.digest,
                                       CachedAnswer(sources(found.passages), text), cited,
                                       retrieved_at=looked.at)

        return keep


def answer_cache(app: faust.App, ctx: AgentContext) -> CachedQueries:
    """The answerer's cache: with a Redis URL, its client joins the worker's resources and the
    ``answer_cache`` agent consumes ``indexed``; without one, a cache that never hits."""
    cache = AnswerCache.from_settings(ctx.settings)
    if cache is not None:
        ctx.extra.append(cache)
        register_invalidation(app, ctx, cache)
    return CachedQueries(cache, ctx.settings, ctx.model.model_name)


def register_invalidation(app: faust.App, ctx: AgentContext, cache: AnswerCache) -> None:
    """The ``answer_cache`` agent: each ``DocumentIndexed`` raises its document's floor."""
    decode = decoder(DocumentIndexed)

    async def handle(msg: Incoming) -> None:
        event = decode(msg)
        floor = floor_of(event.outcome, event.version)
        if floor is None:
            return
        removed = await cache.invalidate(event.tenant, event.doc_id, floor)
        if removed:
            log.info("answer cache: %d entries citing %s below v%d removed", removed,
                     event.kafka_key, floor, extra={"doc_id": event.doc_id, "tenant": event.tenant})

    app.agent(ctx.topics.indexed, name=AGENT, concurrency=1)(per_event_agent(ctx, AGENT, handle))


def _ms_since(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 2)
