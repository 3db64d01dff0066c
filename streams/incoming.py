"""One Kafka record as every agent sees it, and the decoders that turn it into an event.

:class:`Incoming` holds a record's coordinates (topic, partition, offset), raw key
and value, timestamp and headers, copied out of Faust's event, so handlers, dead
letters and tests never touch Faust's types. :func:`decoder` validates the value as
one event model (raising :class:`~schemas.errors.InvalidEvent`); :func:`raw` passes
the record through, for the shipper, which stores any bytes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import faust

from schemas.codec import decode
from schemas.events import Event

E = TypeVar("E", bound=Event)


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


#: handles one record; raising a retriable error retries it, any other dead-letters it
Handler = Callable[[Incoming], Awaitable[None]]


def decoder(model: type[E]) -> Callable[[Incoming], E]:
    """Validate a record's bytes as ``model`` (raises :class:`InvalidEvent`)."""
    return lambda msg: decode(model, msg.value)


def raw(msg: Incoming) -> Incoming:
    """The identity decoder, for agents that take any bytes (the shipper)."""
    return msg
