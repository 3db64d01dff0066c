"""``DocumentPublisher.publish_many`` over a fake producer: windowing, order, failures."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError, RequestTimedOutError

from ingest.errors import PublishFailed
from ingest.sdk import DocumentPublisher
from schemas.codec import decode
from schemas.events import DocumentEvent
from streams.config import KafkaSettings


class FakeProducer:
    """Acknowledges each send on the next loop turn, unless told to fail it."""

    def __init__(
        self, *, fail_ack: frozenset[str] = frozenset(), fail_send: frozenset[str] = frozenset()
    ) -> None:
        self.fail_ack, self.fail_send = fail_ack, fail_send
        self.sent: list[tuple[str, bytes, bytes]] = []
        self.unacked = 0
        self.max_unacked = 0
        self.started = self.stopped = False
        self.refuse_start = False

    async def start(self) -> None:
        if self.refuse_start:
            raise KafkaConnectionError("no broker")
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    async def send(self, topic: str, value: bytes, key: bytes) -> asyncio.Future[Any]:
        if key.decode() in self.fail_send:
            raise MessageSizeTooLargeError("too big")
        self.sent.append((topic, key, value))
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.unacked += 1
        self.max_unacked = max(self.max_unacked, self.unacked)
        asyncio.get_running_loop().call_soon(self._ack, fut, key.decode())
        return fut

    def _ack(self, fut: asyncio.Future[Any], doc_id: str) -> None:
        self.unacked -= 1
        if doc_id in self.fail_ack:
            fut.set_exception(RequestTimedOutError())
        else:
            fut.set_result(None)


def _events(n: int) -> list[DocumentEvent]:
    return [DocumentEvent(doc_id=f"d{i}", version=i + 1, text=f"text {i}") for i in range(n)]


def _publisher(producer: FakeProducer) -> DocumentPublisher:
    return DocumentPublisher(KafkaSettings(topic_prefix="t."), producer=producer)


async def test_publish_many_keeps_the_window_and_yields_every_document_in_order() -> None:
    producer = FakeProducer()
    events = _events(100)
    async with _publisher(producer) as pub:
        deliveries = [d async for d in pub.publish_many(events, window=8)]
    assert [d.event.doc_id for d in deliveries] == [e.doc_id for e in events]
    assert all(d.ok for d in deliveries)
    assert producer.max_unacked == 8
    assert producer.unacked == 0
    assert producer.started and producer.stopped
    topic, key, value = producer.sent[3]
    assert (topic, key) == ("t.documents", b"default/d3")  # a document is (tenant, doc_id)
    assert decode(DocumentEvent, value) == events[3]


async def test_publish_many_reports_failed_sends_and_acks_and_goes_on() -> None:
    producer = FakeProducer(fail_ack=frozenset({"default/d2"}), fail_send=frozenset({"default/d5"}))

    async def source() -> AsyncIterator[DocumentEvent]:
        for event in _events(8):
            yield event

    async with _publisher(producer) as pub:
        deliveries = [d async for d in pub.publish_many(source(), window=3)]
    failed = {d.event.doc_id: str(d.error) for d in deliveries if not d.ok}
    assert len(deliveries) == 8
    assert set(failed) == {"d2", "d5"}
    assert failed["d2"].startswith("d2: not acknowledged")
    assert failed["d5"].startswith("d5: not sent")
    assert all(isinstance(d.error, PublishFailed) for d in deliveries if not d.ok)


async def test_window_must_be_positive_and_start_failure_is_publish_failed() -> None:
    async with _publisher(FakeProducer()) as pub:
        with pytest.raises(ValueError, match="window"):
            [d async for d in pub.publish_many(_events(1), window=0)]
    producer = FakeProducer()
    producer.refuse_start = True
    with pytest.raises(PublishFailed, match="cannot connect to Kafka"):
        async with _publisher(producer):
            pass
    assert producer.stopped
