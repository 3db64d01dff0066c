"""A small async producer for document events; the CLI uses it too.

    async with DocumentPublisher(settings) as pub:
        await pub.publish(event)                  # returns once the broker acknowledged (acks=all)
        async for delivery in pub.publish_many(events, window=256):
            if not delivery.ok:
                print(delivery.error)             # PublishFailed naming the doc_id

``publish_many`` keeps up to ``window`` sends un-acknowledged and awaits them in
order: every document yields one :class:`Delivery`, and only after its broker
acknowledgement (or its failure), so a caller that consumed them all knows each
document's fate. :class:`EventPublisher` is the seam the CLI takes; tests pass an
in-memory one.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, Self

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from ingest.errors import PublishFailed
from schemas.codec import encode
from schemas.events import DocumentEvent
from streams.config import KafkaSettings

log = logging.getLogger(__name__)

DEFAULT_WINDOW = 256
Events = Iterable[DocumentEvent] | AsyncIterable[DocumentEvent]


@dataclass(frozen=True)
class Delivery:
    """One document's outcome: acknowledged, or the error."""

    event: DocumentEvent
    error: PublishFailed | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class EventPublisher(Protocol):
    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def publish_many(
        self, events: Events, *, window: int = DEFAULT_WINDOW
    ) -> AsyncIterator[Delivery]: ...


class DocumentPublisher:
    def __init__(
        self,
        settings: KafkaSettings,
        *,
        request_timeout_ms: int = 30_000,
        producer: Any = None,
    ) -> None:
        """``producer``: an ``AIOKafkaProducer`` look-alike (tests); by default an idempotent
        ``acks=all`` one on ``settings.kafka_bootstrap``."""
        self.topic = settings.topic("documents")
        self._producer = (
            producer
            if producer is not None
            else AIOKafkaProducer(
                bootstrap_servers=settings.kafka_bootstrap,
                acks="all",
                enable_idempotence=True,
                compression_type=None,
                max_request_size=10 * 1024 * 1024,
                request_timeout_ms=request_timeout_ms,
            )
        )
        # aiokafka fails a batch after request_timeout_ms; this only guards against a hang
        self._ack_timeout_s = 2 * request_timeout_ms / 1000 + 5
        self._started = False

    async def start(self) -> None:
        try:
            await self._producer.start()
        except KafkaError as exc:
            await self._producer.stop()
            raise PublishFailed(f"cannot connect to Kafka: {exc}") from exc
        self._started = True

    async def aclose(self) -> None:
        if self._started:
            self._started = False
            await self._producer.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def publish(self, event: DocumentEvent) -> None:
        """Send one document; returns once the broker acknowledged it."""
        try:
            await self._producer.send_and_wait(self.topic, encode(event), key=event.kafka_key.encode())
        except KafkaError as exc:
            raise PublishFailed(f"{event.doc_id}: not acknowledged: {exc}") from exc
        log.debug("published %s v%d", event.kafka_key, event.version,
                  extra={"doc_id": event.doc_id, "tenant": event.tenant})

    async def publish_many(
        self, events: Events, *, window: int = DEFAULT_WINDOW
    ) -> AsyncIterator[Delivery]:
        """Send ``events`` with at most ``window`` un-acknowledged; one :class:`Delivery` each, in order."""
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        pending: deque[tuple[DocumentEvent, asyncio.Future[Any] | PublishFailed]] = deque()
        try:
            async for event in _aiter(events):
                pending.append((event, await self._send(event)))
                if len(pending) >= window:
                    yield await self._settle(*pending.popleft())
            while pending:
                yield await self._settle(*pending.popleft())
        finally:
            for _, sent in pending:  # the caller stopped early: nobody will read these outcomes
                if isinstance(sent, asyncio.Future):
                    sent.add_done_callback(_discard)

    async def delete(self, doc_id: str, *, version: int, tenant: str = "default") -> None:
        await self.publish(
            DocumentEvent(op="delete", doc_id=doc_id, tenant=tenant, version=version)
        )

    async def _send(self, event: DocumentEvent) -> asyncio.Future[Any] | PublishFailed:
        try:
            fut: asyncio.Future[Any] = await self._producer.send(
                self.topic, encode(event), key=event.kafka_key.encode()
            )
        except KafkaError as exc:
            return PublishFailed(f"{event.doc_id}: not sent: {exc}")
        return fut

    async def _settle(
        self, event: DocumentEvent, sent: asyncio.Future[Any] | PublishFailed
    ) -> Delivery:
        if isinstance(sent, PublishFailed):
            return Delivery(event, sent)
        try:
            await asyncio.wait_for(asyncio.shield(sent), self._ack_timeout_s)
        except KafkaError as exc:
            return Delivery(event, PublishFailed(f"{event.doc_id}: not acknowledged: {exc}"))
        except TimeoutError:
            sent.add_done_callback(_discard)
            reason = f"no acknowledgement within {self._ack_timeout_s:.0f}s"
            return Delivery(event, PublishFailed(f"{event.doc_id}: {reason}"))
        log.debug("published %s v%d", event.kafka_key, event.version,
                  extra={"doc_id": event.doc_id, "tenant": event.tenant})
        return Delivery(event)


async def _aiter(events: Events) -> AsyncIterator[DocumentEvent]:
    if isinstance(events, AsyncIterable):
        async for event in events:
            yield event
    else:
        for event in events:
            yield event


def _discard(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()  # mark retrieved: no "exception was never retrieved" at exit
