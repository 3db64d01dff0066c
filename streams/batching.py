"""Gather concurrent single calls into one batched call (query embeddings).

The answerer works on several questions at once, and each needs one embedding. One
model call per question pays the model's fixed cost each time; batched, 32 short
questions cost little more than one. :class:`MicroBatcher` takes single items,
waits at most ``max_wait_s`` for company (only when the model is idle: items that
arrive while it is busy go with the next call at once), calls ``run`` with up to
``max_size`` items, and hands each caller its own result. A failure of the call
fails each caller of that batch; a caller that gave up (cancelled) is skipped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class MicroBatcher(Generic[T, R]):
    def __init__(self, run: Callable[[list[T]], Awaitable[Sequence[R]]], *, max_size: int,
                 max_wait_s: float) -> None:
        if max_size < 1 or max_wait_s < 0:
            raise ValueError("a micro-batch needs max_size >= 1 and max_wait_s >= 0")
        self._run, self.max_size, self.max_wait_s = run, max_size, max_wait_s
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._full = asyncio.Event()
        self._drainer: asyncio.Task[None] | None = None
        self.calls = 0  # batched calls made (for tests and metrics)

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if len(self._pending) >= self.max_size:
            self._full.set()
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain(), name="micro-batcher")
        return await future

    async def _drain(self) -> None:
        if len(self._pending) < self.max_size and self.max_wait_s > 0:
            try:  # the model is idle: wait a little for company
                await asyncio.wait_for(self._full.wait(), self.max_wait_s)
            except TimeoutError:
                pass
        while self._pending:  # whatever came while the model was busy goes at once
            self._full.clear()
            batch = [(i, f) for i, f in self._pending[: self.max_size] if not f.done()]
            del self._pending[: self.max_size]
            if not batch:
                continue
            self.calls += 1
            try:
                results = await self._run([item for item, _ in batch])
            except Exception as exc:  # each caller gets the error, the batcher goes on
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)
