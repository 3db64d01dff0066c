"""The ``conversations`` topic: the turns of one conversation, newest state per key.

One :class:`ConversationRecord` per finished turn, keyed by
:func:`conversation_key` (``tenant/conversation_id/user``) on a compacted topic: Kafka
keeps the newest record per key, so each record carries the conversation's whole
bounded history (the last ``AICHAT_CONVERSATION_MAX_TURNS`` turns), never one turn alone.
The owner is part of the key: two users who send the same ``conversation_id`` have two
conversations, and neither can append to or read the other's.

A conversation id is chosen by the gateway (a UUID) or sent by the client; it holds no
``/``, nor does a tenant, so the key is unambiguous whatever the user's name.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from schemas.events import Event, Tenant

ConversationId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]


def conversation_key(tenant: str, user: str, conversation_id: str) -> str:
    """The Kafka key of a conversation: its owner and its id."""
    return f"{tenant}/{conversation_id}/{user}"


class TurnSource(BaseModel):
    """A source an answer cited: enough to show it again and to search near it."""

    model_config = ConfigDict(frozen=True)

    doc_id: str
    chunk_id: str = ""
    title: str = ""
    score: float = 0.0


class Turn(BaseModel):
    """One question and its answer."""

    model_config = ConfigDict(frozen=True)

    query_id: str
    question: str
    search_text: str = Field("", description="what was searched, when not the question itself "
                             "(a follow-up's standalone rewrite)")
    sources: list[TurnSource] = Field(default_factory=list)
    answer: str = ""
    asked_at: datetime
    answered_at: datetime


class ConversationRecord(Event):
    """``conversations`` topic, keyed by :func:`conversation_key`, compacted."""

    conversation_id: ConversationId
    tenant: Tenant = "default"
    user: str
    turns: list[Turn] = Field(default_factory=list, description="oldest first, bounded")

    @property
    def kafka_key(self) -> str:
        return conversation_key(self.tenant, self.user, self.conversation_id)
