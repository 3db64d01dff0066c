"""Overlap one batch's deliveries with the next batch's work; ack strictly in order.

A batching agent spends each batch in two phases: *work* (decode, model inference,
writes) and *delivery* (the broker acknowledging the events it sent). Awaited one
after the other, the model idles during every delivery and during every batch
window. :class:`Pipeline` runs them overlapped, at most ``depth`` batches between
start and ack::

    feed(records) ─► waiting ─► runner: start(batch) ─► deliveries ─► settle: ack(batch)
                     (≤ max_size)   (one at a time)        (in flight)   (oldest first)

* **Batches by load.** The runner takes everything waiting, up to ``max_size``, as
  soon as the previous batch's work is done: what arrived while the model was busy
  goes at once, with no second window to wait (the caller's window only applies
  when the runner is idle).
* **At-least-once, in order.** A batch is acked only after its own deliveries
  completed *and* every earlier batch was acked.
* **On a failed delivery nothing is acked past it.** Under the work lock, that batch
  and every later batch already started are redone in order with ``redo`` (the
  synchronous path: retries, isolation, dead letters), so their outputs follow the
  failed batch's again, then acked. A redone batch's first deliveries are ignored.

It knows nothing of Kafka or Faust: ``start``, ``redo`` and ``ack`` are given (see
``streams.delivery.batch_agent``), so the unit tests drive it with fakes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)

X = TypeVar("X")
Deliveries = Sequence[Awaitable[Any]]


@dataclass(eq=False)
class _Batch(Generic[X]):
    items: list[X]
    delivery: asyncio.Future[Any]
    redone: bool = False
    settled: asyncio.Task[None] | None = None


async def _all(deliveries: Deliveries) -> None:
    if deliveries:
        await asyncio.gather(*deliveries)


def _quiet(fut: asyncio.Future[Any]) -> None:
    """Retrieve a delivery's outcome so an ignored failure is not reported as unretrieved."""
    if not fut.cancelled():
        fut.exception()


class Pipeline(Generic[X]):
    def __init__(
        self,
        start: Callable[[list[X]], Awaitable[Deliveries]],
        redo: Callable[[list[X]], Awaitable[None]],
        ack: Callable[[list[X]], Awaitable[None]],
        *,
        max_size: int,
        depth: int,
        name: str = "pipeline",
    ) -> None:
        if max_size < 1 or depth < 1:
            raise ValueError("a pipeline needs max_size >= 1 and depth >= 1")
        self._start, self._redo, self._ack = start, redo, ack
        self.max_size, self.depth, self.name = max_size, depth, name
        self._waiting: list[X] = []
        self._arrived = asyncio.Event()
        self._room = asyncio.Event()
        self._inflight: deque[_Batch[X]] = deque()
        self._work = asyncio.Lock()  # one batch's work (or a redo) at a time: outputs stay in order
        self._runner: asyncio.Task[None] | None = None
        self.sizes: list[int] = []  # of the batches started (tests, metrics)

    async def feed(self, items: Sequence[X]) -> None:
        """Queue arrived records; waits while ``max_size`` of them are already waiting."""
        if self._runner is None:
            self._runner = asyncio.create_task(self._run(), name=f"{self.name}-runner")
        elif self._runner.done():  # a bug, not a batch error: let the agent fail loudly
            self._runner.result()
            raise RuntimeError(f"{self.name}: the runner stopped")
        self._waiting.extend(items)
        self._arrived.set()
        while len(self._waiting) >= self.max_size:
            self._room.clear()
            await self._until(self._room)

    async def _until(self, event: asyncio.Event) -> None:
        """Wait for ``event``; re-raise if the runner died meanwhile (a bug, not a batch error)."""
        assert self._runner is not None
        waiter = asyncio.ensure_future(event.wait())
        try:
            await asyncio.wait({waiter, self._runner}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if self._runner.done():
            self._runner.result()
            raise RuntimeError(f"{self.name}: the runner stopped")

    async def _run(self) -> None:
        while True:
            while not self._waiting:
                self._arrived.clear()
                await self._arrived.wait()
            while len(self._inflight) >= self.depth:  # the oldest batch must be acked first
                oldest = self._inflight[0].settled
                assert oldest is not None
                await asyncio.wait({oldest})
            items = self._waiting[: self.max_size]
            del self._waiting[: self.max_size]
            self._room.set()
            async with self._work:
                self.sizes.append(len(items))
                delivery = asyncio.ensure_future(_all(await self._start(items)))
                delivery.add_done_callback(_quiet)
                batch = _Batch(items, delivery)
                previous = self._inflight[-1].settled if self._inflight else None
                self._inflight.append(batch)
                batch.settled = asyncio.create_task(self._settle(batch, previous),
                                                    name=f"{self.name}-settle")

    async def _settle(self, batch: _Batch[X], previous: asyncio.Task[None] | None) -> None:
        if previous is not None:
            await asyncio.wait({previous})  # acks in order (a settle task never raises)
        if not batch.redone:
            try:
                await batch.delivery
            except Exception as exc:
                await self._redo_from(batch, exc)
        await self._ack(batch.items)
        assert self._inflight[0] is batch
        self._inflight.popleft()

    async def _redo_from(self, failed: _Batch[X], exc: Exception) -> None:
        async with self._work:
            later = list(self._inflight)[list(self._inflight).index(failed):]
            log.warning("%s: a delivery of a batch of %d failed (%s: %s); redoing it and %d later "
                        "batch(es) before any is acked", self.name, len(failed.items),
                        type(exc).__name__, str(exc)[:500], len(later) - 1)
            for batch in later:
                batch.redone = True
                await self._redo(batch.items)

    async def close(self, drain_s: float = 5.0) -> None:
        """Stop taking work; give started batches ``drain_s`` to be delivered and acked.
        What is not acked by then is replayed by the next owner of its partition."""
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
        pending = [b.settled for b in self._inflight if b.settled is not None]
        if pending:
            _, late = await asyncio.wait(pending, timeout=drain_s)
            for task in late:
                task.cancel()
        self._waiting.clear()
