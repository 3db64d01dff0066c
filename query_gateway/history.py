"""``history`` frames: a caller's own conversation, read from the ``conversations`` topic.

    {"type": "history", "id": "h1", "conversation_id": "c-42"}
    ← {"type": "history", "id": "h1", "conversation_id": "c-42",
       "turns": [{"query_id", "question", "answer", "sources": [{"doc_id", "title", …}],
                  "asked_at", "answered_at"}, …]}                     (oldest first)
    ← {"type": "error", "id": "h1", "code": "unknown_conversation", …}

Each gateway replica reads the whole compacted topic into its own
:class:`~streams.conversations.ConversationView` (no consumer group; streams/conversation_log.py)
and waits, per request, until that view reached what was written before it. A
conversation is found only under the caller's (tenant, user) from the token: someone
else's id gets the same ``unknown_conversation`` as an id never used, so the answer
says nothing about whether it exists. The bounds (turns, TTL) are the answerer's.

    FrameRefused
    ├── UnknownConversation        "unknown_conversation": none of the caller's (or expired)
    └── ConversationsUnavailable   "conversations_unavailable": the topic cannot be read now (retriable)
"""

from __future__ import annotations

import logging
from typing import Any

from query_gateway.auth import Principal
from query_gateway.config import GatewaySettings
from query_gateway.errors import FrameRefused
from query_gateway.protocol import HistoryFrame
from streams.conversation_log import ConversationLog
from streams.conversations import ConversationView

logger = logging.getLogger(__name__)


class UnknownConversation(FrameRefused):
    code = "unknown_conversation"


class ConversationsUnavailable(FrameRefused):
    code = "conversations_unavailable"
    retriable = True


class History:
    """The replica's view of every conversation, and the ``history`` answers from it."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.view = ConversationView.from_settings(settings)
        self.log = ConversationLog(
            settings.kafka_bootstrap, settings.topic("conversations"), self.view,
            client_id=f"aichat-gateway-{settings.gateway_reply_partition}-conversations",
            timeout_s=settings.kafka_start_timeout_s,
        )

    async def start(self) -> None:
        await self.log.start()

    async def stop(self) -> None:
        await self.log.stop()

    async def answer(self, principal: Principal, frame: HistoryFrame) -> dict[str, Any]:
        if not await self.log.caught_up(self.settings.conversation_catchup_ms / 1000):
            raise ConversationsUnavailable(
                "conversations cannot be read right now: try again shortly", client_id=frame.id)
        turns = self.view.turns(principal.tenant, principal.user, frame.conversation_id)
        if not turns:
            raise UnknownConversation(
                "no conversation with this id for you (it may have expired)", client_id=frame.id)
        return {
            "type": "history",
            "id": frame.id,
            "conversation_id": frame.conversation_id,
            "turns": [t.model_dump(mode="json", exclude={"search_text"}) | (
                {"rewrite": t.search_text} if t.search_text else {}) for t in turns],
        }

