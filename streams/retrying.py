"""Run an effect until it is done or refused: the one retry loop of the workers.

Faust acks an event whose handler raised (TRAPS.md), and a dependency may be down for
hours, so an effect is retried for as long as its errors are retriable (``exc.retriable``
true, a timeout, a connection error; streams/errors.py), waiting with a capped, jittered
:class:`~streams.backoff.Backoff` between attempts: bounded for any number of attempts,
so the loop itself never fails. Any other error is returned, for the caller to decide
(the agents dead-letter the record, a client start gives up).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from streams.backoff import Backoff
from streams.errors import is_retriable

log = logging.getLogger(__name__)


async def until_done(
    run: Callable[[], Awaitable[object]],
    backoff: Backoff,
    *,
    what: str,
    on_retry: Callable[[], None] | None = None,
    extra: dict[str, object] | None = None,
) -> Exception | None:
    """``run()`` until it succeeds (→ None) or fails for a reason retrying cannot fix
    (→ that error). ``what`` names the effect in the log; ``on_retry`` counts each retry."""
    attempt = 0
    while True:
        try:
            await run()
            return None
        except Exception as exc:
            if not is_retriable(exc):
                return exc
            attempt += 1
            delay = backoff.delay(attempt)
            if on_retry is not None:
                on_retry()
            log.warning("%s: retriable %s, attempt %d, retrying in %.1fs: %s",
                        what, type(exc).__name__, attempt, delay, exc, extra=extra)
            await backoff.sleep(delay)
