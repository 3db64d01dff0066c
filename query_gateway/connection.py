"""One websocket connection: read frames, run each query in its own task, one writer.

    reader  ── parse_frame ── limits ──► query task (≤ max_inflight_per_connection) ──┐
       │                                 query task ────────────────────────────────────┤
       └── pong / refusals ─────────────────────────────────────────────────────────────┴─► outgoing queue ─► writer ─► ws

A query task registers its answer queue, publishes the ``QueryEvent`` (awaiting
the broker's ack), sends ``ack``, then forwards answer events as frames until
``done``/``error``, or sends ``deadline_exceeded`` when nothing final arrives by
the deadline plus a grace. Everything the client sees goes through the single
outgoing queue, so frames never interleave and a slow client slows only itself.

Limits, each refused with an ``error`` frame while the connection stays open:
frame size, query length, queries in flight on this connection, and the user's
query budget (token bucket, shared across replicas through Redis).

Refused frames are logged through the hub's :class:`~query_gateway.refusals.RefusalLog`
(one line per client address and code per interval) with excerpts of the client's text.

The server ends a session itself (:meth:`Connection.end`) when the token expires
(``token_expired`` frame, close 4401), when the client does not read its frames
within ``slow_client_timeout_s`` (close 4408; the outgoing queue never grows past
``outgoing_queue_size``), when it sends no frame for ``ws_idle_timeout_s`` while no
query of it is in flight (``idle_timeout``, close 4410), and at shutdown (in-flight
queries get ``shutting_down``, close 1012). A query abandoned before its end (cancel
frame, disconnect, session end) is announced to the answerer as ``QueryCancelled``.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from query_gateway import protocol
from query_gateway.admission import UNKNOWN_CLIENT, ConnectionCaps
from query_gateway.auth import Principal, seconds_left
from query_gateway.config import GatewaySettings
from query_gateway.errors import (
    AnswerInterrupted,
    DeadlineExceeded,
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
    UnknownId,
)
from query_gateway.events import CancelReason, QueryCancelled
from query_gateway.metrics import (
    ANSWERS_DROPPED,
    CANCELLATIONS,
    FRAMES_REFUSED,
    OPEN_CONNECTIONS,
    QUERIES,
    RATE_LIMITED,
    RATE_LIMITER_ERRORS,
    SESSIONS_ENDED,
    TIME_TO_DONE,
    TIME_TO_FIRST_TOKEN,
)
from query_gateway.ratelimit import LocalRateLimiter, RateLimiter
from query_gateway.refusals import MESSAGE_CHARS, RefusalLog, excerpt
from query_gateway.transport import Transport
from schemas.events import AnswerEvent, QueryEvent, ReplyRoute

logger = logging.getLogger(__name__)

#: how long the last frames of an ending session may take to flush, and its close
CLOSE_FLUSH_S = 1.0


class ConnectionState(enum.Enum):
    CONNECTING = 0
    OPEN = 1
    CLOSING = 2
    CLOSED = 3


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
        self.connections: set[Connection] = set()
        self.draining = False
        self._background: set[asyncio.Task[None]] = set()
        self._limiter_warned_at = 0.0

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
        """Seconds to wait before this user may ask again; None = go ahead.

        When the limiter itself fails (Redis down), the query goes through: an outage of
        the rate limiter must not become an outage of the chat. It is counted and logged."""
        try:
            async with asyncio.timeout(self.settings.redis_timeout_s * 2):
                return await self.limiter.acquire(f"{principal.tenant}/{principal.user}")
        except (GatewayError, TimeoutError) as exc:
            RATE_LIMITER_ERRORS.inc()
            now = time.monotonic()
            if now - self._limiter_warned_at > 10:
                self._limiter_warned_at = now
                logger.warning("rate limiter unavailable, letting queries through: %r", exc)
            return None

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


@dataclass(frozen=True, slots=True)
class _Ending:
    error: GatewayError
    reason: CancelReason
    close_code: int


_OUTCOME: dict[CancelReason, str] = {
    "client": "cancelled",
    "disconnected": "disconnected",
    "token_expired": "token_expired",
    "slow_client": "slow_client",
    "shutdown": "shutting_down",
}


class Connection:
    def __init__(
        self, websocket: WebSocket, hub: Hub, principal: Principal, *, client: str = UNKNOWN_CLIENT
    ) -> None:
        self.id = str(uuid.uuid4())
        self.client = client
        self.state = ConnectionState.CONNECTING
        self.inflight: dict[str, asyncio.Task[None]] = {}
        self._query_ids: dict[str, str] = {}  # client id -> query id, once publishing began
        self._ws = websocket
        self._hub = hub
        self._settings = hub.settings
        self._principal = principal
        self._out: asyncio.Queue[dict[str, Any]] = asyncio.Queue(
            maxsize=hub.settings.outgoing_queue_size
        )
        self._reader: asyncio.Task[None] | None = None
        self._ending: _Ending | None = None
        self._closed = asyncio.Event()
        self._last_frame_at = time.monotonic()
        self._idle_timer: asyncio.TimerHandle | None = None

    async def serve(self) -> None:
        await self._ws.accept()
        self.state = ConnectionState.OPEN
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
                logger.error(
                    "connection %s failed (error_id %s)",
                    self.id,
                    _error_id(),
                    exc_info=reader.exception(),
                )
        finally:
            if expiry is not None:
                expiry.cancel()
            if self._idle_timer is not None:
                self._idle_timer.cancel()
            reader.cancel()
            await self._finish(writer)

    def end(
        self,
        error: GatewayError,
        *,
        reason: CancelReason,
        close_code: int | None = None,
        label: str | None = None,
    ) -> None:
        """End the session from the server side (idempotent): ``serve`` fails the in-flight
        queries with ``error``, sends the frames it can, and closes with ``close_code``.
        ``reason`` goes on the ``QueryCancelled`` events, ``label`` (default: ``reason``)
        on ``aichat_gateway_sessions_ended_total``."""
        if self._ending is not None or self.state is not ConnectionState.OPEN:
            return
        if close_code is None:
            close_code = error.close_code if isinstance(error, SessionEnded) else 1012
        self._ending = _Ending(error, reason, close_code)
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
        self.state = ConnectionState.CLOSING
        ending = self._ending
        reason: CancelReason = ending.reason if ending else "disconnected"
        abandoned = dict(self.inflight)
        for task in abandoned.values():
            if task.cancel():
                QUERIES.labels(outcome=_OUTCOME[reason]).inc()
        # asyncio.wait, not gather: it never re-raises the children's cancellation
        # as our own, so a cancel scope around this handler sees only its own
        if abandoned:
            _, stuck = await asyncio.wait(abandoned.values(), timeout=CLOSE_FLUSH_S * 5)
            if stuck:
                logger.error(
                    "connection %s: %d query tasks ignored cancellation", self.id, len(stuck)
                )
        # what is left: queries cancelled here, or that stopped themselves as the session ended
        ended = list(abandoned) + [c for c in self._query_ids if c not in abandoned]
        for client_id, query_id in self._query_ids.items():
            if client_id not in abandoned:
                QUERIES.labels(outcome=_OUTCOME[reason]).inc()
            self._hub.cancel_query(query_id, self.id, self._principal, reason)
        self._query_ids.clear()
        if ending is not None:
            await self._say_goodbye(ending, ended)
        writer.cancel()
        await asyncio.wait([writer])
        self._hub.connections.discard(self)
        OPEN_CONNECTIONS.dec()
        self.state = ConnectionState.CLOSED
        self._closed.set()
        logger.debug("connection %s closed (%s)", self.id, reason)

    async def _say_goodbye(self, ending: _Ending, abandoned: list[str]) -> None:
        """Error frames for the abandoned queries (and the session), then the close frame."""
        error = ending.error
        if not isinstance(error, SlowClient):  # its buffer is full: nothing more goes out
            for client_id in abandoned:
                self._offer(protocol.error_from(error, _error_id(), client_id))
            if isinstance(error, SessionEnded):
                self._offer(protocol.error_from(error, _error_id(), None))
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
                    await self._cancel(frame.id)
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
        task = asyncio.create_task(
            self._run_query(frame, time.perf_counter()), name=f"query-{frame.id}"
        )
        self.inflight[frame.id] = task
        task.add_done_callback(lambda t: self._forget(frame.id, t))

    def _forget(self, client_id: str, task: asyncio.Task[None]) -> None:
        if self.inflight.get(client_id) is task:
            del self.inflight[client_id]
            if not task.cancelled():
                self._query_ids.pop(client_id, None)

    async def _cancel(self, client_id: str) -> None:
        task = self.inflight.get(client_id)
        if task is None or not task.cancel():
            raise UnknownId(
                f"no query with id {excerpt(client_id)} is in flight", client_id=client_id
            )
        self.inflight.pop(client_id, None)
        await asyncio.wait([task])  # no frame of it can follow ours
        QUERIES.labels(outcome="cancelled").inc()
        query_id = self._query_ids.pop(client_id, None)
        if query_id is not None:
            self._hub.cancel_query(query_id, self.id, self._principal, "client")
        await self._send(
            protocol.error(client_id, "cancelled", "the query was cancelled", _error_id())
        )

    # -- one query ---------------------------------------------------------------------------

    async def _run_query(self, frame: protocol.QueryFrame, started: float) -> None:
        s = self._settings
        query_id = str(uuid.uuid4())
        extra = {"query_id": query_id, "trace_id": query_id}
        budget_s = (s.answer_deadline_ms + s.answer_grace_ms) / 1000
        queue = self._hub.transport.register(query_id)
        try:
            event = QueryEvent(
                query_id=query_id,
                trace_id=query_id,
                session_id=self.id,
                tenant=self._principal.tenant,
                user=self._principal.user,
                text=frame.text,
                top_k=frame.top_k,
                filters=dict(frame.filters),
                reply_to=ReplyRoute(topic=s.answers_topic, partition=s.gateway_reply_partition),
                deadline=datetime.now(UTC) + timedelta(milliseconds=s.answer_deadline_ms),
            )
            self._query_ids[frame.id] = query_id
            await self._hub.transport.publish(event)
            logger.info(
                "query %s published for client id %s", query_id, excerpt(frame.id), extra=extra
            )
            await self._send(protocol.ack(frame.id, query_id))
            outcome = await self._forward(frame.id, queue, started, started + budget_s, extra)
        except GatewayError as exc:  # kafka_unavailable, deadline_exceeded
            outcome = exc.code
            error_id = _error_id()
            logger.warning(
                "query failed (%s, error_id %s): %s", exc.code, error_id, exc.message, extra=extra
            )
            await self._send(protocol.error_from(exc, error_id, frame.id))
        except Exception:
            outcome = "error"
            error_id = _error_id()
            logger.exception("query failed (error_id %s)", error_id, extra=extra)
            await self._send(protocol.error(frame.id, "internal", "internal error", error_id))
        finally:
            self._hub.transport.unregister(query_id)
        QUERIES.labels(outcome=outcome).inc()

    async def _forward(
        self,
        client_id: str,
        queue: asyncio.Queue[Any],
        started: float,
        give_up_at: float,
        extra: dict[str, str],
    ) -> str:
        # what went out, by seq: an answerer that restarts replays the query from seq 0;
        # a replayed event equal to the one sent is dropped, a different one ends the query
        sent: list[tuple[object, ...]] = []
        first_token = True
        while True:
            remaining = give_up_at - time.perf_counter()
            try:
                if remaining <= 0:
                    raise TimeoutError
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
                # that arrives as the get completes, and a cancelled query must stop
                async with asyncio.timeout(remaining):
                    answer = await queue.get()
            except TimeoutError:
                raise DeadlineExceeded(
                    f"no complete answer within {self._settings.answer_deadline_ms} ms",
                    client_id=client_id,
                ) from None
            if answer.seq < len(sent):
                if _content(answer) != sent[answer.seq]:
                    raise AnswerInterrupted(
                        "the answer was interrupted (its worker restarted) and the second attempt "
                        "differs from what was already sent: ask again", client_id=client_id)
                ANSWERS_DROPPED.labels(reason="duplicate").inc()
                logger.debug("duplicate answer event seq %d dropped", answer.seq, extra=extra)
                continue
            if answer.seq > len(sent):  # events of one query come in order from one partition
                logger.warning("answer event seq %d after seq %d: a gap", answer.seq, len(sent) - 1,
                               extra=extra)
            sent.extend([()] * (answer.seq - len(sent)) + [_content(answer)])
            out = protocol.answer_frame(client_id, answer)
            elapsed = time.perf_counter() - started
            if answer.kind == "token" and first_token:
                first_token = False
                TIME_TO_FIRST_TOKEN.observe(elapsed)
            elif answer.kind == "done":
                out["timings_ms"]["gateway_total"] = round(elapsed * 1000, 1)
                TIME_TO_DONE.observe(elapsed)
            await self._send(out)
            if answer.kind in ("done", "error"):
                return "done" if answer.kind == "done" else "error"
            if self._ending is not None:  # the session is ending: nothing more goes out
                raise asyncio.CancelledError

    # -- writing -----------------------------------------------------------------------------

    async def _send(self, frame: dict[str, Any]) -> None:
        """Queue a frame for the writer; a client that leaves the queue full for
        ``slow_client_timeout_s`` is disconnected instead of buffering more."""
        if self._ending is not None and isinstance(self._ending.error, SlowClient):
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
        error_id = _error_id()
        self._hub.refusals.log(
            self.client,
            f"frame/{exc.code}",
            "frame from %s refused on connection %s (%s, error_id %s): %s",
            self.client,
            self.id,
            exc.code,
            error_id,
            excerpt(exc.message, MESSAGE_CHARS, quote=False),
            extra={"error_id": error_id},
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



def _content(answer: AnswerEvent) -> tuple[object, ...]:
    """What a client sees of an answer event (its timings aside): equal for a true replay."""
    error = answer.error.code if answer.error is not None else None
    return (answer.kind, answer.delta, tuple(s.chunk_id for s in answer.sources), error)

def _error_id() -> str:
    return str(uuid.uuid4())
