"""Retry, backoff and dead letters of every agent (no Kafka: a fake context with a fake clock)."""

from __future__ import annotations

import asyncio
import hashlib
from types import SimpleNamespace
from typing import Any, cast

import pytest
from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError

from schemas.events import DeadLetter, Event
from streams.backoff import Backoff
from streams.dead_letters import MAX_DEAD_LETTER_KEY, MAX_DEAD_LETTER_VALUE, dead_letter
from streams.delivery import process, process_batch
from streams.errors import DependencyUnavailable, EffectFailed
from streams.incoming import Incoming, raw
from streams.metrics import DEAD_LETTERS_DROPPED
from streams.resources import AgentContext


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class FakeContext:
    """What delivery.py and dead_letters.py use of an AgentContext: send, topics.dlq/base_name, retry."""

    def __init__(self, clock: FakeClock, send_errors: list[Exception] | None = None) -> None:
        self.retry = Backoff(first_s=0.2, max_s=10.0, sleep=clock.sleep)
        self.topics = SimpleNamespace(dlq="t.dlq", base_name=lambda n: {"t.dlq": "dlq"}.get(n, n))
        self.sent: list[tuple[str, Event]] = []
        self.send_errors = list(send_errors or [])

    async def send(self, agent: str, topic: Any, key: str, event: Event) -> asyncio.Future[None]:
        if self.send_errors:
            raise self.send_errors.pop(0)
        self.sent.append((key, event))
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut


def _ctx(clock: FakeClock, send_errors: list[Exception] | None = None) -> tuple[AgentContext, FakeContext]:
    fake = FakeContext(clock, send_errors)
    return cast(AgentContext, fake), fake


def _msg(topic: str = "t.documents", offset: int = 7, key: bytes | None = b"acme/1",
         value: bytes | None = b"{}") -> Incoming:
    return Incoming(topic=topic, partition=0, offset=offset, key=key, value=value, timestamp=0.0)


@pytest.mark.parametrize("attempt", [1, 2, 5, 10, 1_000, 1_075, 2_000, 10**6])
def test_the_backoff_delay_is_bounded_for_any_attempt(attempt: int) -> None:
    backoff = Backoff(first_s=0.2, max_s=10.0)
    assert 0 < backoff.delay(attempt) <= 10.0


def test_the_backoff_doubles_then_caps_and_jitter_only_shortens() -> None:
    exact = Backoff(first_s=0.2, max_s=10.0, jitter=0.0)
    assert [exact.delay(a) for a in (1, 2, 3, 6, 7, 50)] == [0.2, 0.4, 0.8, 6.4, 10.0, 10.0]
    jittered = Backoff(first_s=0.2, max_s=10.0, jitter=0.5, rand=lambda: 1.0)
    assert jittered.delay(50) == 5.0  # at most half the delay is taken off
    with pytest.raises(ValueError, match="first_s"):
        Backoff(first_s=0, max_s=1)


async def test_an_outage_longer_than_the_cap_is_retried_until_it_ends() -> None:
    """2,500 retriable failures (hours of outage on a real clock), then success: no crash,
    no dead letter, every wait at most the cap."""
    clock = FakeClock()
    ctx, fake = _ctx(clock)
    failures = 2_500

    async def handler(_: Incoming) -> None:
        nonlocal failures
        if failures:
            failures -= 1
            raise DependencyUnavailable("Weaviate down")

    await process(ctx, "indexer", _msg(), handler)
    assert failures == 0 and fake.sent == []
    assert len(clock.sleeps) == 2_500
    assert max(clock.sleeps) <= 10.0
    assert clock.now > 2_400 * 8.0  # capped at 10 s minus at most 20 % jitter


async def test_a_batch_outage_is_retried_whole_past_2000_attempts() -> None:
    clock = FakeClock()
    ctx, fake = _ctx(clock)
    failures = 2_100
    seen: list[int] = []

    async def handler(batch: list[tuple[Incoming, Incoming]]) -> None:
        nonlocal failures
        if failures:
            failures -= 1
            raise TimeoutError()
        seen.extend(m.offset for m, _ in batch)

    await process_batch(ctx, "shipper", [_msg(offset=i) for i in range(3)], raw, handler)
    assert seen == [0, 1, 2] and fake.sent == []


