"""Pipelined batches: the next batch's work overlaps the previous batch's deliveries, acks
stay in order, and a failed delivery acks nothing past it (no Kafka: fakes throughout)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from types import SimpleNamespace
from typing import Any, cast

import pytest

from streams.backoff import Backoff
from streams.delivery import batch_agent
from streams.incoming import Incoming, raw
from streams.pipeline import Deliveries, Pipeline
from streams.resources import AgentContext

WAIT = 2.0  # every wait in these tests is bounded


async def until(predicate: Any, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + WAIT
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.001)


class Work:
    """A fake batch handler: each start records its batch and returns one delivery the
    test resolves (or fails) by hand; redo and ack are recorded in order."""

    def __init__(self, busy: asyncio.Event | None = None) -> None:
        self.started: list[list[int]] = []
        self.deliveries: list[asyncio.Future[None]] = []
        self.redone: list[list[int]] = []
        self.acked: list[int] = []
        self.busy = busy  # when given, each start waits for it (the model is busy)

    async def start(self, items: list[int]) -> Deliveries:
        self.started.append(list(items))
        if self.busy is not None:
            await self.busy.wait()
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.deliveries.append(fut)
        return [fut]

    async def redo(self, items: list[int]) -> None:
        self.redone.append(list(items))

    async def ack(self, items: list[int]) -> None:
        self.acked.extend(items)


def pipeline(work: Work, *, depth: int = 2, max_size: int = 100) -> Pipeline[int]:
    return Pipeline(work.start, work.redo, work.ack, max_size=max_size, depth=depth, name="test")


async def test_the_next_batch_starts_while_the_previous_one_is_being_delivered() -> None:
    work = Work()
    p = pipeline(work, depth=2)
    await p.feed([1, 2])
    await until(lambda: len(work.started) == 1, "the first batch")
    await p.feed([3])
    # the first batch's delivery is still pending: the second batch's work runs anyway
    await until(lambda: len(work.started) == 2, "the second batch to start during the first's delivery")
    assert not work.deliveries[0].done() and work.acked == []
    work.deliveries[1].set_result(None)  # the later batch delivered first: still not acked
    await asyncio.sleep(0.01)
    assert work.acked == []
    work.deliveries[0].set_result(None)
    await until(lambda: work.acked == [1, 2, 3], "both batches acked, in order")
    await p.close()


async def test_depth_one_waits_for_the_delivery_before_the_next_batch() -> None:
    work = Work()
    p = pipeline(work, depth=1)
    await p.feed([1])
    await until(lambda: len(work.started) == 1, "the first batch")
    await p.feed([2])
    await asyncio.sleep(0.02)
    assert len(work.started) == 1
    work.deliveries[0].set_result(None)
    await until(lambda: len(work.started) == 2, "the second batch after the first's delivery")
    assert work.acked == [1]
    work.deliveries[1].set_result(None)
    await until(lambda: work.acked == [1, 2], "the second batch acked")
    await p.close()


async def test_at_most_depth_batches_are_between_start_and_ack() -> None:
    work = Work()
    p = pipeline(work, depth=2)
    for item in (1, 2, 3):
        await p.feed([item])
        await asyncio.sleep(0.01)
    assert work.started == [[1], [2]]  # the third waits for the first to be acked
    work.deliveries[0].set_result(None)
    await until(lambda: work.started == [[1], [2], [3]], "the third batch once the first was acked")
    assert work.acked == [1]
    for fut in work.deliveries[1:]:
        fut.set_result(None)
    await until(lambda: work.acked == [1, 2, 3], "all acked")
    await p.close()


async def test_a_failed_delivery_acks_nothing_past_it_and_redoes_later_batches_in_order() -> None:
    work = Work()
    p = pipeline(work, depth=2)
    await p.feed([1, 2])
    await until(lambda: len(work.started) == 1, "the first batch")
    await p.feed([3])
    await until(lambda: len(work.started) == 2, "the second batch")
    work.deliveries[1].set_result(None)  # the later batch was delivered...
    work.deliveries[0].set_exception(ConnectionError("broker gone"))  # ...the earlier one was not
    await until(lambda: work.acked == [1, 2, 3], "acks after the redo")
    # the failed batch is redone, then the later one (its outputs must follow again)
    assert work.redone == [[1, 2], [3]]
    await p.close()


async def test_nothing_is_acked_while_a_failed_batch_is_being_redone() -> None:
    gate = asyncio.Event()
    work = Work()
    redone: list[list[int]] = []

    async def slow_redo(items: list[int]) -> None:
        redone.append(items)
        await gate.wait()  # the redo retries a while (e.g. Kafka is still down)

    p = Pipeline(work.start, slow_redo, work.ack, max_size=100, depth=2, name="test")
    await p.feed([1])
    await until(lambda: len(work.started) == 1, "the first batch")
    await p.feed([2])
    await until(lambda: len(work.started) == 2, "the second batch")
    work.deliveries[0].set_exception(TimeoutError("delivery timed out"))
    work.deliveries[1].set_result(None)
    await p.feed([3])
    await asyncio.sleep(0.02)
    assert work.acked == [] and redone == [[1]]
    assert work.started == [[1], [2]]  # no new work overtakes the redo
    gate.set()
    await until(lambda: work.acked == [1, 2], "acks after the redo")
    assert redone == [[1], [2]]
    work.deliveries[2].set_result(None)
    await until(lambda: work.acked == [1, 2, 3], "the later batch")
    await p.close()


async def test_a_busy_handler_takes_everything_that_arrived_meanwhile_up_to_the_cap() -> None:
    busy = asyncio.Event()
    work = Work(busy=busy)
    p = pipeline(work, depth=3, max_size=5)
    await p.feed([0])
    await until(lambda: len(work.started) == 1, "the first batch")
    for item in range(1, 8):  # arrive one by one while the model is busy
        feeding = asyncio.ensure_future(p.feed([item]))
        await asyncio.sleep(0)
    busy.set()
    await until(lambda: len(work.started) == 3, "the waiting records in two capped batches")
    await feeding
    assert work.started == [[0], [1, 2, 3, 4, 5], [6, 7]]
    for fut in work.deliveries:
        fut.set_result(None)
    await until(lambda: work.acked == list(range(8)), "all acked in order")
    await p.close()


async def test_the_last_batch_is_acked_without_further_input() -> None:
    work = Work()
    p = pipeline(work)
    await p.feed([1])
    await until(lambda: len(work.deliveries) == 1, "the batch")
    work.deliveries[0].set_result(None)
    await until(lambda: work.acked == [1], "the ack of the last batch at idle")
    await p.close()


async def test_close_leaves_undelivered_batches_unacked() -> None:
    work = Work()
    p = pipeline(work)
    await p.feed([1])
    await until(lambda: len(work.deliveries) == 1, "the batch")
    await p.close(drain_s=0.01)
    assert work.acked == []


# -- through batch_agent: a fake Faust stream and context --------------------------------------


class Sends:
    """A batch handler that 'sends' one output per event and returns the deliveries."""

    def __init__(self) -> None:
        self.calls: list[list[int]] = []
        self.pending: list[asyncio.Future[None]] = []

    async def handle(self, batch: list[tuple[Incoming, Incoming]]) -> Deliveries:
        self.calls.append([msg.offset for msg, _ in batch])
        futs = [asyncio.get_running_loop().create_future() for _ in batch]
        self.pending.extend(futs)
        return futs


class FakeStream:
    """Yields each batch once the handler has seen the ones before (so they stay apart)."""

    def __init__(self, batches: Sequence[Sequence[int]], sends: Sends) -> None:
        self.batches, self.sends = batches, sends
        self.acked: list[int] = []
        self.done = asyncio.Event()

    async def noack_take(self, max_: int, within: float) -> AsyncIterator[list[Any]]:
        for n, batch in enumerate(self.batches):
            await until(lambda n=n: len(self.sends.calls) >= n, f"the handler of batch {n}")
            yield [SimpleNamespace(message=SimpleNamespace(
                topic="t.chunks", partition=0, offset=o, key=b"k", value=b"{}", timestamp=0.0, headers=()))
                for o in batch]
        await self.done.wait()  # the stream stays open (Faust's does)

    async def ack(self, event: Any) -> None:
        self.acked.append(event.message.offset)


def fake_ctx() -> AgentContext:
    started = asyncio.Event()
    started.set()

    async def no_sleep(_: float) -> None:
        await asyncio.sleep(0)

    return cast(AgentContext, SimpleNamespace(
        started=started, retry=Backoff(first_s=0.01, max_s=0.01, sleep=no_sleep),
        topics=SimpleNamespace(dlq="t.dlq", base_name=lambda n: n)))


async def run_agent(stream: FakeStream, sends: Sends, depth: int) -> asyncio.Task[None]:
    body = batch_agent(fake_ctx(), "embedder", raw, sends.handle, max_size=10, within_s=0.001, depth=depth)
    return asyncio.ensure_future(body(cast(Any, stream)))


@pytest.mark.parametrize("depth", [2, 3])
async def test_batch_agent_runs_the_next_batch_during_the_previous_deliveries(depth: int) -> None:
    sends = Sends()
    stream = FakeStream([[0, 1], [2, 3]], sends)
    task = await run_agent(stream, sends, depth)
    await until(lambda: len(sends.calls) == 2, "the second batch's handler during the first's delivery")
    assert stream.acked == []
    for fut in sends.pending:
        fut.set_result(None)
    await until(lambda: stream.acked == [0, 1, 2, 3], "acks in order")
    stream.done.set()
    await asyncio.wait_for(task, WAIT)


async def test_batch_agent_depth_one_awaits_deliveries_inside_the_batch() -> None:
    sends = Sends()
    stream = FakeStream([[0, 1], [2, 3]], sends)
    task = await run_agent(stream, sends, 1)
    await until(lambda: len(sends.calls) == 1, "the first batch")
    await asyncio.sleep(0.02)
    assert len(sends.calls) == 1  # waits for its deliveries
    for fut in sends.pending:
        fut.set_result(None)
    await until(lambda: len(sends.calls) == 2, "the second batch")
    for fut in sends.pending:
        if not fut.done():
            fut.set_result(None)
    await until(lambda: stream.acked == [0, 1, 2, 3], "acks")
    stream.done.set()
    await asyncio.wait_for(task, WAIT)


async def test_batch_agent_a_failed_delivery_is_retried_before_anything_later_is_acked() -> None:
    sends = Sends()
    stream = FakeStream([[0, 1], [2, 3]], sends)
    task = await run_agent(stream, sends, 2)
    await until(lambda: len(sends.calls) == 2, "both batches started")
    first, second = sends.pending[:2], sends.pending[2:4]
    for fut in second:
        fut.set_result(None)
    first[0].set_result(None)
    first[1].set_exception(ConnectionError("broker unreachable"))  # retriable
    await until(lambda: len(sends.calls) >= 3, "the failed batch redone")
    assert stream.acked == []  # neither the failed batch nor the later, delivered one
    assert sends.calls[2] == [0, 1]
    for fut in sends.pending[4:]:
        fut.set_result(None)  # the redo's own deliveries
    await until(lambda: len(sends.calls) == 4, "the later batch redone after it")
    assert sends.calls[3] == [2, 3]
    for fut in sends.pending[6:]:
        fut.set_result(None)
    await until(lambda: stream.acked == [0, 1, 2, 3], "acks in order after the redo")
    stream.done.set()
    await asyncio.wait_for(task, WAIT)
