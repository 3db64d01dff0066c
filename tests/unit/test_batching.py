"""Concurrent questions share one model call; errors and cancellations stay with their batch."""

from __future__ import annotations

import asyncio

import pytest

from streams.batching import MicroBatcher


class Model:
    def __init__(self, fail: bool = False, gate: asyncio.Event | None = None) -> None:
        self.batches: list[list[str]] = []
        self.fail = fail
        self.gate = gate  # when given, each call is busy until the test opens it
        self.called = asyncio.Event()

    async def run(self, items: list[str]) -> list[str]:
        self.batches.append(items)
        self.called.set()
        if self.gate is not None:
            await self.gate.wait()
        else:
            await asyncio.sleep(0.01)  # the model is busy for a while
        if self.fail:
            raise RuntimeError("model failed")
        return [i.upper() for i in items]


async def test_concurrent_items_share_one_call_and_each_gets_its_own_result() -> None:
    model = Model()
    batcher = MicroBatcher(model.run, max_size=32, max_wait_s=0.005)
    results = await asyncio.gather(*(batcher.submit(f"q{i}") for i in range(10)))
    assert results == [f"Q{i}" for i in range(10)]
    assert model.batches == [[f"q{i}" for i in range(10)]]


async def test_batches_are_bounded_and_arrivals_during_a_call_go_next() -> None:
    gate = asyncio.Event()
    model = Model(gate=gate)
    batcher = MicroBatcher(model.run, max_size=4, max_wait_s=0.005)
    first = [asyncio.ensure_future(batcher.submit(f"a{i}")) for i in range(6)]
    await model.called.wait()  # the first call has started (and is held busy)
    later = [asyncio.ensure_future(batcher.submit(f"b{i}")) for i in range(2)]
    await asyncio.sleep(0.02)  # longer than max_wait: nothing may start while the model is busy
    assert [len(b) for b in model.batches] == [4]
    gate.set()
    await asyncio.gather(*first, *later)
    assert [len(b) for b in model.batches] == [4, 4]
    assert max(len(b) for b in model.batches) <= 4


async def test_a_lone_item_waits_at_most_the_bound() -> None:
    model = Model()
    batcher = MicroBatcher(model.run, max_size=32, max_wait_s=0.005)
    started = asyncio.get_running_loop().time()
    assert await batcher.submit("x") == "X"
    assert asyncio.get_running_loop().time() - started < 0.5


async def test_a_failed_call_fails_its_callers_and_the_next_batch_still_runs() -> None:
    model = Model(fail=True)
    batcher = MicroBatcher(model.run, max_size=8, max_wait_s=0.001)
    with pytest.raises(RuntimeError, match="model failed"):
        await batcher.submit("x")
    model.fail = False
    assert await batcher.submit("y") == "Y"


async def test_a_cancelled_caller_is_skipped() -> None:
    model = Model()
    batcher = MicroBatcher(model.run, max_size=8, max_wait_s=0.02)
    gone = asyncio.ensure_future(batcher.submit("gone"))
    kept = asyncio.ensure_future(batcher.submit("kept"))
    await asyncio.sleep(0)
    gone.cancel()
    assert await kept == "KEPT"
    assert model.batches == [["kept"]]
