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
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from streams.config import KafkaSettings
from streams.metrics import CONSUMER_LAG

log = logging.getLogger(__name__)

INTERVAL_S = 10.0
TIMEOUT_S = 10.0


class LagReporter:
    def __init__(self, settings: KafkaSettings, group: str, topics: Sequence[str],
                 *, interval_s: float = INTERVAL_S) -> None:
        self.settings = settings
        self.group = group
        self.topics = sorted(set(topics))
        self.interval_s = interval_s
        self._admin: AIOKafkaAdminClient | None = None
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        bootstrap = self.settings.kafka_bootstrap
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id=f"{self.group}-lag")
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                    enable_auto_commit=False, client_id=f"{self.group}-lag")
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
        for tp in tps:
            done = start[tp] if tp in start else committed[tp].offset
            lag[(tp.topic, tp.partition)] = max(0, end[tp] - done)
        return lag

    def publish(self, lag: dict[tuple[str, int], int]) -> None:
        for (topic, partition), value in lag.items():
            CONSUMER_LAG.labels(self.group, topic, str(partition)).set(value)

    async def run(self) -> None:
        """Measure and publish every ``interval_s`` until cancelled; Kafka trouble is logged, not fatal."""
        last_warning = 0.0
        try:
            while True:
                try:
                    if self._admin is None:
                        await self.start()
                    self.publish(await self.measure())
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


def register(app: faust.App, settings: KafkaSettings) -> None:
    """Report the lag of this app's consumer group while the app runs (a Faust app task)."""

    async def consumer_lag() -> None:
        topics = sorted({t for agent in app.agents.values() for t in agent.channel.topics})
        await LagReporter(settings, app.conf.id, topics).run()

    app.task(consumer_lag)


async def _quietly(aw: object) -> None:
    try:
        await asyncio.wait_for(aw, 5)  # type: ignore[arg-type]
    except Exception as exc:
        log.debug("closing a lag client failed: %s", exc)
