"""The conversations a process knows: a bounded, in-memory view of the ``conversations`` topic.

    answerer: turn done ─► ConversationView.append ─► ConversationRecord ─► conversations (compacted)
    every answer worker and gateway: conversations (all partitions, from the start) ─► ConversationView.apply

Queries are keyed by ``query_id``, so the turns of one conversation land on any answer
worker; rather than key queries by conversation (which would move their cancellations
and every gateway's keying), every process that needs turns reads the *whole* compacted
topic (streams/conversation_log.py). A restarted or new replica rebuilds the view from it.

Bounds: at most ``max_turns`` turns per conversation (the oldest go), turns older than
``ttl_s`` are never returned nor kept, and at most ``max_conversations`` conversations in
memory (the least recently updated go). Isolation: a conversation is found only under
its owner's (tenant, user); another caller with the same id finds nothing, exactly as for
an id that was never used, so an answer cannot tell whether it exists.

No Kafka here: the view is plain data, tested without a broker.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from schemas.conversations import ConversationRecord, Turn, conversation_key
from streams.conversation_settings import ConversationSettings


class ConversationView:
    def __init__(self, *, max_turns: int, ttl_s: float, max_conversations: int) -> None:
        self.max_turns, self.max_conversations = max_turns, max_conversations
        self.ttl = timedelta(seconds=ttl_s)
        self._records: OrderedDict[str, ConversationRecord] = OrderedDict()

    @classmethod
    def from_settings(cls, settings: ConversationSettings) -> ConversationView:
        return cls(max_turns=settings.conversation_max_turns, ttl_s=settings.conversation_ttl_s,
                   max_conversations=settings.conversation_max_cached)

    def __len__(self) -> int:
        return len(self._records)

    def apply(self, key: str, record: ConversationRecord | None, now: datetime | None = None) -> None:
        """A record read from the topic (``None``: a tombstone). A record never replaces a
        newer one of the same key (this process's own write may come back after a newer
        one), and one whose every turn has expired is dropped."""
        if record is None:
            self._records.pop(key, None)
            return
        held = self._records.get(key)
        if held is not None and _newest(held) > _newest(record):
            return
        alive = self._alive(record.turns, now)
        if not alive:
            self._records.pop(key, None)
            return
        if len(alive) != len(record.turns):
            record = record.model_copy(update={"turns": alive})
        self._records[key] = record
        self._records.move_to_end(key)
        while len(self._records) > self.max_conversations:
            self._records.popitem(last=False)

    def turns(self, tenant: str, user: str, conversation_id: str,
              now: datetime | None = None) -> list[Turn]:
        """The caller's own conversation, oldest turn first; ``[]`` for an unknown id, an
        expired one, and someone else's alike."""
        record = self._records.get(conversation_key(tenant, user, conversation_id))
        if record is None:
            return []
        return self._alive(record.turns, now)

    def append(self, tenant: str, user: str, conversation_id: str, turn: Turn,
               now: datetime | None = None) -> ConversationRecord:
        """The conversation with ``turn`` added (bounded, expired turns left out), applied to
        the view; the caller writes it to the topic."""
        earlier = self.turns(tenant, user, conversation_id, now)
        turns = [*[t for t in earlier if t.query_id != turn.query_id], turn][-self.max_turns:]
        record = ConversationRecord(trace_id=turn.query_id, conversation_id=conversation_id,
                                    tenant=tenant, user=user, turns=turns)
        self.apply(record.kafka_key, record, now)
        return record

    def _alive(self, turns: Sequence[Turn], now: datetime | None) -> list[Turn]:
        oldest = (now or datetime.now(UTC)) - self.ttl
        return [t for t in turns if t.answered_at >= oldest][-self.max_turns:]


def _newest(record: ConversationRecord) -> datetime:
    return record.turns[-1].answered_at if record.turns else record.produced_at
