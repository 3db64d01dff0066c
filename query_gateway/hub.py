"""The hub: all sessions of one app — what they share, their lifecycle, drain and shutdown.

    app ── Hub(settings, transport, limiter) ──► sessions (open websockets)
            ├── rate_limit(principal)       per-user budget, fail-open (ratelimit.FailOpen)
            ├── cancel_query(…)             QueryCancelled, published in the background
            ├── drain(timeout_s)            refuse new queries, wait for in-flight ones, end all
            └── aclose(timeout_s)           wait for the cancellations still being published

The hub holds its sessions through :class:`Session` (what it needs of one), so it
imports none of them: :mod:`~query_gateway.connection` (the session) and
:mod:`~query_gateway.inflight` (one query's life) import the hub, never the reverse.
Each session's lifecycle is one :class:`ConnectionState` value: the phase and,
once the server ends it (``Session.end``, e.g. the drain's ``shutting_down``), why::

    CONNECTING ─► OPEN ─┬─ end(error) ─► ENDING(why) ─┬─► CLOSING ─► CLOSED
                        └─ the client leaves ─────────┘
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from query_gateway.admission import ConnectionCaps
from query_gateway.auth import Principal
from query_gateway.config import GatewaySettings
from query_gateway.errors import GatewayError, ShuttingDown, SlowClient
from query_gateway.experiments import Experiments
from query_gateway.feedback import AnsweredQueries
from query_gateway.history import History
from query_gateway.metrics import CANCELLATIONS
from query_gateway.ratelimit import FailOpen, LocalRateLimiter, RateLimiter
from query_gateway.refusals import RefusalLog
from query_gateway.transport import Transport
from schemas.events import CancelReason, QueryCancelled

logger = logging.getLogger(__name__)

#: how long the last frames of an ending session may take to flush, and its close
CLOSE_FLUSH_S = 1.0


class Phase(enum.Enum):
    CONNECTING = 0
    OPEN = 1
    ENDING = 2  # the server ended the session: the reader stops, serve() winds down
    CLOSING = 3  # serve() cancels the queries and sends the last frames
    CLOSED = 4


@dataclass(frozen=True, slots=True)
class Ending:
    """Why the server ends a session: the error its queries (and the session) get, the
    reason on their ``QueryCancelled``, the close code."""

    error: GatewayError
    reason: CancelReason
    close_code: int


@dataclass(frozen=True, slots=True)
class ConnectionState:
    """Where a session is; from ``ENDING`` on, why the server ended it (``None``: the
    client left)."""

    phase: Phase
    ending: Ending | None = None

    def to(self, phase: Phase) -> ConnectionState:
        """The next phase: an ending, once known, stays."""
        return ConnectionState(phase, self.ending)

    @property
    def reason(self) -> CancelReason:
        return self.ending.reason if self.ending is not None else "disconnected"

    @property
    def mute(self) -> bool:
        """Ended for not reading: its buffer is full, nothing more goes out."""
        return self.ending is not None and isinstance(self.ending.error, SlowClient)


class Session(Protocol):
    """What the hub needs of a session (:class:`~query_gateway.connection.Connection`)."""

    @property
    def state(self) -> ConnectionState: ...

    @property
    def inflight(self) -> Mapping[str, asyncio.Task[None]]:
        """The tasks of the queries in flight, by client id."""
        ...

    def end(
        self,
        error: GatewayError,
        *,
        reason: CancelReason,
        close_code: int | None = None,
        label: str | None = None,
    ) -> None: ...

    async def wait_closed(self) -> None: ...


class Hub:
    """What all connections of one app share: settings, transport, limiter, connection
    caps, the refusal log, the drain switch."""

    def __init__(
        self, settings: GatewaySettings, transport: Transport, limiter: RateLimiter | None = None
    ) -> None:
        self.settings = settings
        self.transport = transport
        self.limiter: RateLimiter = limiter or LocalRateLimiter(
            settings.rate_limit_per_minute, settings.rate_limit_burst
        )
        self.caps = ConnectionCaps(
            total=settings.max_connections,
            per_user=settings.max_connections_per_user,
            per_client=settings.max_connections_per_client,
        )
        self.refusals = RefusalLog(settings.refusal_log_interval_s)
        self.connections: set[Session] = set()
        self.draining = False
        #: the replica's view of the conversations topic (``history`` frames); None: not served
        self.history: History | None = None
        self.experiments = Experiments.from_settings(settings)  # a bad file fails at start
        self.answered = AnsweredQueries(  # who asked what: feedback's ownership check
            window_s=settings.feedback_window_s, remember=settings.feedback_remember
        )
        self._budgets = FailOpen(self.limiter, timeout_s=settings.redis_timeout_s * 2)
        self._background: set[asyncio.Task[None]] = set()

    @property
    def inflight(self) -> int:
        return sum(len(c.inflight) for c in self.connections)

    async def drain(self, timeout_s: float) -> None:
        """Refuse new queries, wait (at most ``timeout_s``) for in-flight ones, then end
        every session: what is still running gets ``shutting_down``, sockets close 1012."""
        self.draining = True
        tasks = [task for conn in self.connections for task in conn.inflight.values()]
        if tasks:
            logger.info("draining %d in-flight queries", len(tasks))
            _, pending = await asyncio.wait(tasks, timeout=timeout_s)
            if pending:
                logger.warning("drain timed out with %d queries in flight", len(pending))
        connections = list(self.connections)
        for conn in connections:
            conn.end(
                ShuttingDown("the gateway restarted before the answer was complete: ask again"),
                reason="shutdown",
            )
        if connections:
            await asyncio.wait(
                [asyncio.create_task(c.wait_closed()) for c in connections],
                timeout=CLOSE_FLUSH_S * 3,
            )

    async def aclose(self, timeout_s: float) -> None:
        """Wait for the cancellations still being published (at most ``timeout_s``)."""
        if self._background:
            await asyncio.wait(list(self._background), timeout=timeout_s)

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def rate_limit(self, principal: Principal) -> float | None:
        """Seconds to wait before this user may ask again; None = go ahead, also when
        the limiter itself fails (:class:`~query_gateway.ratelimit.FailOpen`)."""
        return await self._budgets.acquire(f"{principal.tenant}/{principal.user}")

    def cancel_query(
        self, query_id: str, session_id: str, principal: Principal, reason: CancelReason
    ) -> None:
        """Publish ``QueryCancelled`` in the background (best effort, bounded by the produce timeout)."""
        if not self.settings.publish_cancellations:
            return
        event = QueryCancelled(
            query_id=query_id,
            trace_id=query_id,
            session_id=session_id,
            tenant=principal.tenant,
            user=principal.user,
            reason=reason,
        )
        self.spawn(self._publish_cancel(event), name=f"cancel-{query_id}")

    async def _publish_cancel(self, event: QueryCancelled) -> None:
        extra = {"query_id": event.query_id, "trace_id": event.trace_id}
        try:
            await self.transport.cancel(event)
        except Exception as exc:  # best effort: the answer is dropped by the router anyway
            CANCELLATIONS.labels(reason=event.reason, outcome="failed").inc()
            logger.warning("could not publish the cancellation: %r", exc, extra=extra)
            return
        CANCELLATIONS.labels(reason=event.reason, outcome="published").inc()
        logger.info("query cancelled (%s)", event.reason, extra=extra)
