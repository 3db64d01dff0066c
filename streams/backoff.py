"""Capped exponential backoff with jitter: the one delay formula of every retry loop.

A dependency may be down for hours; a retry loop then runs thousands of times.
``first * 2 ** (attempt - 1)`` computed before capping overflows a float after
about 1,000 attempts (``OverflowError``), inside the very loop that must never
crash. Here the *exponent* is capped, so :meth:`Backoff.delay` is bounded for any
attempt. Jitter spreads the retries of many workers that failed together, so they
do not hit a recovering service in lock-step.

Every policy is a constant of its own module (``AGENT_RETRY`` in
streams/resources.py…); :meth:`Backoff.wait` sleeps through an injectable
``sleep`` so tests drive thousands of attempts with a fake clock.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

#: 2**62 times any sane first delay is far above any cap, and far below float overflow
_MAX_DOUBLINGS = 62

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delay before retry ``attempt`` (1, 2, …): ``first_s`` doubling up to ``max_s``,
    each delay then shortened by up to ``jitter`` (a fraction) at random."""

    first_s: float
    max_s: float
    jitter: float = 0.2
    sleep: Sleep = field(default=asyncio.sleep, compare=False, repr=False)
    rand: Callable[[], float] = field(default=random.random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not 0 < self.first_s <= self.max_s:
            raise ValueError(f"backoff needs 0 < first_s <= max_s, got {self.first_s}, {self.max_s}")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"backoff jitter must be in [0, 1), got {self.jitter}")

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry ``attempt``; in ``(0, max_s]`` for every attempt ≥ 1."""
        if attempt < 1:
            return 0.0
        doublings = min(attempt - 1, _MAX_DOUBLINGS)
        capped = min(self.max_s, self.first_s * float(2**doublings))
        return capped * (1.0 - self.jitter * self.rand())

    async def wait(self, attempt: int) -> float:
        """Sleep before retry ``attempt``; returns the delay slept."""
        seconds = self.delay(attempt)
        await self.sleep(seconds)
        return seconds
