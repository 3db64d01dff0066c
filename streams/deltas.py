"""Answer deltas joined by time: fewer ``token`` events per answer, the same text.

A generator yields text as fast as it makes it: the extractive one all at once, a
language model a few characters every few tens of milliseconds. Each event costs a
Kafka record, a decode in the gateway and a websocket frame, so the answerer sends
what arrived within one interval as one ``token`` event (:func:`coalesce`):

* the first delta goes out at once: the time to the first token does not grow;
* after it, at most one event per ``interval_s``: a delta that comes sooner waits,
  joined with those after it, until a timer sends them (not the next delta: a model
  that pauses does not hold back what it already said);
* what still waits when the generator ends, or fails, goes out before that end.

``interval_s <= 0`` passes every delta through as it comes. Closing the coalescing
generator (a cancelled query, a passed deadline) closes the one it reads, so an
LLM's HTTP stream stops too.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class _Failed:
    error: BaseException


class _Signal:
    """A marker in the queue between the reading task and the coalescing loop."""


_END = _Signal()  # the generator finished
_TICK = _Signal()  # the interval since the last event passed: send what waits

_Item = str | _Failed | _Signal


async def coalesce(deltas: AsyncIterator[str], interval_s: float) -> AsyncGenerator[str, None]:
    """The deltas of ``deltas``, in order, joined per ``interval_s`` (module docstring)."""
    if interval_s <= 0:
        try:
            async for delta in deltas:
                yield delta
        finally:
            await _close(deltas)
        return
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[_Item] = asyncio.Queue()
    reader = asyncio.create_task(_read(deltas, queue), name="answer-deltas")
    waiting: list[str] = []
    last_sent = float("-inf")
    timer: asyncio.TimerHandle | None = None
    try:
        while True:
            item = await queue.get()
            if isinstance(item, str):
                if not item:
                    continue
                if not waiting and loop.time() - last_sent >= interval_s:
                    yield item
                    last_sent = loop.time()
                    continue
                waiting.append(item)
                if timer is None:
                    timer = loop.call_at(last_sent + interval_s, queue.put_nowait, _TICK)
                continue
            if item is _TICK:
                timer = None
                if waiting:
                    yield "".join(waiting)
                    waiting.clear()
                    last_sent = loop.time()
                continue
            # the end, or the generator's error: what waits goes out first
            if waiting:
                yield "".join(waiting)
                waiting.clear()
            if isinstance(item, _Failed):
                raise item.error
            return
    finally:
        if timer is not None:
            timer.cancel()
        if not reader.done():
            reader.cancel()
        await asyncio.wait([reader])


async def _read(deltas: AsyncIterator[str], queue: asyncio.Queue[_Item]) -> None:
    """Move the generator's deltas into ``queue`` as they come, then its end or error."""
    try:
        async for delta in deltas:
            queue.put_nowait(delta)
    except BaseException as exc:  # handed to the consumer, which raises it after the text
        queue.put_nowait(_Failed(exc))
        if not isinstance(exc, Exception):
            raise
    else:
        queue.put_nowait(_END)
    finally:
        await _close(deltas)


async def _close(deltas: AsyncIterator[str]) -> None:
    aclose = getattr(deltas, "aclose", None)
    if aclose is not None:
        await aclose()
