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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import faust

from schemas.events import DeadLetter
from streams.context import AgentContext
from streams.errors import is_retriable
from streams.metrics import DEAD_LETTERS, EVENTS, HANDLE_SECONDS, RETRIES

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

    @classmethod
    def from_event(cls, event: faust.EventT) -> Incoming:
        msg = event.message
        return cls(
            topic=msg.topic,
            partition=msg.partition,
            offset=msg.offset,
            key=msg.key,
            value=msg.value,
            timestamp=msg.timestamp,
        )

    @property
    def key_text(self) -> str | None:
        return None if self.key is None else self.key.decode("utf-8", errors="replace")


Handler = Callable[[Incoming], Awaitable[None]]


async def process(ctx: AgentContext, agent: str, msg: Incoming, handler: Handler) -> None:
    attempt = 0
    started = time.perf_counter()
    while True:
        try:
            await handler(msg)
        except Exception as exc:
            if is_retriable(exc):
                attempt += 1
                delay = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** (attempt - 1))
                RETRIES.labels(agent).inc()
                log.warning(
                    "%s: retriable %s at %s[%d]@%d, attempt %d, retrying in %.1fs: %s",
                    agent, type(exc).__name__, msg.topic, msg.partition, msg.offset,
                    attempt, delay, exc, extra={"agent": agent, "topic": msg.topic},
                )
                await asyncio.sleep(delay)
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
