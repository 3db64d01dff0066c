"""Weaviate failures as retry decisions: an outage is retried, a refused object is not.

``insert_many`` reports objects that the server refused one by one; when *every*
object of a request is refused, the client raises
``WeaviateInsertManyAllFailedError`` instead. Either way the server was reached
and gave its reason for each object — a vector of the wrong length, a property of
the wrong type: retrying the same object will not help, so it is
:class:`~streams.errors.EffectFailed` (the agent isolates the batch and
dead-letters the object with Weaviate's reason). Only reasons that describe the
server's state rather than the object (shutting down, read-only after disk
pressure, timeouts, overload) are :class:`~streams.errors.DependencyUnavailable`,
as is every failure to reach the server at all.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from typing import TypeVar

from weaviate.exceptions import WeaviateBaseError, WeaviateInsertManyAllFailedError

from streams.errors import DependencyUnavailable, EffectFailed, StreamsError

#: per-object reasons that are about the server, not the object (lower case)
TRANSIENT_REASONS = (
    "read-only", "read only", "readonly", "no space left", "shutting down", "shut down",
    "deadline exceeded", "timeout", "timed out", "unavailable", "too many requests",
    "resource exhausted", "not ready", "connection refused", "connection reset",
)


T = TypeVar("T")


async def within(seconds: float, call: Awaitable[T], what: str) -> T:
    """``call``'s result, or :class:`~streams.errors.DependencyUnavailable` once it has taken
    ``seconds``. weaviate-client retries a gRPC call that finds the server unavailable by
    itself, sleeping 1 + 2 + … + 32 s with no setting to shorten it; bounded here, every
    Weaviate call fails within its deadline and the agents' own backoff (capped by
    ``AICHAT_AGENT_RETRY_MAX_S``) paces the attempts while Weaviate is down."""
    try:
        async with asyncio.timeout(seconds):
            return await call
    except TimeoutError as exc:
        raise DependencyUnavailable(f"Weaviate: {what} gave no answer within {seconds:g}s") from exc


def is_transient(reason: str) -> bool:
    text = reason.lower()
    return any(marker in text for marker in TRANSIENT_REASONS)


def refused_objects(reasons: Sequence[str], total: int, first: str) -> StreamsError:
    """The error for a request of ``total`` objects of which ``len(reasons)`` were refused
    with these reasons; ``first`` names the first refused object."""
    distinct = sorted(set(reasons))
    shown = "; ".join(r[:300] for r in distinct[:3])
    counted = f"{len(reasons)} of {total} objects failed; first {first}"
    if any(is_transient(r) for r in distinct):
        return DependencyUnavailable(f"Weaviate could not write them right now: {counted}: {shown}")
    return EffectFailed(f"Weaviate refused them: {counted}: {shown}")


def insert_failed(exc: WeaviateBaseError, total: int, what: str) -> StreamsError:
    """The error for an exception raised by ``insert_many``."""
    if isinstance(exc, WeaviateInsertManyAllFailedError):
        reason = str(exc).removeprefix("Every object failed during insertion. ")
        return refused_objects([reason] * total, total, what)
    return DependencyUnavailable(f"Weaviate: writing {what} failed: {exc}")
