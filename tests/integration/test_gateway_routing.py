"""Answer routing on a real broker: each gateway replica gets exactly the answers
produced to its own reply partition, from the moment it reported ready."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaProducer

from query_gateway.config import GatewaySettings
from query_gateway.errors import KafkaUnavailable
from query_gateway.routing import AnswerQueue, AnswerRouter
from schemas.codec import encode
from schemas.events import AnswerEvent
from streams.config import KafkaSettings

pytestmark = pytest.mark.integration


def answers(query_id: str, n_tokens: int) -> list[AnswerEvent]:
    events = [AnswerEvent(query_id=query_id, seq=0, kind="sources")]
    events += [
        AnswerEvent(query_id=query_id, seq=i, kind="token", delta=f"{query_id}-{i} ")
        for i in range(1, n_tokens + 1)
    ]
    events.append(AnswerEvent(query_id=query_id, seq=n_tokens + 1, kind="done"))
    return events


async def drain(queue: AnswerQueue, count: int, timeout_s: float = 20.0) -> list[AnswerEvent]:
    async with asyncio.timeout(timeout_s):
        return [await queue.get() for _ in range(count)]


def gateway(kafka: KafkaSettings) -> GatewaySettings:
    return GatewaySettings(
        kafka_bootstrap=kafka.kafka_bootstrap,
        topic_prefix=kafka.topic_prefix,
        topic_partitions=kafka.topic_partitions,
    )


async def test_each_router_receives_exactly_its_own_partition(kafka: KafkaSettings) -> None:
    settings = gateway(kafka)
    topic = settings.answers_topic
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, acks="all", enable_idempotence=True
    )
    await producer.start()
    routers = [
        AnswerRouter(bootstrap_servers=settings.kafka_bootstrap, topic=topic, partition=p)
        for p in (0, 1)
    ]

    async def send(event: AnswerEvent, partition: int) -> None:
        await producer.send_and_wait(
            topic, encode(event), key=event.query_id.encode(), partition=partition
        )

    try:
        # answered before the routers started: a fresh replica must not see them
        for event in answers("early", 2):
            await send(event, 0)

        await asyncio.gather(*(router.start() for router in routers))
        assert all(router.start_position is not None for router in routers)
        r0, r1 = routers
        mine0 = {qid: r0.register(qid) for qid in ("early", "a", "b")}
        mine1 = {qid: r1.register(qid) for qid in ("c",)}

        expected = {"a": answers("a", 5), "b": answers("b", 3), "c": answers("c", 4)}
        # interleave the three answers; each goes to its asker's reply partition,
        # plus noise: strays for queries the other replica owns, an unknown query, garbage
        for i in range(7):
            for qid, partition in (("a", 0), ("b", 0), ("c", 1)):
                if i < len(expected[qid]):
                    await send(expected[qid][i], partition)
        await send(answers("c", 1)[1], 0)  # c is registered on r1 only
        await send(answers("a", 1)[1], 1)  # a is registered on r0 only
        await send(answers("nobody", 1)[0], 0)
        await producer.send_and_wait(topic, b"not json", key=b"x", partition=1)
        marker = AnswerEvent(query_id="b", seq=99, kind="done")
        await send(marker, 0)  # last on partition 0: after it arrives, nothing else is in flight
        late_c = AnswerEvent(query_id="c", seq=99, kind="done")
        await send(late_c, 1)

        got_a = await drain(mine0["a"], len(expected["a"]))
        got_b = await drain(mine0["b"], len(expected["b"]) + 1)
        got_c = await drain(mine1["c"], len(expected["c"]) + 1)

        assert [e.event_id for e in got_a] == [e.event_id for e in expected["a"]]
        assert [e.event_id for e in got_b] == [e.event_id for e in expected["b"]] + [
            marker.event_id
        ]
        assert [e.event_id for e in got_c] == [e.event_id for e in expected["c"]] + [
            late_c.event_id
        ]
        # the strays were dropped, not delivered to the wrong query; "early" never came
        assert all(q.empty() for q in (*mine0.values(), *mine1.values()))
        assert all(router.running for router in routers)
    finally:
        await asyncio.gather(*(router.stop() for router in routers))
        await producer.stop()


async def test_router_refuses_a_reply_partition_the_topic_lacks(kafka: KafkaSettings) -> None:
    settings = gateway(kafka)
    router = AnswerRouter(
        bootstrap_servers=settings.kafka_bootstrap,
        topic=settings.answers_topic,
        partition=5,
        start_timeout_s=15,
    )
    try:
        with pytest.raises(KafkaUnavailable, match="reply partition 5 does not exist"):
            await router.start()
        assert not router.running
    finally:
        await router.stop()
