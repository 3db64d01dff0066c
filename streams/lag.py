"""Consumer lag per partition, as Prometheus gauges: ``aichat_consumer_lag_messages``.

Lag is what Kafka's own tooling reports: the partition's log end offset minus the
offset the consumer group has *committed* (its start offset when it committed
nothing yet). Committed, not in-memory positions: the agents commit only after
the effect happened, so this is exactly the work still owed — and the number
that grows while Elasticsearch or Weaviate is down.

Every worker measures its own group over the topics its agents consume, every
``interval_s``, with its own admin client and an offsets-only consumer (no group,
nothing committed). Replicas of a role report the same series; the alert rules
take ``max`` over them.

The last measurement is also kept in a :class:`Backlog`, which the worker's
``/health/ready`` shows per topic (``{"documents": 12, "chunks": 300, …}``) with
the age of the oldest record of ``documents`` its group has not processed yet
(fetched once per measurement, only while there is a backlog). A backlog never
makes a worker unready: it is busy, not broken.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from streams.config import KafkaSettings
from streams.metrics import CONSUMER_BACKLOG_OLDEST, CONSUMER_LAG

log = logging.getLogger(__name__)

INTERVAL_S = 10.0
TIMEOUT_S = 10.0
#: topics (base names) whose oldest unprocessed record's age is measured
AGE_OF = ("documents",)
#: what one age probe may fetch per partition (Kafka still returns one larger record whole)
AGE_FETCH_BYTES = 64 * 1024


@dataclass
class Backlog:
    """The last measurement of one group: records owed per topic, and how old the oldest is."""

    prefix: str = ""
    by_partition: dict[tuple[str, int], int] = field(default_factory=dict)
    oldest_s: dict[str, float] = field(default_factory=dict)  # full topic name → seconds
    measured_at: float | None = None  # time.time() of the measurement

    def update(self, lag: dict[tuple[str, int], int], oldest_s: dict[str, float]) -> None:
        self.by_partition, self.oldest_s, self.measured_at = lag, oldest_s, time.time()

    def _base(self, topic: str) -> str:
        return topic[len(self.prefix):] if self.prefix and topic.startswith(self.prefix) else topic

    def summary(self) -> dict[str, object] | None:
        """``{"documents": n, …, "oldest_documents_s": age, "measured_s_ago": s}``; None before
        the first measurement."""
        if self.measured_at is None:
            return None
        counts: dict[str, int] = {}
        for (topic, _), value in sorted(self.by_partition.items()):
            counts[self._base(topic)] = counts.get(self._base(topic), 0) + value
        per_topic: dict[str, object] = dict(counts)
        for topic, age in sorted(self.oldest_s.items()):
            per_topic[f"oldest_{self._base(topic)}_s"] = round(age, 1)
        per_topic["measured_s_ago"] = round(time.time() - self.measured_at, 1)
        return per_topic

    @property
    def busy(self) -> bool:
        return any(self.by_partition.values())


class LagReporter:
    def __init__(self, settings: KafkaSettings, group: str, topics: Sequence[str],
                 *, interval_s: float = INTERVAL_S, backlog: Backlog | None = None) -> None:
        self.settings = settings
        self.group = group
        self.topics = sorted(set(topics))
        self.interval_s = interval_s
        self.backlog = backlog if backlog is not None else Backlog(prefix=settings.topic_prefix)
        self.age_topics = {settings.topic(base) for base in AGE_OF} & set(self.topics)
        self._positions: dict[TopicPartition, int] = {}
        self._admin: AIOKafkaAdminClient | None = None
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        bootstrap = self.settings.kafka_bootstrap
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id=f"{self.group}-lag")
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                    enable_auto_commit=False, client_id=f"{self.group}-lag",
                                    max_partition_fetch_bytes=AGE_FETCH_BYTES)
        try:
            await asyncio.wait_for(admin.start(), TIMEOUT_S)
            await asyncio.wait_for(consumer.start(), TIMEOUT_S)
        except BaseException:
            await _quietly(admin.close())
            await _quietly(consumer.stop())
            raise
        self._admin, self._consumer = admin, consumer

    async def stop(self) -> None:
        admin, consumer, self._admin, self._consumer = self._admin, self._consumer, None, None
        if consumer is not None:
            await _quietly(consumer.stop())
        if admin is not None:
            await _quietly(admin.close())

    async def measure(self) -> dict[tuple[str, int], int]:
        """``{(topic, partition): lag}`` for every partition of the topics (not published)."""
        if self._admin is None or self._consumer is None:
            raise RuntimeError("LagReporter used before start()")
        meta = await self._admin.describe_topics(self.topics)
        tps = [TopicPartition(t["topic"], p["partition"])
               for t in meta if t["error_code"] == 0 for p in t["partitions"]]
        if not tps:
            return {}
        committed = await self._admin.list_consumer_group_offsets(self.group, partitions=tps)
        end = await asyncio.wait_for(self._consumer.end_offsets(tps), TIMEOUT_S)
        fresh = [tp for tp in tps if committed.get(tp) is None or committed[tp].offset < 0]
        start = await asyncio.wait_for(self._consumer.beginning_offsets(fresh), TIMEOUT_S) if fresh else {}
        lag: dict[tuple[str, int], int] = {}
        self._positions = {}
        for tp in tps:
            done = start[tp] if tp in start else committed[tp].offset
            lag[(tp.topic, tp.partition)] = max(0, end[tp] - done)
            self._positions[tp] = done
        return lag

    async def oldest_ages(self, lag: dict[tuple[str, int], int]) -> dict[str, float]:
        """``{topic: seconds}``: how long ago the oldest record not yet processed was produced,
        per age topic with a backlog (from the positions of the last :meth:`measure`)."""
        if self._consumer is None:
            raise RuntimeError("LagReporter used before start()")
        waiting = [tp for tp, pos in self._positions.items()
                   if tp.topic in self.age_topics and lag.get((tp.topic, tp.partition), 0) > 0]
        if not waiting:
            return {}
        consumer = self._consumer
        consumer.assign(waiting)
        try:
            for tp in waiting:
                consumer.seek(tp, self._positions[tp])
            first: dict[TopicPartition, int] = {}
            deadline = time.monotonic() + TIMEOUT_S
            while len(first) < len(waiting) and time.monotonic() < deadline:
                left = [tp for tp in waiting if tp not in first]
                fetched = await consumer.getmany(*left, timeout_ms=1000, max_records=len(left))
                for tp, records in fetched.items():
                    if records and tp not in first:
                        first[tp] = records[0].timestamp
        finally:
            consumer.assign([])  # stop prefetching
        now_ms = time.time() * 1000
        ages: dict[str, float] = {}
        for tp, ts in first.items():
            ages[tp.topic] = max(ages.get(tp.topic, 0.0), max(0.0, (now_ms - ts) / 1000))
        return ages

    def publish(self, lag: dict[tuple[str, int], int], oldest_s: dict[str, float] | None = None) -> None:
        for (topic, partition), value in lag.items():
            CONSUMER_LAG.labels(self.group, topic, str(partition)).set(value)
        if oldest_s is not None:
            for topic in self.age_topics:
                CONSUMER_BACKLOG_OLDEST.labels(self.group, topic).set(oldest_s.get(topic, 0.0))
            self.backlog.update(lag, oldest_s)

    async def run(self) -> None:
        """Measure and publish every ``interval_s`` until cancelled; Kafka trouble is logged, not fatal."""
        last_warning = 0.0
        try:
            while True:
                try:
                    if self._admin is None:
                        await self.start()
                    lag = await self.measure()
                    self.publish(lag, await self.oldest_ages(lag))
                except (asyncio.CancelledError, KeyboardInterrupt):
                    raise
                except Exception as exc:
                    if time.monotonic() - last_warning > 60:
                        log.warning("consumer lag of %s not measured: %s: %s",
                                    self.group, type(exc).__name__, exc)
                        last_warning = time.monotonic()
                    await self.stop()
                await asyncio.sleep(self.interval_s)
        finally:
            await self.stop()


def register(app: faust.App, settings: KafkaSettings) -> Backlog:
    """Report the lag of this app's consumer group while the app runs (a Faust app task);
    the returned :class:`Backlog` holds the last measurement."""
    backlog = Backlog(prefix=settings.topic_prefix)

    async def consumer_lag() -> None:
        topics = sorted({t for agent in app.agents.values() for t in agent.channel.topics})
        await LagReporter(settings, app.conf.id, topics, backlog=backlog).run()

    app.task(consumer_lag)
    return backlog


async def _quietly(aw: object) -> None:
    try:
        await asyncio.wait_for(aw, 5)  # type: ignore[arg-type]
    except Exception as exc:
        log.debug("closing a lag client failed: %s", exc)
