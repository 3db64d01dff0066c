"""Against the real Kafka: a turn written by one answer worker is seen by another replica —
one reading when it was written, and one started afterwards (a restart rebuilds the view)."""

from __future__ import annotations

from datetime import UTC, datetime

from schemas.conversations import Turn
from streams.config import KafkaSettings
from streams.conversation_log import ConversationLog
from streams.conversations import ConversationView


def view() -> ConversationView:
    return ConversationView(max_turns=5, ttl_s=3600, max_conversations=100)


def turn(n: int) -> Turn:
    now = datetime.now(UTC)
    return Turn(query_id=f"q{n}", question=f"question {n}", answer=f"answer {n}", asked_at=now,
                answered_at=now)


async def test_every_replica_sees_every_turn_of_a_conversation(kafka: KafkaSettings) -> None:
    topic = kafka.topic("conversations")
    writer = ConversationLog(kafka.kafka_bootstrap, topic, view(), writer=True)
    other = ConversationLog(kafka.kafka_bootstrap, topic, view())
    await writer.start()
    await other.start()
    try:
        assert await other.caught_up(10)
        # twenty conversations spread over both partitions, two turns each
        for n in range(20):
            for t in (2 * n, 2 * n + 1):
                await writer.write(writer.view.append("acme", "alice", f"c{n}", turn(t)))
        assert await other.caught_up(10)  # read-your-writes across replicas, no sleep
        for n in range(20):
            assert [t.query_id for t in other.view.turns("acme", "alice", f"c{n}")] == [
                f"q{2 * n}", f"q{2 * n + 1}"]
        assert other.view.turns("acme", "bob", "c0") == []
        late = ConversationLog(kafka.kafka_bootstrap, topic, view())  # a restarted replica
        await late.start()
        try:
            assert await late.caught_up(10)
            assert len(late.view) == 20
            assert [t.answer for t in late.view.turns("acme", "alice", "c7")] == [
                "answer 14", "answer 15"]
        finally:
            await late.stop()
    finally:
        await other.stop()
        await writer.stop()
