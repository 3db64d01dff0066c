"""Answer routing: one partition of ``answers`` → the queue of the query that waits for it.

Every gateway replica owns one partition of the answers topic (its *reply
partition*); the answerer writes each query's answer events to the partition named
in the query's ``reply_to``. The router reads that partition with no consumer
group (``assign``, never ``subscribe``: no rebalances, no commits) from its end,
and hands each :class:`AnswerEvent` to the per-query queue registered by the
connection that asked. Events of unknown queries (answers to a previous process,
or to a query already finished) are dropped with a debug log.

Order that makes "no answer is missed" hold:

1. :meth:`AnswerRouter.start` positions at the end of the partition and awaits
   ``position()`` before it returns, and the app reports ready only after it;
2. a connection :meth:`~AnswerRouter.register`\\ s the query *before* producing it.

Queues are bounded: a query whose client does not keep up gets a synthetic
``slow_consumer`` error event and is unregistered, so one slow client never
stalls the partition for the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from query_gateway.errors import KafkaUnavailable
from query_gateway.metrics import ANSWERS_DROPPED
from schemas.codec import decode
from schemas.errors import InvalidEvent
from schemas.events import AnswerError, AnswerEvent

logger = logging.getLogger(__name__)

AnswerQueue = asyncio.Queue[AnswerEvent]


class AnswerRouter:
    """Reads one answers partition and fans its events out to per-query queues."""

    def __init__(
        self,
        *,
        bootstrap_servers: str,
        topic: str,
        partition: int,
        queue_size: int = 1_024,
        start_timeout_s: float = 30.0,
        consumer_options: dict[str, Any] | None = None,
    ) -> None:
        self.topic = topic
        self.partition = partition
        self._tp = TopicPartition(topic, partition)
        self._bootstrap = bootstrap_servers
        self._queue_size = queue_size
        self._start_timeout_s = start_timeout_s
        self._consumer_options = consumer_options or {}
        self._queues: dict[str, AnswerQueue] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._start_position: int | None = None
        self._waiting_for = "the broker"

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, assign the reply partition, position at its end; raise :class:`KafkaUnavailable`."""
        if self._consumer is not None:
            return
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="latest",
            client_id=f"aichat-gateway-answers-{self.partition}",
            **self._consumer_options,
        )
        self._waiting_for = "the broker"
        try:
            await asyncio.wait_for(self._position(consumer), self._start_timeout_s)
        except (KafkaError, OSError, TimeoutError) as exc:
            await consumer.stop()
            raise KafkaUnavailable(
                f"cannot read answers partition {self.topic}[{self.partition}] at "
                f"{self._bootstrap}: still waiting for {self._waiting_for} after "
                f"{self._start_timeout_s:g}s ({exc!r})"
            ) from exc
        except BaseException:
            await consumer.stop()
            raise
        self._consumer = consumer
        self._task = asyncio.create_task(
            self._run(consumer), name=f"answer-router-{self.partition}"
        )
        logger.info(
            "answer router started on %s[%d] at offset %s",
            self.topic,
            self.partition,
            self._start_position,
        )

    async def _position(self, consumer: AIOKafkaConsumer) -> None:
        await consumer.start()
        self._waiting_for = f"topic {self.topic!r} to exist (create the topics first)"
        while self.topic not in await consumer.topics():  # noqa: ASYNC110 (polls the broker)
            await asyncio.sleep(0.2)
        self._waiting_for = f"the metadata of topic {self.topic!r}"
        consumer.assign([self._tp])
        partitions = consumer.partitions_for_topic(self.topic)
        while not partitions:  # assign() asked for this topic's metadata
            await asyncio.sleep(0.05)
            partitions = consumer.partitions_for_topic(self.topic)
        if self.partition not in partitions:
            raise KafkaUnavailable(
                f"reply partition {self.partition} does not exist: topic {self.topic!r} has "
                f"partitions 0..{max(partitions)} (AICHAT_GATEWAY_REPLY_PARTITION)"
            )
        self._waiting_for = f"the end offset of {self.topic}[{self.partition}]"
        await consumer.seek_to_end(self._tp)
        self._start_position = await consumer.position(self._tp)

    async def stop(self) -> None:
        """Stop reading; idempotent. Registered queries get nothing more."""
        task, self._task = self._task, None
        consumer, self._consumer = self._consumer, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if consumer is not None:
            await consumer.stop()
            logger.info("answer router stopped on %s[%d]", self.topic, self.partition)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def start_position(self) -> int | None:
        """Offset of the reply partition's end when the router started (``None`` before)."""
        return self._start_position

    # -- registration ------------------------------------------------------------------------

    def register(self, query_id: str) -> AnswerQueue:
        """A fresh queue for ``query_id``'s answer events; call before producing the query."""
        if query_id in self._queues:
            raise ValueError(f"query {query_id} is already registered")
        queue: AnswerQueue = asyncio.Queue(maxsize=self._queue_size)
        self._queues[query_id] = queue
        return queue

    def unregister(self, query_id: str) -> None:
        self._queues.pop(query_id, None)

    @property
    def registered(self) -> int:
        return len(self._queues)

    # -- reading -----------------------------------------------------------------------------

    async def _run(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            try:
                batches = await consumer.getmany(self._tp, timeout_ms=1_000, max_records=500)
            except KafkaError as exc:
                logger.warning(
                    "answer router on %s[%d]: %r; retrying", self.topic, self.partition, exc
                )
                await asyncio.sleep(1.0)
                continue
            for records in batches.values():
                for record in records:
                    self.dispatch(record)

    def dispatch(self, record: ConsumerRecord[Any, Any]) -> None:
        """Hand one record to the queue of its query (public for tests of the routing rules)."""
        try:
            event = decode(AnswerEvent, record.value)
        except InvalidEvent as exc:
            ANSWERS_DROPPED.labels(reason="invalid").inc()
            logger.warning(
                "invalid answer event at %s[%d]@%d dropped: %s",
                record.topic,
                record.partition,
                record.offset,
                exc,
            )
            return
        queue = self._queues.get(event.query_id)
        if queue is None:
            ANSWERS_DROPPED.labels(reason="unknown_query").inc()
            logger.debug(
                "answer event for unknown query dropped (%s)",
                event.kind,
                extra={"query_id": event.query_id, "trace_id": event.trace_id},
            )
            return
        try:
            queue.put_nowait(event)
        except asyncio.QueueFull:
            self._overflow(event, queue)

    def _overflow(self, event: AnswerEvent, queue: AnswerQueue) -> None:
        ANSWERS_DROPPED.labels(reason="slow_consumer").inc()
        logger.warning(
            "query fell %d answer events behind; failing it as slow_consumer",
            queue.qsize(),
            extra={"query_id": event.query_id, "trace_id": event.trace_id},
        )
        self.unregister(event.query_id)
        with contextlib.suppress(asyncio.QueueEmpty):
            queue.get_nowait()  # make room for the final event
        queue.put_nowait(
            AnswerEvent(
                query_id=event.query_id,
                trace_id=event.trace_id,
                seq=event.seq,
                kind="error",
                error=AnswerError(
                    code="slow_consumer",
                    message=f"the client did not read the answer fast enough ({self._queue_size} events behind)",
                ),
            )
        )
