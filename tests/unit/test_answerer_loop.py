"""The answerer's concurrent loop: in-order acks, cancellation, bounded concurrency
(a stand-in for Faust's stream; the loop itself is the production code)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from schemas.codec import encode
from schemas.events import EVENT_TYPE_HEADER, QUERY_CANCELLED, QueryCancelled
from streams.delivery import concurrent_queries
from streams.incoming import Incoming
from streams.resources import AGENT_RETRY


@dataclass
class FakeStream:
    records: list[tuple[str, bytes, list[tuple[str, bytes]]]]
    acked: list[int] = field(default_factory=list)
    fed: asyncio.Event = field(default_factory=asyncio.Event)

    def noack(self) -> FakeStream:
        return self

    async def events(self) -> AsyncIterator[Any]:
        for offset, (key, value, headers) in enumerate(self.records):
            msg = SimpleNamespace(topic="queries", partition=0, offset=offset, key=key.encode(),
                                  value=value, timestamp=0.0, headers=headers)
            yield SimpleNamespace(message=msg, offset=offset)
        self.fed.set()
        await asyncio.sleep(3600)  # a live stream never ends

    async def ack(self, event: Any) -> bool:
        self.acked.append(event.offset)
        return True


def ctx() -> Any:
    started = asyncio.Event()
    started.set()
    return SimpleNamespace(started=started, retry=AGENT_RETRY)  # what delivery.py reads of it


def cancel_record(query_id: str) -> tuple[str, bytes, list[tuple[str, bytes]]]:
    event = QueryCancelled(query_id=query_id, reason="client")
    return (query_id, encode(event), [(EVENT_TYPE_HEADER, QUERY_CANCELLED.encode())])


async def run_loop(stream: FakeStream, handle: Any, limit: int, settle: float = 0.3) -> None:
    task = asyncio.create_task(concurrent_queries(ctx(), "answerer", handle, limit)(stream))  # type: ignore[arg-type]
    await stream.fed.wait()
    await asyncio.sleep(settle)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_acks_follow_arrival_order_even_when_later_queries_finish_first() -> None:
    delays = {"slow": 0.2, "fast": 0.0}

    async def handle(msg: Incoming) -> None:
        await asyncio.sleep(delays[msg.key.decode()])  # type: ignore[union-attr]

    stream = FakeStream([("slow", b"{}", []), ("fast", b"{}", [])])
    await run_loop(stream, handle, limit=4)
    assert stream.acked == [0, 1]


async def test_a_cancellation_stops_its_running_query() -> None:
    finished: list[str] = []

    async def handle(msg: Incoming) -> None:
        await asyncio.sleep(0.5 if msg.key == b"long" else 0)
        finished.append(msg.key.decode())  # type: ignore[union-attr]

    stream = FakeStream([("long", b"{}", []), cancel_record("long"), ("other", b"{}", [])])
    await run_loop(stream, handle, limit=4, settle=0.7)
    assert finished == ["other"]
    assert stream.acked == [0, 1, 2]


async def test_no_more_than_the_limit_run_at_once() -> None:
    running = peak = 0

    async def handle(msg: Incoming) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.05)
        running -= 1

    stream = FakeStream([(f"q{i}", b"{}", []) for i in range(10)])
    await run_loop(stream, handle, limit=3, settle=0.5)
    assert peak == 3 and stream.acked == list(range(10))
