"""Against the real Kafka: the move from one pipeline group to ingest + answer replays nothing,
and a worker can tell how long its oldest unprocessed document has waited."""

from __future__ import annotations

import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from infra.groups import adopt_offsets, group_id
from streams.config import KafkaSettings
from streams.lag import LagReporter


async def commit(settings: KafkaSettings, group: str, offsets: dict[TopicPartition, int]) -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=group,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(list(offsets))
        await consumer.commit(offsets)
    finally:
        await consumer.stop()


async def committed(settings: KafkaSettings, group: str) -> dict[TopicPartition, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        return {tp: m.offset for tp, m in (await admin.list_consumer_group_offsets(group)).items()}
    finally:
        await admin.close()


async def test_the_new_role_groups_start_where_the_pipeline_group_stopped(kafka: KafkaSettings) -> None:
    t = kafka.topic
    old = {TopicPartition(t("documents"), 0): 40, TopicPartition(t("documents"), 1): 7,
           TopicPartition(t("chunks"), 0): 90, TopicPartition(t("embeddings"), 1): 12,
           TopicPartition(t("queries"), 0): 300}
    await commit(kafka, group_id(kafka, "pipeline"), old)
    # an answer group that already ran keeps its own history
    await commit(kafka, group_id(kafka, "answer"), {TopicPartition(t("queries"), 0): 310})

    assert await adopt_offsets(kafka) == {group_id(kafka, "ingest"): 4}
    assert await committed(kafka, group_id(kafka, "ingest")) == {
        tp: n for tp, n in old.items() if tp.topic != t("queries")}
    assert await committed(kafka, group_id(kafka, "answer")) == {TopicPartition(t("queries"), 0): 310}
    assert await committed(kafka, group_id(kafka, "pipeline")) == old  # the old group is untouched
    # the next start changes nothing: both groups have their history now
    assert await adopt_offsets(kafka) == {}


async def test_nothing_is_adopted_without_a_pipeline_group(kafka: KafkaSettings) -> None:
    assert await adopt_offsets(kafka) == {}
    assert await committed(kafka, group_id(kafka, "ingest")) == {}


async def test_the_backlog_names_the_age_of_the_oldest_unprocessed_document(kafka: KafkaSettings) -> None:
    documents, group = kafka.topic("documents"), group_id(kafka, "ingest")
    now_ms = int(time.time() * 1000)
    producer = AIOKafkaProducer(bootstrap_servers=kafka.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        # partition 0: two records, the group has processed the first (10 minutes old);
        # the second, 5 minutes old, is the oldest still owed. Partition 1: all processed.
        await producer.send_and_wait(documents, b"{}", key=b"a", partition=0, timestamp_ms=now_ms - 600_000)
        await producer.send_and_wait(documents, b"{}", key=b"b", partition=0, timestamp_ms=now_ms - 300_000)
        await producer.send_and_wait(documents, b"{}", key=b"c", partition=1, timestamp_ms=now_ms - 900_000)
    finally:
        await producer.stop()
    await commit(kafka, group, {TopicPartition(documents, 0): 1, TopicPartition(documents, 1): 1})
    reporter = LagReporter(kafka, group, [documents, kafka.topic("chunks")])
    await reporter.start()
    try:
        lag = await reporter.measure()
        assert lag[(documents, 0)] == 1 and lag[(documents, 1)] == 0
        ages = await reporter.oldest_ages(lag)
        assert set(ages) == {documents}
        assert 300 <= ages[documents] < 330
        reporter.publish(lag, ages)
        summary = reporter.backlog.summary()
        assert summary is not None and summary["documents"] == 1 and summary["chunks"] == 0
        assert reporter.backlog.busy
        # processed: no backlog, no age
        await commit(kafka, group, {TopicPartition(documents, 0): 2})
        lag = await reporter.measure()
        assert await reporter.oldest_ages(lag) == {}
    finally:
        await reporter.stop()
