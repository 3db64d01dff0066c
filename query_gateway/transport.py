"""The seam between connections and Kafka.

A :class:`Transport` publishes queries (and their cancellations) and hands out
answer queues. The app
uses :class:`KafkaTransport` (an idempotent producer for ``queries`` plus an
:class:`~query_gateway.routing.AnswerRouter` on this replica's answers
partition); tests pass an in-process double to ``create_app(..., transport=...)``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from query_gateway.config import GatewaySettings
from query_gateway.errors import KafkaUnavailable
from query_gateway.routing import AnswerQueue, AnswerRouter
from schemas.codec import encode
from schemas.events import QueryCancelled, QueryEvent, cancellation_headers
from schemas.feedback import FeedbackGiven

logger = logging.getLogger(__name__)


class Transport(Protocol):
    async def start(self) -> None:
        """Connect; when it returns, no answer to a query published afterwards can be missed."""

    async def stop(self) -> None:
        """Disconnect; idempotent."""

    def register(self, query_id: str) -> AnswerQueue:
        """The queue that will receive ``query_id``'s answer events (call before :meth:`publish`)."""

    def unregister(self, query_id: str) -> None: ...

    async def publish(self, event: QueryEvent) -> None:
        """Return once the broker acknowledged the query; raise :class:`KafkaUnavailable`."""

    async def cancel(self, event: QueryCancelled) -> None:
        """Tell the answerer to stop a query; raise :class:`KafkaUnavailable`."""

    async def check(self) -> str:
        """Readiness: a short detail when healthy; raise when not."""


class KafkaTransport:
    """Idempotent producer to ``queries`` + answer router on the reply partition."""

    def __init__(self, settings: GatewaySettings) -> None:
        self._settings = settings
        self._producer: AIOKafkaProducer | None = None
        self.router = AnswerRouter(
            bootstrap_servers=settings.kafka_bootstrap,
            topic=settings.answers_topic,
            partition=settings.gateway_reply_partition,
            queue_size=settings.answer_queue_size,
            start_timeout_s=settings.kafka_start_timeout_s,
        )

    async def start(self) -> None:
        s = self._settings
        producer = AIOKafkaProducer(
            bootstrap_servers=s.kafka_bootstrap,
            acks="all",
            enable_idempotence=True,
            client_id=f"aichat-gateway-{s.gateway_reply_partition}",
            request_timeout_ms=int(s.produce_timeout_s * 1000),
        )
        try:
            await asyncio.wait_for(producer.start(), s.kafka_start_timeout_s)
        except (KafkaError, OSError, TimeoutError) as exc:
            await producer.stop()
            raise KafkaUnavailable(
                f"cannot connect to Kafka at {s.kafka_bootstrap}: {exc!r}"
            ) from exc
        self._producer = producer
        try:
            await self.router.start()
        except BaseException:
            await self.stop()
            raise
        logger.info("kafka transport started (queries → %s)", s.queries_topic)

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        await self.router.stop()
        if producer is not None:
            await producer.stop()
            logger.info("kafka transport stopped")

    def register(self, query_id: str) -> AnswerQueue:
        return self.router.register(query_id)

    def unregister(self, query_id: str) -> None:
        self.router.unregister(query_id)

    async def publish(self, event: QueryEvent) -> None:
        await self._send(event, "the query")

    async def cancel(self, event: QueryCancelled) -> None:
        await self._send(event, "the cancellation", headers=cancellation_headers())

    async def publish_feedback(self, event: FeedbackGiven) -> None:
        """A rating onto ``feedback`` (query_gateway/feedback.py), keyed by ``query_id``."""
        await self._send(event, "the feedback", topic=self._settings.feedback_topic)

    async def _send(
        self,
        event: QueryEvent | QueryCancelled | FeedbackGiven,
        what: str,
        *,
        headers: list[tuple[str, bytes]] | None = None,
        topic: str | None = None,
    ) -> None:
        """Produce onto ``queries`` (or ``topic``), keyed by ``query_id``; wait for the broker's ack."""
        if self._producer is None:
            raise KafkaUnavailable("the gateway is not connected to Kafka")
        topic = topic or self._settings.queries_topic
        try:
            await asyncio.wait_for(
                self._producer.send_and_wait(
                    topic, encode(event), key=event.query_id.encode(), headers=headers
                ),
                self._settings.produce_timeout_s,
            )
        except (KafkaError, TimeoutError) as exc:
            raise KafkaUnavailable(f"could not publish {what} to {topic!r}: {exc!r}") from exc

    async def check(self) -> str:
        if self._producer is None:
            raise KafkaUnavailable("producer not started")
        if not self.router.running:
            raise KafkaUnavailable("answer router is not running")
        metadata = await self._producer.client.fetch_all_metadata()
        topics = metadata.topics()
        s = self._settings
        missing = [t for t in (s.queries_topic, s.answers_topic) if t not in topics]
        if missing:
            raise KafkaUnavailable(f"missing topics: {', '.join(missing)}")
        return (
            f"{len(metadata.brokers())} broker(s); replying on "
            f"{s.answers_topic}[{s.gateway_reply_partition}]"
        )
