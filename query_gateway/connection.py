"""The session: one websocket — read frames, admit queries, one writer.

    reader ── parse_frame ── admit (limits) ──► Inflight: a task per query ─┐
       └── pong / refusals ──────────────────────────────────────────────────┴─► outgoing queue ─► writer ─► ws

Everything the client sees goes through the single outgoing queue, so frames never
interleave and a slow client slows only itself. A query's life after admission is
in :mod:`~query_gateway.inflight`; what all sessions share in :mod:`~query_gateway.hub`.

Limits, each refused with an ``error`` frame while the connection stays open: frame
size, query length, queries in flight on this connection, and the user's query budget
(token bucket, shared across replicas through Redis). Refused frames are logged through
the hub's :class:`~query_gateway.refusals.RefusalLog` with excerpts of the client's text.

The server ends a session itself (:meth:`Connection.end`, its why kept in the
:class:`~query_gateway.hub.ConnectionState`) when the token expires (``token_expired``
frame, close 4401), when the client does not read its frames within
``slow_client_timeout_s`` (close 4408; the outgoing queue never grows past
``outgoing_queue_size``), when it sends no frame for ``ws_idle_timeout_s`` while no
query of it is in flight (``idle_timeout``, close 4410), and at shutdown (in-flight
queries get ``shutting_down``, close 1012). A query abandoned before its end (cancel
frame, disconnect, session end) is announced to the answerer as ``QueryCancelled``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Mapping
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from query_gateway import feedback, protocol
from query_gateway.admission import UNKNOWN_CLIENT
from query_gateway.auth import Principal, seconds_left
from query_gateway.errors import (
    DuplicateId,
    FrameRefused,
    GatewayError,
    IdleTimeout,
    RateLimited,
    SessionEnded,
    ShuttingDown,
    SlowClient,
    TokenExpired,
    TooManyInflight,
)
from query_gateway.history import ConversationsUnavailable
from query_gateway.hub import CLOSE_FLUSH_S, ConnectionState, Ending, Hub, Phase
from query_gateway.inflight import Inflight
from query_gateway.metrics import FRAMES_REFUSED, OPEN_CONNECTIONS, RATE_LIMITED, SESSIONS_ENDED
from query_gateway.refusals import MESSAGE_CHARS, excerpt
from schemas.events import CancelReason

logger = logging.getLogger(__name__)


class Connection:
    """One websocket session, from the accepted upgrade to the close (:meth:`serve`)."""

    def __init__(
        self, websocket: WebSocket, hub: Hub, principal: Principal, *, client: str = UNKNOWN_CLIENT
    ) -> None:
        self.id = str(uuid.uuid4())
        self.client = client
        self._state = ConnectionState(Phase.CONNECTING)
        self._closed = asyncio.Event()  # wakes wait_closed(): set by _enter, on CLOSED only
        self._ws = websocket
        self._hub = hub
        self._settings = hub.settings
        self._principal = principal
        self._queries = Inflight(
            hub, self.id, principal, send=self._send, ending=lambda: self._state.ending is not None
        )
        self._out: asyncio.Queue[dict[str, Any]] = asyncio.Queue(hub.settings.outgoing_queue_size)
        self._reader: asyncio.Task[None] | None = None
        self._last_frame_at = time.monotonic()
        self._idle_timer: asyncio.TimerHandle | None = None

    @property
    def state(self) -> ConnectionState:
        return self._state

    @property
    def inflight(self) -> Mapping[str, asyncio.Task[None]]:
        return self._queries.tasks

    def _enter(self, state: ConnectionState) -> None:
        self._state = state
        if state.phase is Phase.CLOSED:
            self._closed.set()

    async def serve(self) -> None:
        await self._ws.accept()
        self._enter(self._state.to(Phase.OPEN))
        self._hub.connections.add(self)
        OPEN_CONNECTIONS.inc()
        writer = asyncio.create_task(self._write(), name=f"ws-writer-{self.id}")
        self._reader = reader = asyncio.create_task(self._read(), name=f"ws-reader-{self.id}")
        expiry = self._schedule_expiry()
        self._watch_idle(self._settings.ws_idle_timeout_s)
        logger.debug("connection %s open (user %s)", self.id, self._principal.user)
        try:
            # until the client disconnects, or end() cancels the reader
            await asyncio.wait([reader])
            if not reader.cancelled() and reader.exception() is not None:
                logger.error("connection %s failed (error_id %s)", self.id,
                             protocol.new_error_id(), exc_info=reader.exception())
        finally:
            if expiry is not None:
                expiry.cancel()
            if self._idle_timer is not None:
                self._idle_timer.cancel()
            reader.cancel()
            await self._finish(writer)

    def end(self, error: GatewayError, *, reason: CancelReason, close_code: int | None = None,
            label: str | None = None) -> None:
        """End the session from the server side (idempotent): ``serve`` fails the in-flight
        queries with ``error``, sends the frames it can, and closes with ``close_code``.
        ``reason`` goes on the ``QueryCancelled`` events, ``label`` (default: ``reason``)
        on ``aichat_gateway_sessions_ended_total``."""
        if self._state.phase is not Phase.OPEN:
            return
        if close_code is None:
            close_code = error.close_code if isinstance(error, SessionEnded) else 1012
        self._enter(ConnectionState(Phase.ENDING, Ending(error, reason, close_code)))
        SESSIONS_ENDED.labels(reason=label or reason).inc()
        logger.info("ending connection %s: %s", self.id, error.message)
        if self._reader is not None:
            self._reader.cancel()

    async def wait_closed(self) -> None:
        await self._closed.wait()

    def _schedule_expiry(self) -> asyncio.TimerHandle | None:
        left = seconds_left(self._principal)
        if left is None:
            return None
        return asyncio.get_running_loop().call_later(max(0.0, left), self._expired)

    def _expired(self) -> None:
        self.end(
            TokenExpired("the token expired: reconnect with a fresh token"), reason="token_expired"
        )

    def _watch_idle(self, delay_s: float) -> None:
        self._idle_timer = asyncio.get_running_loop().call_later(delay_s, self._check_idle)

    def _check_idle(self) -> None:
        """Close a connection that sent nothing for ``ws_idle_timeout_s`` and waits for no
        answer; one with a query in flight is busy, not idle."""
        timeout_s = self._settings.ws_idle_timeout_s
        quiet_s = time.monotonic() - self._last_frame_at
        if quiet_s < timeout_s or self.inflight:
            self._watch_idle(max(timeout_s - quiet_s, 0.0) or timeout_s)
            return
        self.end(
            IdleTimeout(
                f"no frame for {timeout_s:g}s: the connection was closed; "
                "reconnect to ask again (a ping every now and then keeps it open)"
            ),
            reason="disconnected",  # nothing is in flight: no query is cut short
            label="idle",
        )

    async def _finish(self, writer: asyncio.Task[None]) -> None:
        self._enter(self._state.to(Phase.CLOSING))
        ended = await self._queries.abandon(self._state.reason)
        if (ending := self._state.ending) is not None:
            await self._say_goodbye(ending, ended)
        writer.cancel()
        await asyncio.wait([writer])
        self._hub.connections.discard(self)
        OPEN_CONNECTIONS.dec()
        self._enter(self._state.to(Phase.CLOSED))
        logger.debug("connection %s closed (%s)", self.id, self._state.reason)

    async def _say_goodbye(self, ending: Ending, abandoned: list[str]) -> None:
        """Error frames for the abandoned queries (and the session), then the close frame."""
        error = ending.error
        if not self._state.mute:
            for client_id in abandoned:
                self._offer(protocol.error_from(error, protocol.new_error_id(), client_id))
            if isinstance(error, SessionEnded):
                self._offer(protocol.error_from(error, protocol.new_error_id(), None))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CLOSE_FLUSH_S):
                    await self._out.join()
        try:
            async with asyncio.timeout(CLOSE_FLUSH_S):
                await self._ws.close(ending.close_code, error.code)
        except (OSError, RuntimeError, TimeoutError, WebSocketDisconnect) as exc:
            logger.debug("connection %s: close frame not sent: %r", self.id, exc)

    # -- reading -----------------------------------------------------------------------------

    async def _read(self) -> None:
        s = self._settings
        while True:
            message = await self._ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            self._last_frame_at = time.monotonic()
            raw = message.get("text")
            if raw is None:
                raw = message.get("bytes") or b""
            try:
                frame = protocol.parse_frame(
                    raw, max_frame_bytes=s.max_frame_bytes, max_query_chars=s.max_query_chars
                )
                if isinstance(frame, protocol.QueryFrame):
                    await self._admit(frame)
                elif isinstance(frame, protocol.CancelFrame):
                    await self._queries.cancel(frame.id)
                elif isinstance(frame, protocol.HistoryFrame):
                    await self._history(frame)
                elif isinstance(frame, protocol.FeedbackFrame):
                    await self._feedback(frame)
                else:
                    await self._send(protocol.pong())
            except FrameRefused as exc:
                FRAMES_REFUSED.labels(code=exc.code).inc()
                await self._send_error(exc)

    async def _admit(self, frame: protocol.QueryFrame) -> None:
        if self._hub.draining:
            raise ShuttingDown(
                "the gateway is shutting down: reconnect and ask again", client_id=frame.id
            )
        if frame.id in self.inflight:
            raise DuplicateId(
                f"query id {excerpt(frame.id)} is still in flight", client_id=frame.id
            )
        limit = self._settings.max_inflight_per_connection
        if len(self.inflight) >= limit:
            RATE_LIMITED.labels(limit="connection_inflight").inc()
            raise TooManyInflight(
                f"{len(self.inflight)} queries already in flight on this connection; the limit is {limit}",
                client_id=frame.id,
            )
        wait = await self._hub.rate_limit(self._principal)
        if wait is not None:
            RATE_LIMITED.labels(limit="user_queries").inc()
            s = self._settings
            raise RateLimited(
                f"query budget spent ({s.rate_limit_per_minute:g} per minute, bursts of "
                f"{s.rate_limit_burst}): retry after {wait:.1f}s",
                client_id=frame.id,
                retry_after=round(wait, 3),
            )
        self._queries.start(frame)

    async def _history(self, frame: protocol.HistoryFrame) -> None:
        """The caller's own turns of a conversation (query_gateway/history.py)."""
        if self._hub.history is None:
            raise ConversationsUnavailable("this gateway does not serve conversations",
                                           client_id=frame.id)
        await self._send(await self._hub.history.answer(self._principal, frame))

    async def _feedback(self, frame: protocol.FeedbackFrame) -> None:
        """A rating of one of the caller's own answered questions (query_gateway/feedback.py)."""
        await feedback.submit(
            self._hub.transport, self._hub.answered, self._principal, self.id, client_id=frame.id,
            query_id=frame.query_id, rating=frame.rating, comment=frame.comment,
        )
        await self._send(protocol.feedback_ack(frame.id, frame.query_id))

    # -- writing -----------------------------------------------------------------------------

    async def _send(self, frame: dict[str, Any]) -> None:
        """Queue a frame for the writer; a client that leaves the queue full for
        ``slow_client_timeout_s`` is disconnected instead of buffering more."""
        if self._state.mute:
            return
        try:
            self._out.put_nowait(frame)
            return
        except asyncio.QueueFull:
            pass
        try:
            async with asyncio.timeout(self._settings.slow_client_timeout_s):
                await self._out.put(frame)
        except TimeoutError:
            self.end(
                SlowClient(
                    f"the client did not read its frames for {self._settings.slow_client_timeout_s:g}s"
                ),
                reason="slow_client",
            )

    def _offer(self, frame: dict[str, Any]) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            self._out.put_nowait(frame)

    async def _send_error(self, exc: GatewayError) -> None:
        error_id = protocol.new_error_id()
        self._hub.refusals.log(
            self.client, f"frame/{exc.code}",
            "frame from %s refused on connection %s (%s, error_id %s): %s",
            self.client, self.id, exc.code, error_id,
            excerpt(exc.message, MESSAGE_CHARS, quote=False), extra={"error_id": error_id},
        )
        await self._send(protocol.error_from(exc, error_id))

    async def _write(self) -> None:
        """The only sender. After a failed send (client gone) it discards frames, so no
        producer ever blocks on a full queue; the reader then sees the disconnect."""
        try:
            while True:
                frame = await self._out.get()
                try:
                    await self._ws.send_text(protocol.dumps(frame))
                finally:
                    self._out.task_done()
        except (OSError, RuntimeError, WebSocketDisconnect) as exc:
            logger.debug(
                "connection %s: sending failed, discarding further frames: %r", self.id, exc
            )
        while True:
            await self._out.get()
            self._out.task_done()
