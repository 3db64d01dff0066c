"""Per-event handling shared by every agent: retry, dead-letter, metrics.

Faust acks an event whose handler raised (TRAPS.md), so no exception may escape
an agent. :func:`process` runs the handler and decides:

* success → the agent moves on and Faust acks the event;
* retriable error (``exc.retriable`` true, a timeout or a connection error) →
  wait with the context's capped, jittered backoff (streams/backoff.py) and try
  again, as long as it takes: a dependency that is down delays work, it never
  drops it, and no number of attempts can make the loop itself fail;
* anything else (invalid payload, refused write) → a ``DeadLetter`` with the
  original coordinates, bounded prefixes of key and value, the agent, the error
  class and message, then ack. A dead letter is never dead-lettered again.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import faust

from schemas.codec import decode
from schemas.errors import InvalidEvent
from schemas.events import DeadLetter, Event
from streams.context import AgentContext
from streams.errors import is_retriable
from streams.metrics import (
    BATCH_SIZE,
    DEAD_LETTERS,
    DEAD_LETTERS_DROPPED,
    EVENTS,
    HANDLE_SECONDS,
    RETRIES,
)
from streams.pipeline import Deliveries, Pipeline

log = logging.getLogger(__name__)

#: what a dead letter keeps of the record: bounded prefixes (plus sizes and a hash)
MAX_DEAD_LETTER_VALUE = 64 * 1024
MAX_DEAD_LETTER_KEY = 1024
MAX_DEAD_LETTER_MESSAGE = 4000
#: error messages in log lines are cut here (a refused record may be echoed in them)
LOGGED_ERROR_CHARS = 500


@dataclass(frozen=True, slots=True)
class Incoming:
    """One Kafka record as the agents see it: coordinates plus raw bytes."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float  # seconds since the epoch (broker/producer timestamp)
    headers: tuple[tuple[str, bytes], ...] = ()

    @classmethod
    def from_event(cls, event: faust.EventT) -> Incoming:
        msg = event.message
        raw_headers: Any = msg.headers or ()
        pairs: Iterable[tuple[Any, Any]] = (
            raw_headers.items() if isinstance(raw_headers, dict) else raw_headers
        )
        return cls(
            topic=msg.topic,
            partition=msg.partition,
            offset=msg.offset,
            key=msg.key,
            value=msg.value,
            timestamp=msg.timestamp,
            headers=tuple((str(k), v if isinstance(v, bytes) else str(v or "").encode()) for k, v in pairs),
        )

    def header(self, name: str) -> bytes | None:
        return next((v for k, v in self.headers if k == name), None)

    @property
    def key_text(self) -> str | None:
        return None if self.key is None else self.key.decode("utf-8", errors="replace")


Handler = Callable[[Incoming], Awaitable[None]]
E = TypeVar("E", bound=Event)
T = TypeVar("T")
#: a batch handler may return the deliveries it queued (``ctx.send``'s futures) instead of
#: awaiting them: :func:`process_batch` awaits them as part of the batch (inside its retries),
#: or, in a pipelined :func:`batch_agent`, while the next batch runs
BatchHandler = Callable[[list[tuple[Incoming, T]]], Awaitable[Deliveries | None]]


async def process(ctx: AgentContext, agent: str, msg: Incoming, handler: Handler) -> None:
    started = time.perf_counter()
    error = await _until_done(ctx, agent, _where(msg), lambda: handler(msg))
    if error is not None:
        await dead_letter(ctx, agent, msg, error)
        EVENTS.labels(agent, "dead_lettered").inc()
        return
    EVENTS.labels(agent, "ok").inc()
    HANDLE_SECONDS.labels(agent).observe(time.perf_counter() - started)


async def _until_done(
    ctx: AgentContext, agent: str, where: str, run: Callable[[], Awaitable[None]]
) -> Exception | None:
    """Run ``run`` until it succeeds (→ None) or fails for a reason retrying cannot fix
    (→ that error). Retriable errors wait with the context's backoff, for as long as the
    outage lasts: the delay is bounded for any number of attempts (streams/backoff.py)."""
    attempt = 0
    while True:
        try:
            await run()
            return None
        except Exception as exc:
            if not is_retriable(exc):
                return exc
            attempt += 1
            delay = ctx.retry.delay(attempt)
            RETRIES.labels(agent).inc()
            log.warning(
                "%s: retriable %s at %s, attempt %d, retrying in %.1fs: %s",
                agent, type(exc).__name__, where, attempt, delay, exc, extra={"agent": agent},
            )
            await ctx.retry.sleep(delay)


