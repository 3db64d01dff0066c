"""A small async producer for document events; the CLI uses it too.

    async with DocumentPublisher(settings) as pub:
        await pub.publish(event)        # returns after the broker acknowledged (acks=all)
"""

from __future__ import annotations

import logging
from types import TracebackType

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from ingest.errors import PublishFailed
from schemas.codec import encode
from schemas.events import DocumentEvent
from streams.config import KafkaSettings

log = logging.getLogger(__name__)


class DocumentPublisher:
    def __init__(self, settings: KafkaSettings, *, request_timeout_ms: int = 30_000) -> None:
        self.topic = settings.topic("documents")
        self._producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap,
            acks="all",
            enable_idempotence=True,
            compression_type=None,
            max_request_size=10 * 1024 * 1024,
            request_timeout_ms=request_timeout_ms,
        )
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

    async def __aenter__(self) -> DocumentPublisher:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def publish(self, event: DocumentEvent) -> None:
        """Send one document; returns once the broker acknowledged it."""
        try:
            await self._producer.send_and_wait(self.topic, encode(event), key=event.doc_id.encode())
        except KafkaError as exc:
            raise PublishFailed(f"{event.doc_id}: not acknowledged: {exc}") from exc
        log.debug("published %s v%d", event.doc_id, event.version, extra={"doc_id": event.doc_id})

    async def delete(self, doc_id: str, *, version: int, tenant: str = "default") -> None:
        await self.publish(DocumentEvent(op="delete", doc_id=doc_id, tenant=tenant, version=version))
