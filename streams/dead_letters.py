"""Dead letters: what an agent sends to ``dlq`` for a record no retry can fix.

A record that is invalid, or whose effect the target refuses (a vector of the wrong
length, a document over a limit), becomes a :class:`~schemas.events.DeadLetter` with
its coordinates, bounded prefixes of key and value with their sizes and a hash, the
agent, and the error's class and message (:func:`letter_for`); then the agent acks
it and moves on. The record itself stays in its topic (by retention), so an oversized
record never makes an oversized dead letter. A dead letter is never dead-lettered again.
"""

from __future__ import annotations

import hashlib
import logging

from schemas.events import DeadLetter
from streams.incoming import Incoming
from streams.metrics import DEAD_LETTERS, DEAD_LETTERS_DROPPED, RETRIES
from streams.resources import AgentContext
from streams.retrying import until_done

log = logging.getLogger(__name__)

#: what a dead letter keeps of the record: bounded prefixes (plus sizes and a hash)
MAX_DEAD_LETTER_VALUE = 64 * 1024
MAX_DEAD_LETTER_KEY = 1024
MAX_DEAD_LETTER_MESSAGE = 4000
#: error messages in log lines are cut here (a refused record may be echoed in them)
LOGGED_ERROR_CHARS = 500


def where(msg: Incoming, n: int = 1) -> str:
    """``topic[partition]@offset`` (``+n`` for a batch of n records from there), for logs."""
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
            agent, where(msg), type(exc).__name__, str(exc)[:LOGGED_ERROR_CHARS],
            extra={"agent": agent, "topic": msg.topic},
        )
        return
    letter = letter_for(agent, msg, exc)
    log.error(
        "%s: dead-lettering %s: %s: %s",
        agent, where(msg), type(exc).__name__, str(exc)[:LOGGED_ERROR_CHARS],
        extra={"agent": agent, "topic": msg.topic, "trace_id": letter.trace_id},
    )
    key = letter.key or ""
    refused = await _send_until_done(ctx, agent, msg, key, letter)
    if refused is not None:
        log.warning("%s: dead letter of %s refused (%s); sending it without the value",
                    agent, where(msg), refused, extra={"agent": agent})
        bare = letter.model_copy(update={"value": "", "value_truncated": letter.value_bytes > 0})
        refused = await _send_until_done(ctx, agent, msg, key, bare)
    if refused is not None:
        DEAD_LETTERS_DROPPED.labels(agent, "kafka_refused").inc()
        log.critical("%s: Kafka refused the dead letter of %s: %s; the record stays in its topic",
                     agent, where(msg), refused, extra={"agent": agent, "topic": msg.topic})
        return
    DEAD_LETTERS.labels(agent, type(exc).__name__).inc()


async def _send_until_done(
    ctx: AgentContext, agent: str, msg: Incoming, key: str, letter: DeadLetter
) -> Exception | None:
    async def send() -> None:
        await (await ctx.send(agent, ctx.topics.dlq, key, letter))

    return await until_done(send, ctx.retry, what=f"{agent} at dead letter of {where(msg)}",
                            on_retry=RETRIES.labels(agent).inc, extra={"agent": agent})
