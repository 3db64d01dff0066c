"""Against the real Kafka: process logs reach the logs topic as ECS JSON with their trace id,
and consumer lag is the log end offset minus what the group committed, per partition."""

from __future__ import annotations

import asyncio
import logging
import os
import socket

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

from streams.config import KafkaSettings
from streams.lag import LagReporter
from streams.log_producer import SHIPPED, KafkaLogHandler, LogShipSettings
from streams.metrics import CONSUMER_LAG
from tests.support import eventually


async def test_log_records_reach_the_logs_topic_with_their_trace_id(kafka: KafkaSettings) -> None:
    settings = LogShipSettings(kafka_bootstrap=kafka.kafka_bootstrap, topic_prefix=kafka.topic_prefix)
    handler = KafkaLogHandler(settings, "aichat-obs-test")
    logger = logging.getLogger("test.observability.kafka")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    shipped_before = SHIPPED._value.get()
    try:
        logger.info("indexed %d chunks", 3, extra={"trace_id": "trace-42", "doc_id": "handbook/a"})
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("failed", extra={"trace_id": "trace-42"})
        await eventually(lambda: _shipped_since(shipped_before, 2), timeout_s=30,
                         what="two log records delivered")
    finally:
        logger.removeHandler(handler)
        await asyncio.to_thread(handler.close)

    consumer = AIOKafkaConsumer(kafka.topic("logs"), bootstrap_servers=kafka.kafka_bootstrap,
                                auto_offset_reset="earliest", enable_auto_commit=False, group_id=None)
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        async def two() -> list[ConsumerRecord[bytes, bytes]] | None:
            batch = await consumer.getmany(timeout_ms=1000)
            records.extend(r for rs in batch.values() for r in rs)
            return records if len(records) >= 2 else None

        await eventually(two, timeout_s=30, what="two records on the logs topic")
    finally:
        await consumer.stop()
    docs = [orjson.loads(r.value) for r in records]
    assert all(r.key == b"aichat-obs-test" for r in records)
    first, second = docs
    assert first["message"] == "indexed 3 chunks"
    assert first["trace"]["id"] == "trace-42" and first["aichat"]["doc_id"] == "handbook/a"
    assert first["service"]["name"] == "aichat-obs-test"
    assert first["host"]["hostname"] == socket.gethostname()
    assert first["process"]["pid"] == os.getpid()
    assert second["log"]["level"] == "error" and second["error"]["type"] == "ValueError"


async def _shipped_since(before: float, n: int) -> bool:
    return SHIPPED._value.get() - before >= n


async def test_consumer_lag_is_end_offset_minus_committed(kafka: KafkaSettings) -> None:
    topic, group = kafka.topic("documents"), f"{kafka.topic_prefix}lag-test"
    producer = AIOKafkaProducer(bootstrap_servers=kafka.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for n in range(10):
            await producer.send_and_wait(topic, b"{}", partition=0, key=f"a{n}".encode())
        for n in range(5):
            await producer.send_and_wait(topic, b"{}", partition=1, key=f"b{n}".encode())
    finally:
        await producer.stop()

    reporter = LagReporter(kafka, group, [topic, kafka.topic("chunks")])
    await reporter.start()
    try:
        # the group has committed nothing: everything is owed
        assert await reporter.measure() == {(topic, 0): 10, (topic, 1): 5,
                                            (kafka.topic("chunks"), 0): 0,
                                            (kafka.topic("chunks"), 1): 0}
        consumer = AIOKafkaConsumer(bootstrap_servers=kafka.kafka_bootstrap, group_id=group,
                                    enable_auto_commit=False)
        await consumer.start()
        try:
            consumer.assign([TopicPartition(topic, 0), TopicPartition(topic, 1)])
            await consumer.commit({TopicPartition(topic, 0): 4, TopicPartition(topic, 1): 5})
        finally:
            await consumer.stop()
        lag = await reporter.measure()
        assert lag[(topic, 0)] == 6 and lag[(topic, 1)] == 0
        reporter.publish(lag)
        assert CONSUMER_LAG.labels(group, topic, "0")._value.get() == 6
        assert CONSUMER_LAG.labels(group, topic, "1")._value.get() == 0
    finally:
        await reporter.stop()
