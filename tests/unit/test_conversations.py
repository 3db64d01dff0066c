"""The conversation view: bounds (turns, age, conversations held), owners, newest record wins."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from schemas.codec import decode, encode
from schemas.conversations import ConversationRecord, Turn, TurnSource, conversation_key
from streams.conversation_settings import ConversationSettings
from streams.conversations import ConversationView

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def turn(n: int, at: datetime | None = None) -> Turn:
    when = at or T0 + timedelta(minutes=n)
    return Turn(query_id=f"q{n}", question=f"question {n}", answer=f"answer {n}",
                sources=[TurnSource(doc_id=f"doc{n}", chunk_id=f"c{n}", title="t", score=0.5)],
                asked_at=when - timedelta(seconds=1), answered_at=when)


def view(max_turns: int = 3, ttl_s: float = 3600, max_conversations: int = 10) -> ConversationView:
    return ConversationView(max_turns=max_turns, ttl_s=ttl_s, max_conversations=max_conversations)


def test_turns_are_kept_in_order_and_only_the_last_n() -> None:
    v = view(max_turns=3)
    for n in range(5):
        record = v.append("acme", "alice", "c1", turn(n), now=T0 + timedelta(minutes=5))
    assert [t.query_id for t in record.turns] == ["q2", "q3", "q4"]
    assert [t.question for t in v.turns("acme", "alice", "c1", now=T0 + timedelta(minutes=5))] == [
        "question 2", "question 3", "question 4"]


def test_expired_turns_are_neither_returned_nor_kept() -> None:
    v = view(max_turns=10, ttl_s=600)
    v.append("acme", "alice", "c1", turn(0), now=T0)
    v.append("acme", "alice", "c1", turn(8), now=T0 + timedelta(minutes=8))
    later = T0 + timedelta(minutes=12)  # turn 0 (12 min old) expired, turn 8 (4 min) not
    assert [t.query_id for t in v.turns("acme", "alice", "c1", now=later)] == ["q8"]
    record = v.append("acme", "alice", "c1", turn(12), now=later)
    assert [t.query_id for t in record.turns] == ["q8", "q12"]
    assert v.turns("acme", "alice", "c1", now=T0 + timedelta(hours=2)) == []
    # a record read from the topic whose turns all expired is dropped, not held
    v.apply(record.kafka_key, record, now=T0 + timedelta(hours=2))
    assert len(v) == 0


def test_a_conversation_belongs_to_its_tenant_and_user_only() -> None:
    v = view()
    v.append("acme", "alice", "c1", turn(1), now=T0)
    now = T0 + timedelta(minutes=2)
    assert len(v.turns("acme", "alice", "c1", now=now)) == 1
    assert v.turns("acme", "bob", "c1", now=now) == []      # another user, same id
    assert v.turns("other", "alice", "c1", now=now) == []   # another tenant, same user name
    # bob using alice's id starts his own conversation; hers is untouched
    v.append("acme", "bob", "c1", turn(2), now=now)
    assert [t.query_id for t in v.turns("acme", "alice", "c1", now=now)] == ["q1"]
    assert [t.query_id for t in v.turns("acme", "bob", "c1", now=now)] == ["q2"]
    # a user name with slashes cannot reach into another key
    assert conversation_key("acme", "a/b", "c") != conversation_key("acme", "a", "b/c")


def test_an_older_record_never_replaces_a_newer_one_and_tombstones_delete() -> None:
    v = view()
    v.append("acme", "alice", "c1", turn(1), now=T0)
    newer = v.append("acme", "alice", "c1", turn(2), now=T0)
    older = ConversationRecord(conversation_id="c1", tenant="acme", user="alice", turns=[turn(1)])
    v.apply(older.kafka_key, older, now=T0)  # e.g. this process's own earlier write coming back
    assert [t.query_id for t in v.turns("acme", "alice", "c1", now=T0 + timedelta(minutes=3))] == ["q1", "q2"]
    v.apply(newer.kafka_key, None)
    assert v.turns("acme", "alice", "c1", now=T0) == []


def test_the_least_recently_updated_conversations_go_first() -> None:
    v = view(max_conversations=2)
    now = T0 + timedelta(minutes=10)
    for cid in ("a", "b", "c"):
        v.append("acme", "alice", cid, turn(1), now=now)
    assert len(v) == 2
    assert v.turns("acme", "alice", "a", now=now) == []
    assert len(v.turns("acme", "alice", "c", now=now)) == 1


def test_a_record_travels_as_bytes_and_a_turn_replayed_replaces_itself() -> None:
    v = view()
    record = v.append("acme", "alice", "c1", turn(1), now=T0)
    assert decode(ConversationRecord, encode(record)) == record
    again = v.append("acme", "alice", "c1", turn(1), now=T0)  # a redelivered query
    assert [t.query_id for t in again.turns] == ["q1"]


def test_settings_have_aichat_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AICHAT_CONVERSATION_MAX_TURNS", "4")
    monkeypatch.setenv("AICHAT_CONVERSATION_TTL_S", "60")
    monkeypatch.setenv("AICHAT_FOLLOWUP", "off")
    s = ConversationSettings()
    v = ConversationView.from_settings(s)
    assert (v.max_turns, v.ttl, s.followup) == (4, timedelta(seconds=60), "off")
