"""How agents take their events and when they ack them: the workers' delivery runtime.

Faust acks an event whose handler raised (TRAPS.md), so no exception may escape an
agent, and Faust's own ``concurrency`` can commit past an unfinished event; every
agent body therefore comes from here, and each acks only what is finished:

* :func:`per_event_agent`: one event at a time, in order;
* :func:`batch_agent`: micro-batches (``noack_take``), acked after the whole batch;
  with ``depth`` ≥ 2 a batch's deliveries complete while the next batch runs
  (streams/pipeline.py);
* :func:`concurrent_queries`: up to N queries at once, acked strictly in arrival
  order, a query stopped when its cancellation arrives.

Each event (or batch) goes through :func:`process` / :func:`process_batch`:

* success → counted, and acked by the loop;
* retriable error → retried with the context's backoff for as long as the outage
  lasts (streams/retrying.py): a dependency that is down delays work, never drops it;
* anything else → a dead letter (streams/dead_letters.py), then acked; a failing
  batch is re-run one event at a time, so only the event that fails alone is
  dead-lettered.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import faust

from schemas.codec import decode
from schemas.errors import InvalidEvent
from schemas.events import EVENT_TYPE_HEADER, QUERY_CANCELLED, QueryCancelled
from streams.dead_letters import LOGGED_ERROR_CHARS, dead_letter, where
from streams.incoming import Handler, Incoming
from streams.metrics import BATCH_SIZE, EVENTS, HANDLE_SECONDS, RETRIES
from streams.pipeline import Deliveries, Pipeline
from streams.resources import AgentContext
from streams.retrying import until_done

log = logging.getLogger(__name__)

T = TypeVar("T")
#: a batch handler may return the deliveries it queued (``ctx.send``'s futures) instead of
#: awaiting them: :func:`process_batch` awaits them as part of the batch (inside its retries),
#: or, in a pipelined :func:`batch_agent`, while the next batch runs
BatchHandler = Callable[[list[tuple[Incoming, T]]], Awaitable[Deliveries | None]]


async def process(ctx: AgentContext, agent: str, msg: Incoming, handler: Handler) -> None:
    started = time.perf_counter()
    error = await _until_done(ctx, agent, where(msg), lambda: handler(msg))
    if error is not None:
        await dead_letter(ctx, agent, msg, error)
        EVENTS.labels(agent, "dead_lettered").inc()
        return
    EVENTS.labels(agent, "ok").inc()
    HANDLE_SECONDS.labels(agent).observe(time.perf_counter() - started)

async def _until_done(
    ctx: AgentContext, agent: str, at: str, run: Callable[[], Awaitable[object]]
) -> Exception | None:
    return await until_done(run, ctx.retry, what=f"{agent} at {at}",
                            on_retry=RETRIES.labels(agent).inc, extra={"agent": agent})


def per_event_agent(ctx: AgentContext, agent: str, handler: Handler) -> Callable[[faust.StreamT], Awaitable[None]]:
    """The body of a Faust agent that handles its events one by one, in order.

    ``concurrency`` stays 1 (TRAPS.md: >1 can commit past an in-flight event);
    agents scale by partitions and workers.
    """

    async def consume(stream: faust.StreamT) -> None:
        await ctx.started.wait()
        async for event in stream.events():
            await process(ctx, agent, Incoming.from_event(event), handler)

    consume.__name__ = consume.__qualname__ = agent
    return consume


async def process_batch(
    ctx: AgentContext,
    agent: str,
    msgs: Sequence[Incoming],
    decode_item: Callable[[Incoming], T],
    handler: BatchHandler[T],
    *,
    defer: bool = False,
) -> Deliveries:
    """Decode (invalid → dead letter), then run ``handler`` over the valid events.

    Retriable errors retry the whole batch (effects are idempotent). A non-retriable
    error is isolated: the batch is re-run one event at a time, so only the event
    that fails again is dead-lettered. The deliveries the handler returns are awaited
    as part of each attempt, unless ``defer``: then the successful attempt's are
    returned, unawaited, for the caller to await before it acks (streams/pipeline.py).
    """
    deferred: Deliveries = ()

    async def attempt() -> None:
        nonlocal deferred
        queued = await handler(valid) or ()
        if defer:
            deferred = queued
        else:
            await delivered(queued)

    valid: list[tuple[Incoming, T]] = []
    for msg in msgs:
        try:
            valid.append((msg, decode_item(msg)))
        except InvalidEvent as exc:
            await dead_letter(ctx, agent, msg, exc)
            EVENTS.labels(agent, "dead_lettered").inc()
    if not valid:
        return ()
    BATCH_SIZE.labels(agent).observe(len(valid))
    started = time.perf_counter()
    error = await _until_done(ctx, agent, where(valid[0][0], len(valid)), attempt)
    if error is None:
        EVENTS.labels(agent, "ok").inc(len(valid))
        HANDLE_SECONDS.labels(agent).observe(time.perf_counter() - started)
        return deferred
    if len(valid) == 1:
        await dead_letter(ctx, agent, valid[0][0], error)
        EVENTS.labels(agent, "dead_lettered").inc()
        return ()
    log.warning("%s: batch of %d failed (%s: %s); isolating the bad event",
                agent, len(valid), type(error).__name__, str(error)[:LOGGED_ERROR_CHARS],
                extra={"agent": agent})
    for item in valid:
        await process(ctx, agent, item[0], _single(handler, item))
    return ()


async def delivered(futures: Deliveries) -> None:
    """Wait until the broker acknowledged every queued event (``AgentContext.delivered``)."""
    if futures:
        await asyncio.gather(*futures)


def _single(handler: BatchHandler[T], item: tuple[Incoming, T]) -> Handler:
    async def run(_: Incoming) -> None:
        await delivered(await handler([item]) or ())

    return run


def batch_agent(
    ctx: AgentContext,
    agent: str,
    decode_item: Callable[[Incoming], T],
    handler: BatchHandler[T],
    *,
    max_size: int,
    within_s: float,
    depth: int = 1,
) -> Callable[[faust.StreamT], Awaitable[None]]:
    """A Faust agent body that handles micro-batches (up to ``max_size`` events or
    ``within_s`` seconds) and acks each event only after the whole batch succeeded
    or was dead-lettered. ``noack_take`` never acks by itself, unlike ``take``
    (TRAPS.md), so a crash mid-batch replays the batch instead of losing it.

    ``depth`` 1: one batch at a time; ``noack_take`` waits the whole window after each
    batch (unless ``max_size`` events come first). ``depth`` ≥ 2 (streams/pipeline.py):
    a batch's deliveries complete while the next batch runs, at most ``depth`` batches
    between start and ack, acks in order and never past a failed delivery; and a batch
    takes what arrived while the previous one ran, up to ``max_size``, without a second
    window.
    """

    async def consume(stream: faust.StreamT) -> None:
        await ctx.started.wait()
        if depth > 1:
            await _pipelined(ctx, agent, stream, decode_item, handler, max_size, within_s, depth)
            return
        # noack_take is on faust's Stream, not on the StreamT protocol it is typed with
        async for events in stream.noack_take(max_size, within_s):  # type: ignore[attr-defined]
            msgs = [Incoming.from_event(e) for e in events]
            await process_batch(ctx, agent, msgs, decode_item, handler)
            for event in events:
                await stream.ack(event)

    consume.__name__ = consume.__qualname__ = agent
    return consume


async def _pipelined(
    ctx: AgentContext,
    agent: str,
    stream: faust.StreamT,
    decode_item: Callable[[Incoming], T],
    handler: BatchHandler[T],
    max_size: int,
    within_s: float,
    depth: int,
) -> None:
    async def start(events: list[faust.EventT]) -> Deliveries:
        msgs = [Incoming.from_event(e) for e in events]
        return await process_batch(ctx, agent, msgs, decode_item, handler, defer=True)

    async def redo(events: list[faust.EventT]) -> None:
        await process_batch(ctx, agent, [Incoming.from_event(e) for e in events], decode_item, handler)

    async def ack(events: list[faust.EventT]) -> None:
        for event in events:
            await stream.ack(event)

    pipeline: Pipeline[faust.EventT] = Pipeline(start, redo, ack, max_size=max_size, depth=depth, name=agent)
    try:
        async for events in stream.noack_take(max_size, within_s):  # type: ignore[attr-defined]
            await pipeline.feed(events)
    finally:
        await pipeline.close()


def is_cancellation(msg: Incoming) -> bool:
    return msg.header(EVENT_TYPE_HEADER) == QUERY_CANCELLED.encode()


def concurrent_queries(
    ctx: AgentContext, agent: str, handle: Handler, limit: int
) -> Callable[[faust.StreamT], Awaitable[None]]:
    """Answer up to ``limit`` queries at once, and stop one when its cancellation arrives.

    Faust's own ``concurrency`` can commit past an unfinished event (TRAPS.md), so
    this loop acks itself, strictly in arrival order: an event is acked only when it
    and every event before it on the stream are finished. A crash replays whatever
    was unfinished; a replayed query past its deadline is answered with an error the
    gateway no longer listens for.
    """

    async def consume(stream: faust.StreamT) -> None:
        await ctx.started.wait()
        slots = asyncio.Semaphore(limit)
        running: dict[str, asyncio.Task[None]] = {}
        pending: deque[tuple[faust.EventT, asyncio.Task[None] | None]] = deque()
        acking = asyncio.Lock()

        async def ack_finished() -> None:
            async with acking:
                while pending and (pending[0][1] is None or pending[0][1].done()):
                    event, _ = pending.popleft()
                    await stream.ack(event)

        async def run(msg: Incoming, query_id: str) -> None:
            try:
                await process(ctx, agent, msg, handle)
            except asyncio.CancelledError:
                log.info("query %s cancelled", query_id, extra={"query_id": query_id})
            finally:
                running.pop(query_id, None)
                slots.release()
                asyncio.get_running_loop().call_soon(lambda: asyncio.ensure_future(ack_finished()))

        try:
            # noack: this loop acks itself (noack is on faust's Stream, not the StreamT protocol)
            async for event in stream.noack().events():  # type: ignore[attr-defined]
                msg = Incoming.from_event(event)
                if is_cancellation(msg):
                    task = None
                    try:
                        cancelled = decode(QueryCancelled, msg.value)
                    except InvalidEvent as exc:
                        await dead_letter(ctx, agent, msg, exc)
                    else:
                        target = running.get(cancelled.query_id)
                        if target is not None:
                            target.cancel()
                    pending.append((event, None))
                else:
                    await slots.acquire()
                    query_id = (msg.key or b"").decode(errors="replace")
                    task = asyncio.create_task(run(msg, query_id), name=f"answer-{query_id}")
                    running[query_id] = task
                    pending.append((event, task))
                await ack_finished()
        finally:
            for task in list(running.values()):
                task.cancel()  # unfinished: not acked, answered again after a restart

    consume.__name__ = consume.__qualname__ = agent
    return consume
