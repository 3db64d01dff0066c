"""The ``conversations`` topic read whole into a :class:`~streams.conversations.ConversationView`.

    start ─► every partition (no group), from the beginning ─► background loop: records ─► view.apply
    write(record) ─► idempotent producer (acks=all) ─► view.apply (at once: read your own writes)
    caught_up(timeout) ─► the topic's end offsets now ─► wait until the loop has read past them

No consumer group: each answer worker and each gateway replica reads every partition
itself, so whichever replica answers (or serves ``history``) sees every turn, however
the queries were spread. :meth:`ConversationLog.caught_up` is how a replica sees a turn
that another one wrote a moment ago: that turn was acknowledged before its ``done`` went
out, so once the view reaches the end offsets taken when the next question arrives, it
holds it. The end offsets are asked on a connection of their own: on the reading
consumer's, the request would queue behind its long-polling fetch (Kafka answers one
request per connection at a time) and every question would wait up to ``fetch_max_wait_ms``
(measured: ~490 ms p50 per query before this). A record that does not decode is logged and
skipped (it cannot block the view).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError

from schemas.codec import decode, encode
from schemas.conversations import ConversationRecord
from schemas.errors import InvalidEvent
from streams.conversations import ConversationView
from streams.errors import DependencyUnavailable

log = logging.getLogger(__name__)

#: the pause after a failed read
TOPIC_WAIT_S = 1.0


class ConversationLog:
    """Reads the whole topic into ``view``; writes records when ``writer`` is set."""

    def __init__(self, bootstrap: str, topic: str, view: ConversationView, *,
                 writer: bool = False, client_id: str = "aichat-conversations",
                 timeout_s: float = 10.0) -> None:
        self.bootstrap, self.topic, self.view = bootstrap, topic, view
        self._writer, self._client_id, self._timeout_s = writer, client_id, timeout_s
        self._consumer: AIOKafkaConsumer | None = None
        #: asks for end offsets only (no assignment, no fetches): never queued behind a fetch
        self._offsets: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Connect (raise :class:`DependencyUnavailable` when Kafka is not there); the
        topic is read in the background, waited for while it does not exist yet."""
        # no group: the consumer is assigned every partition of the topic, as they appear
        consumer = AIOKafkaConsumer(self.topic, bootstrap_servers=self.bootstrap, group_id=None,
                                    enable_auto_commit=False, auto_offset_reset="earliest",
                                    client_id=self._client_id)
        offsets = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None,
                                   enable_auto_commit=False, client_id=f"{self._client_id}-offsets")
        try:
            await asyncio.wait_for(consumer.start(), self._timeout_s)
            await asyncio.wait_for(offsets.start(), self._timeout_s)
            if self._writer:
                producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all",
                                            enable_idempotence=True, client_id=self._client_id,
                                            request_timeout_ms=int(self._timeout_s * 1000))
                try:
                    await asyncio.wait_for(producer.start(), self._timeout_s)
                except BaseException:
                    await producer.stop()
                    raise
                self._producer = producer
        except (KafkaError, OSError, TimeoutError) as exc:
            await offsets.stop()
            await consumer.stop()
            raise DependencyUnavailable(f"conversations: cannot connect to Kafka at "
                                        f"{self.bootstrap}: {exc!r}") from exc
        self._consumer, self._offsets = consumer, offsets
        self._task = asyncio.create_task(self._read(consumer), name=f"read-{self.topic}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        consumer, self._consumer = self._consumer, None
        offsets, self._offsets = self._offsets, None
        producer, self._producer = self._producer, None
        if offsets is not None:
            await offsets.stop()
        if producer is not None:
            await producer.stop()
        if consumer is not None:
            await consumer.stop()

    async def _read(self, consumer: AIOKafkaConsumer) -> None:
        logged = False
        while True:
            if not logged and (assigned := consumer.assignment()):
                logged = True
                log.info("conversations: reading %s (%d partitions)", self.topic, len(assigned))
            try:
                batches = await consumer.getmany(timeout_ms=500, max_records=1000)
            except KafkaError as exc:  # the consumer reconnects by itself
                log.warning("conversations: reading %s failed: %r", self.topic, exc)
                await asyncio.sleep(TOPIC_WAIT_S)
                continue
            for records in batches.values():
                for rec in records:
                    self._apply(rec.key, rec.value, rec.partition, rec.offset)

    def _apply(self, key: bytes | None, value: bytes | None, partition: int, offset: int) -> None:
        name = (key or b"").decode("utf-8", errors="replace")
        if value is None:
            self.view.apply(name, None)
            return
        try:
            record = decode(ConversationRecord, value)
        except InvalidEvent as exc:
            log.warning("conversations: record %s[%d]@%d skipped: %s", self.topic, partition,
                        offset, exc)
            return
        self.view.apply(record.kafka_key, record)

    async def caught_up(self, timeout_s: float) -> bool:
        """Wait (at most ``timeout_s``) until the view holds every record written before
        this call; ``False`` when it could not get there in time."""
        try:
            async with asyncio.timeout(timeout_s):
                while True:  # not started yet (the worker is starting), or no metadata yet
                    consumer, offsets = self._consumer, self._offsets
                    if (consumer is not None and offsets is not None
                            and (partitions := sorted(consumer.assignment()))):
                        break
                    await asyncio.sleep(0.01)
                ends = await offsets.end_offsets(partitions)
                while True:
                    positions = [await consumer.position(tp) for tp in partitions]
                    if all(pos >= ends[tp] for pos, tp in zip(positions, partitions, strict=True)):
                        return True
                    await asyncio.sleep(0.005)
        except (TimeoutError, KafkaError):
            return False

    async def write(self, record: ConversationRecord) -> None:
        """Produce the record and wait for the broker (acks=all); the view has it at once."""
        if self._producer is None:
            raise DependencyUnavailable("conversations: this log was not started as a writer")
        self.view.apply(record.kafka_key, record)
        try:
            await asyncio.wait_for(self._producer.send_and_wait(
                self.topic, encode(record), key=record.kafka_key.encode()), self._timeout_s)
        except (KafkaError, TimeoutError) as exc:
            raise DependencyUnavailable(f"conversations: writing to {self.topic} failed: "
                                        f"{exc!r}") from exc