def _where(msg: Incoming, n: int = 1) -> str:
    return f"{msg.topic}[{msg.partition}]@{msg.offset}" + (f"+{n}" if n > 1 else "")


def letter_for(agent: str, msg: Incoming, exc: BaseException) -> DeadLetter:
    """The dead letter of one record: its coordinates, a bounded prefix of its key and
    value with their sizes and a hash, and why. The record itself stays in its topic
    (by retention), so an oversized record never makes an oversized dead letter."""
    value = msg.value or b""
    key = msg.key or b""
    return DeadLetter(
        topic=msg.topic,
        partition=msg.partition,
        offset=msg.offset,
        key=None if msg.key is None else key[:MAX_DEAD_LETTER_KEY].decode("utf-8", errors="replace"),
        key_truncated=len(key) > MAX_DEAD_LETTER_KEY,
        key_bytes=len(key),
        value=value[:MAX_DEAD_LETTER_VALUE].decode("utf-8", errors="replace"),
        value_truncated=len(value) > MAX_DEAD_LETTER_VALUE,
        value_bytes=len(value),
        value_sha256=hashlib.sha256(value).hexdigest(),
        agent=agent,
        error_type=type(exc).__name__,
        message=str(exc)[:MAX_DEAD_LETTER_MESSAGE],
    )


async def dead_letter(ctx: AgentContext, agent: str, msg: Incoming, exc: BaseException) -> None:
    """Send the record's :class:`DeadLetter` to ``dlq``, then the caller acks the record.

    * A record of ``dlq`` itself is never dead-lettered again (that would grow a loop
      when the shipper cannot store a dead letter): it is logged and counted.
    * Kafka unreachable → retried with backoff until it takes the letter.
    * Kafka refusing the letter itself (too large, invalid) → sent once more without
      the value prefix; if that is refused too, logged and counted, never retried
      forever — the record still lies in its topic at the offset the log names.
    """
    if ctx.topics.base_name(msg.topic) == "dlq":
        DEAD_LETTERS_DROPPED.labels(agent, "dead_letter_refused").inc()
        log.error(
            "%s: a dead letter itself failed at %s (not dead-lettered again): %s: %s",
            agent, _where(msg), type(exc).__name__, str(exc)[:LOGGED_ERROR_CHARS],
            extra={"agent": agent, "topic": msg.topic},
        )
        return
    letter = letter_for(agent, msg, exc)
    log.error(
        "%s: dead-lettering %s: %s: %s",
        agent, _where(msg), type(exc).__name__, str(exc)[:LOGGED_ERROR_CHARS],
        extra={"agent": agent, "topic": msg.topic, "trace_id": letter.trace_id},
    )
    key = letter.key or ""
    refused = await _until_done(ctx, agent, f"dead letter of {_where(msg)}", lambda: _send(ctx, agent, key, letter))
    if refused is not None:
        log.warning("%s: dead letter of %s refused (%s); sending it without the value",
                    agent, _where(msg), refused, extra={"agent": agent})
        bare = letter.model_copy(update={"value": "", "value_truncated": letter.value_bytes > 0})
        refused = await _until_done(ctx, agent, f"dead letter of {_where(msg)}", lambda: _send(ctx, agent, key, bare))
    if refused is not None:
        DEAD_LETTERS_DROPPED.labels(agent, "kafka_refused").inc()
        log.critical("%s: Kafka refused the dead letter of %s: %s; the record stays in its topic",
                     agent, _where(msg), refused, extra={"agent": agent, "topic": msg.topic})
        return
    DEAD_LETTERS.labels(agent, type(exc).__name__).inc()


async def _send(ctx: AgentContext, agent: str, key: str, letter: DeadLetter) -> None:
    await (await ctx.send(agent, ctx.topics.dlq, key, letter))


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


def decoder(model: type[E]) -> Callable[[Incoming], E]:
    """Validate a record's bytes as ``model`` (raises :class:`InvalidEvent`)."""
    return lambda msg: decode(model, msg.value)


def raw(msg: Incoming) -> Incoming:
    """The identity decoder, for agents that take any bytes (the shipper)."""
    return msg


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
    error = await _until_done(ctx, agent, _where(valid[0][0], len(valid)), attempt)
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
