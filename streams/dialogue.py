"""The answerer's side of conversations: earlier turns in, a search plan out, the turn recorded.

    query (conversation_id) ─► earlier(): the view caught up with the topic ─► the caller's turns
        ─► plan(): none (a first turn) | offline | rewrite (falls back to offline) ─► Retriever
        ─► record(): the finished turn ─► conversations topic (acked before ``done`` goes out)

Writing the turn before ``done`` is what lets the next question, on any replica, see it:
the client cannot ask again before ``done``, and by then the turn is in the topic's end
offsets that the next replica's :meth:`ConversationLog.caught_up` waits for. A turn that
cannot be written (Kafka down past its timeout) is logged and counted; the answer still
ends with ``done``.

``AICHAT_FOLLOWUP``: ``auto`` rewrites with the OpenAI-compatible generator's server when
``AICHAT_GENERATOR=openai`` and uses the offline method otherwise (streams/followups.py).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from prometheus_client import Counter

from schemas.conversations import Turn, TurnSource
from schemas.events import QueryEvent
from streams.config import WorkerSettings
from streams.conversation_log import ConversationLog
from streams.conversations import ConversationView
from streams.embedding import Embedder
from streams.errors import DependencyUnavailable
from streams.followups import SearchPlan, offline_plan, rewrite_plan
from streams.retrieval import Retrieved
from streams.rewrite import QuestionRewriter

log = logging.getLogger(__name__)

FOLLOWUPS = Counter("aichat_followups_total", "Questions searched with their conversation, by "
                    "method (offline, rewrite, rewrite_failed: offline after a failed rewrite)",
                    ["method"])
TURNS_LOST = Counter("aichat_conversation_turns_unwritten_total",
                     "Finished turns that could not be written to the conversations topic")


def followup_method(settings: WorkerSettings) -> str:
    """``AICHAT_FOLLOWUP`` with ``auto`` resolved."""
    if settings.followup != "auto":
        return settings.followup
    return "rewrite" if settings.generator == "openai" else "offline"


class Conversations:
    def __init__(self, settings: WorkerSettings, embedder: Embedder,
                 rewriter: QuestionRewriter | None = None) -> None:
        self.settings, self.embedder = settings, embedder
        self.method = followup_method(settings)
        self.view = ConversationView.from_settings(settings)
        self.log = ConversationLog(settings.kafka_bootstrap, settings.topic("conversations"),
                                   self.view, writer=True, client_id="aichat-answerer-conversations")
        if rewriter is None and self.method == "rewrite":
            rewriter = QuestionRewriter(settings, timeout_s=settings.followup_rewrite_timeout_s)
        self.rewriter = rewriter

    async def start(self) -> None:
        await self.log.start()
        if self.rewriter is not None:
            await self.rewriter.start()

    async def stop(self) -> None:
        if self.rewriter is not None:
            await self.rewriter.stop()
        await self.log.stop()

    async def earlier(self, query: QueryEvent) -> list[Turn]:
        """The asker's earlier turns of the query's conversation (``[]`` for none)."""
        if not query.conversation_id:
            return []
        if not await self.log.caught_up(self.settings.conversation_catchup_ms / 1000):
            log.warning("conversation %s: the view is behind the topic; searching with what it has",
                        query.conversation_id, extra={"query_id": query.query_id})
        return self.view.turns(query.tenant, query.user, query.conversation_id)

    async def plan(self, query: QueryEvent, turns: list[Turn]) -> SearchPlan | None:
        s = self.settings
        if not turns or self.method == "off" or s.followup_turns == 0:
            return None
        used = turns[-s.followup_turns:]
        if self.rewriter is not None:
            try:
                rewrite = await self.rewriter.rewrite(query.text, used)
                FOLLOWUPS.labels("rewrite").inc()
                return rewrite_plan(query.text, rewrite, len(used))
            except DependencyUnavailable as exc:
                FOLLOWUPS.labels("rewrite_failed").inc()
                log.warning("query %s: %s; searching with the offline method", query.query_id, exc,
                            extra={"query_id": query.query_id})
        FOLLOWUPS.labels("offline").inc()
        return await offline_plan(query.text, used, self.embedder, n_turns=len(used),
                                  decay=s.followup_decay)

    async def record(self, query: QueryEvent, asked_at: datetime, found: Retrieved,
                     answer: str, plan: SearchPlan | None) -> None:
        if not query.conversation_id:
            return
        rewrite = plan.followup.rewrite if plan is not None and plan.followup is not None else ""
        turn = Turn(query_id=query.query_id, question=query.text, search_text=rewrite,
                    sources=[TurnSource(doc_id=p.doc_id, chunk_id=p.chunk_id, title=p.title,
                                        score=round(p.score, 6)) for p in found.passages],
                    answer=answer, asked_at=asked_at, answered_at=datetime.now(UTC))
        record = self.view.append(query.tenant, query.user, query.conversation_id, turn)
        try:
            await self.log.write(record)
        except DependencyUnavailable as exc:
            TURNS_LOST.inc()
            log.error("conversation %s: turn of %s not written: %s", query.conversation_id,
                      query.query_id, exc, extra={"query_id": query.query_id})