async def test_a_dead_letter_waits_for_kafka_past_2000_attempts() -> None:
    clock = FakeClock()
    ctx, fake = _ctx(clock, send_errors=[KafkaConnectionError() for _ in range(2_050)])
    await dead_letter(ctx, "chunker", _msg(), EffectFailed("refused"))
    assert len(fake.sent) == 1 and len(clock.sleeps) == 2_050


async def test_a_poison_event_in_a_batch_is_dead_lettered_alone() -> None:
    clock = FakeClock()
    ctx, fake = _ctx(clock)
    written: list[int] = []

    async def handler(batch: list[tuple[Incoming, Incoming]]) -> None:
        if any(m.offset == 2 for m, _ in batch):
            raise EffectFailed("vector length 4, collection has 384")
        written.extend(m.offset for m, _ in batch)

    await process_batch(ctx, "indexer", [_msg(offset=i) for i in range(5)], raw, handler)
    assert written == [0, 1, 3, 4]
    [(_, letter)] = fake.sent
    assert isinstance(letter, DeadLetter)
    assert (letter.offset, letter.error_type) == (2, "EffectFailed")
    assert "vector length 4" in letter.message
    assert clock.sleeps == []  # a refusal is not an outage: nothing was retried


async def test_an_oversized_record_gives_a_bounded_dead_letter() -> None:
    clock = FakeClock()
    ctx, fake = _ctx(clock)
    value = b"x" * (5 * 1024 * 1024)
    key = b"k" * 10_000
    await dead_letter(ctx, "chunker", _msg(key=key, value=value), EffectFailed("too many chunks"))
    [(sent_key, letter)] = fake.sent
    assert isinstance(letter, DeadLetter)
    assert len(letter.value) == MAX_DEAD_LETTER_VALUE and letter.value_truncated
    assert len(sent_key) == MAX_DEAD_LETTER_KEY and letter.key_truncated
    assert (letter.value_bytes, letter.key_bytes) == (len(value), len(key))
    assert letter.value_sha256 == hashlib.sha256(value).hexdigest()
    assert (letter.topic, letter.partition, letter.offset) == ("t.documents", 0, 7)


async def test_kafka_refusing_a_dead_letter_is_not_retried_forever() -> None:
    clock = FakeClock()
    ctx, fake = _ctx(clock, send_errors=[MessageSizeTooLargeError(), MessageSizeTooLargeError()])
    before = DEAD_LETTERS_DROPPED.labels("chunker", "kafka_refused")._value.get()
    await dead_letter(ctx, "chunker", _msg(), EffectFailed("refused"))
    assert fake.sent == [] and clock.sleeps == []
    assert DEAD_LETTERS_DROPPED.labels("chunker", "kafka_refused")._value.get() == before + 1


async def test_kafka_refusing_a_dead_letter_once_sends_it_without_the_value() -> None:
    clock = FakeClock()
    ctx, fake = _ctx(clock, send_errors=[MessageSizeTooLargeError()])
    await dead_letter(ctx, "chunker", _msg(value=b"big"), EffectFailed("refused"))
    [(_, letter)] = fake.sent
    assert isinstance(letter, DeadLetter)
    assert letter.value == "" and letter.value_truncated and letter.value_bytes == 3


async def test_a_dead_letter_is_never_dead_lettered_again() -> None:
    """The shipper also ships dlq: a refused dead letter must not grow a loop of letters."""
    clock = FakeClock()
    ctx, fake = _ctx(clock)

    async def refused(_: Incoming) -> None:
        raise EffectFailed("mapping conflict")

    before = DEAD_LETTERS_DROPPED.labels("shipper", "dead_letter_refused")._value.get()
    await process(ctx, "shipper", _msg(topic="t.dlq"), refused)
    assert fake.sent == []
    assert DEAD_LETTERS_DROPPED.labels("shipper", "dead_letter_refused")._value.get() == before + 1
