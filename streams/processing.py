"""Per-event handling shared by every agent: retry, dead-letter, metrics.

Faust acks an event whose handler raised (TRAPS.md), so no exception may escape
an agent. :func:`process` runs the handler and decides:

* success → the agent moves on and Faust acks the event;
* retriable error (``exc.retriable`` true, a timeout or a connection error) →
  wait with capped exponential backoff and try again, as long as it takes: a
  dependency that is down delays work, it never drops it;
* anything else (invalid payload, refused write) → a ``DeadLetter`` with the
  original coordinates, the agent, the error class and message, then ack.
"""

from __future__ import annotations

import asyncio
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
from streams.metrics import BATCH_SIZE, DEAD_LETTERS, EVENTS, HANDLE_SECONDS, RETRIES

log = logging.getLogger(__name__)

MAX_DEAD_LETTER_VALUE = 64 * 1024
BACKOFF_FIRST_S = 0.2
BACKOFF_MAX_S = 10.0


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
BatchHandler = Callable[[list[tuple[Incoming, T]]], Awaitable[None]]


async def process(ctx: AgentContext, agent: str, msg: Incoming, handler: Handler) -> None:
    attempt = 0
    started = time.perf_counter()
    while True:
        try:
            await handler(msg)
        except Exception as exc:
            if is_retriable(exc):
                attempt += 1
                await _backoff(agent, attempt, exc, f"{msg.topic}[{msg.partition}]@{msg.offset}")
                continue
            await dead_letter(ctx, agent, msg, exc)
            EVENTS.labels(agent, "dead_lettered").inc()
            return
        EVENTS.labels(agent, "ok").inc()
        HANDLE_SECONDS.labels(agent).observe(time.perf_counter() - started)
        return


async def dead_letter(ctx: AgentContext, agent: str, msg: Incoming, exc: BaseException) -> None:
    value = msg.value or b""
    letter = DeadLetter(
        topic=msg.topic,
        partition=msg.partition,
        offset=msg.offset,
        key=msg.key_text,
        value=value[:MAX_DEAD_LETTER_VALUE].decode("utf-8", errors="replace"),
        value_truncated=len(value) > MAX_DEAD_LETTER_VALUE,
        agent=agent,
        error_type=type(exc).__name__,
        message=str(exc)[:4000],
    )
    log.error(
        "%s: dead-lettering %s[%d]@%d: %s: %s",
        agent, msg.topic, msg.partition, msg.offset, type(exc).__name__, exc,
        extra={"agent": agent, "topic": msg.topic, "trace_id": letter.trace_id},
    )
    attempt = 0
    while True:  # the dead letter itself must not be lost: retry until Kafka takes it
        try:
            fut = await ctx.send(agent, ctx.topics.dlq, msg.key_text or "", letter)
            await fut
            break
        except Exception as send_exc:
            attempt += 1
            log.warning("%s: dead letter not delivered (%s), retrying", agent, send_exc)
            await asyncio.sleep(min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2**attempt))
    DEAD_LETTERS.labels(agent, type(exc).__name__).inc()


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


async def _backoff(agent: str, attempt: int, exc: BaseException, where: str) -> None:
    delay = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** (attempt - 1))
    RETRIES.labels(agent).inc()
    log.warning(
        "%s: retriable %s at %s, attempt %d, retrying in %.1fs: %s",
        agent, type(exc).__name__, where, attempt, delay, exc, extra={"agent": agent},
    )
    await asyncio.sleep(delay)


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
) -> None:
    """Decode (invalid → dead letter), then run ``handler`` over the valid events.

    Retriable errors retry the whole batch (effects are idempotent). A non-retriable
    error is isolated: the batch is re-run one event at a time, so only the event
    that fails again is dead-lettered.
    """
    valid: list[tuple[Incoming, T]] = []
    for msg in msgs:
        try:
            valid.append((msg, decode_item(msg)))
        except InvalidEvent as exc:
            await dead_letter(ctx, agent, msg, exc)
            EVENTS.labels(agent, "dead_lettered").inc()
    if not valid:
        return
    BATCH_SIZE.labels(agent).observe(len(valid))
    started = time.perf_counter()
    attempt = 0
    while True:
        try:
            await handler(valid)
        except Exception as exc:
            if is_retriable(exc):
                attempt += 1
                first = valid[0][0]
                await _backoff(agent, attempt, exc, f"{first.topic}[{first.partition}]@{first.offset}+{len(valid)}")
                continue
            if len(valid) == 1:
                await dead_letter(ctx, agent, valid[0][0], exc)
                EVENTS.labels(agent, "dead_lettered").inc()
                return
            log.warning("%s: batch of %d failed (%s: %s); isolating the bad event",
                        agent, len(valid), type(exc).__name__, exc, extra={"agent": agent})
            for item in valid:
                await process(ctx, agent, item[0], _single(handler, item))
            return
        EVENTS.labels(agent, "ok").inc(len(valid))
        HANDLE_SECONDS.labels(agent).observe(time.perf_counter() - started)
        return


def _single(handler: BatchHandler[T], item: tuple[Incoming, T]) -> Handler:
    async def run(_: Incoming) -> None:
        await handler([item])

    return run


def batch_agent(
    ctx: AgentContext,
    agent: str,
    decode_item: Callable[[Incoming], T],
    handler: BatchHandler[T],
    *,
    max_size: int,
    within_s: float,
) -> Callable[[faust.StreamT], Awaitable[None]]:
    """A Faust agent body that handles micro-batches (up to ``max_size`` events or
    ``within_s`` seconds) and acks each event only after the whole batch succeeded
    or was dead-lettered. ``noack_take`` never acks by itself, unlike ``take``
    (TRAPS.md), so a crash mid-batch replays the batch instead of losing it.
    """

    async def consume(stream: faust.StreamT) -> None:
        await ctx.started.wait()
        # noack_take is on faust's Stream, not on the StreamT protocol it is typed with
        async for events in stream.noack_take(max_size, within_s):  # type: ignore[attr-defined]
            msgs = [Incoming.from_event(e) for e in events]
            await process_batch(ctx, agent, msgs, decode_item, handler)
            for event in events:
                await stream.ack(event)

    consume.__name__ = consume.__qualname__ = agent
    return consume
