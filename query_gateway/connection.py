"""One websocket connection: read frames, run each query in its own task, one writer.

    reader  ── parse_frame ──► query task (≤ max_inflight_per_connection) ──┐
       │                       query task ──────────────────────────────────┤
       └── pong / refusals ─────────────────────────────────────────────────┴─► outgoing queue ─► writer ─► ws

A query task registers its answer queue, publishes the ``QueryEvent`` (awaiting
the broker's ack), sends ``ack``, then forwards answer events as frames until
``done``/``error``, or sends ``deadline_exceeded`` when nothing final arrives by
the deadline plus a grace. Everything the client sees goes through the single
outgoing queue, so frames never interleave and a slow client slows only itself.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from query_gateway import protocol
from query_gateway.auth import Principal
from query_gateway.config import GatewaySettings
from query_gateway.errors import (
    DeadlineExceeded,
    DuplicateId,
    FrameRefused,
    GatewayError,
    ShuttingDown,
    TooManyInflight,
    UnknownId,
)
from query_gateway.metrics import (
    ANSWERS_DROPPED,
    FRAMES_REFUSED,
    OPEN_CONNECTIONS,
    QUERIES,
    TIME_TO_DONE,
    TIME_TO_FIRST_TOKEN,
)
from query_gateway.transport import Transport
from schemas.events import QueryEvent, ReplyRoute

logger = logging.getLogger(__name__)


class ConnectionState(enum.Enum):
    CONNECTING = 0
    OPEN = 1
    CLOSING = 2
    CLOSED = 3


class Hub:
    """What all connections of one app share: settings, transport, and the drain switch."""

    def __init__(self, settings: GatewaySettings, transport: Transport) -> None:
        self.settings = settings
        self.transport = transport
        self.connections: set[Connection] = set()
        self.draining = False

    @property
    def inflight(self) -> int:
        return sum(len(c.inflight) for c in self.connections)

    async def drain(self, timeout_s: float) -> None:
        """Refuse new queries, then wait (at most ``timeout_s``) for in-flight ones to finish."""
        self.draining = True
        tasks = [task for conn in self.connections for task in conn.inflight.values()]
        if not tasks:
            return
        logger.info("draining %d in-flight queries", len(tasks))
        _, pending = await asyncio.wait(tasks, timeout=timeout_s)
        if pending:
            logger.warning("drain timed out with %d queries in flight", len(pending))


class Connection:
    def __init__(self, websocket: WebSocket, hub: Hub, principal: Principal) -> None:
        self.id = str(uuid.uuid4())
        self.state = ConnectionState.CONNECTING
        self.inflight: dict[str, asyncio.Task[None]] = {}
        self._ws = websocket
        self._hub = hub
        self._settings = hub.settings
        self._principal = principal
        self._out: asyncio.Queue[dict[str, Any]] = asyncio.Queue(
            maxsize=hub.settings.outgoing_queue_size
        )

    async def serve(self) -> None:
        await self._ws.accept()
        self.state = ConnectionState.OPEN
        self._hub.connections.add(self)
        OPEN_CONNECTIONS.inc()
        writer = asyncio.create_task(self._write(), name=f"ws-writer-{self.id}")
        logger.debug("connection %s open (user %s)", self.id, self._principal.user)
        try:
            await self._read()  # until the client (or the server's shutdown) disconnects
        except Exception:
            logger.exception("connection %s failed (error_id %s)", self.id, _error_id())
        finally:
            self.state = ConnectionState.CLOSING
            tasks = list(self.inflight.values())
            for task in tasks:
                if task.cancel():
                    QUERIES.labels(outcome="disconnected").inc()
            # asyncio.wait, not gather: it never re-raises the children's cancellation
            # as our own, so a cancel scope around this handler sees only its own
            if tasks:
                await asyncio.wait(tasks)
            writer.cancel()
            await asyncio.wait([writer])
            self._hub.connections.discard(self)
            OPEN_CONNECTIONS.dec()
            self.state = ConnectionState.CLOSED
            logger.debug("connection %s closed", self.id)

    # -- reading -----------------------------------------------------------------------------

    async def _read(self) -> None:
        s = self._settings
        while True:
            message = await self._ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            raw = message.get("text")
            if raw is None:
                raw = message.get("bytes") or b""
            try:
                frame = protocol.parse_frame(
                    raw, max_frame_bytes=s.max_frame_bytes, max_query_chars=s.max_query_chars
                )
                if isinstance(frame, protocol.QueryFrame):
                    self._start_query(frame)
                elif isinstance(frame, protocol.CancelFrame):
                    await self._cancel(frame.id)
                else:
                    await self._send(protocol.pong())
            except FrameRefused as exc:
                FRAMES_REFUSED.labels(code=exc.code).inc()
                await self._send_error(exc)

    def _start_query(self, frame: protocol.QueryFrame) -> None:
        if self._hub.draining:
            raise ShuttingDown(
                "the gateway is shutting down: reconnect and ask again", client_id=frame.id
            )
        if frame.id in self.inflight:
            raise DuplicateId(f"query id {frame.id!r} is still in flight", client_id=frame.id)
        limit = self._settings.max_inflight_per_connection
        if len(self.inflight) >= limit:
            raise TooManyInflight(
                f"{len(self.inflight)} queries already in flight on this connection; the limit is {limit}",
                client_id=frame.id,
            )
        task = asyncio.create_task(
            self._run_query(frame, time.perf_counter()), name=f"query-{frame.id}"
        )
        self.inflight[frame.id] = task
        task.add_done_callback(lambda t: self._forget(frame.id, t))

    def _forget(self, client_id: str, task: asyncio.Task[None]) -> None:
        if self.inflight.get(client_id) is task:
            del self.inflight[client_id]

    async def _cancel(self, client_id: str) -> None:
        task = self.inflight.get(client_id)
        if task is None or not task.cancel():
            raise UnknownId(f"no query with id {client_id!r} is in flight", client_id=client_id)
        self.inflight.pop(client_id, None)
        await asyncio.wait([task])  # no frame of it can follow ours
        QUERIES.labels(outcome="cancelled").inc()
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
            await self._hub.transport.publish(event)
            logger.info("query %s published for client id %s", query_id, frame.id, extra=extra)
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
        last_seq = -1
        first_token = True
        while True:
            remaining = give_up_at - time.perf_counter()
            try:
                if remaining <= 0:
                    raise TimeoutError
                answer = await asyncio.wait_for(queue.get(), remaining)
            except TimeoutError:
                raise DeadlineExceeded(
                    f"no complete answer within {self._settings.answer_deadline_ms} ms",
                    client_id=client_id,
                ) from None
            if answer.seq <= last_seq:
                ANSWERS_DROPPED.labels(reason="duplicate").inc()
                logger.debug("duplicate answer event seq %d dropped", answer.seq, extra=extra)
                continue
            last_seq = answer.seq
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

    # -- writing -----------------------------------------------------------------------------

    async def _send(self, frame: dict[str, Any]) -> None:
        await self._out.put(frame)

    async def _send_error(self, exc: GatewayError) -> None:
        error_id = _error_id()
        logger.info("frame refused (%s, error_id %s): %s", exc.code, error_id, exc.message)
        await self._send(protocol.error_from(exc, error_id))

    async def _write(self) -> None:
        """The only sender. After a failed send (client gone) it discards frames, so no
        producer ever blocks on a full queue; the reader then sees the disconnect."""
        try:
            while True:
                frame = await self._out.get()
                await self._ws.send_text(protocol.dumps(frame))
        except (OSError, RuntimeError, WebSocketDisconnect) as exc:
            logger.debug(
                "connection %s: sending failed, discarding further frames: %r", self.id, exc
            )
        while True:
            await self._out.get()


def _error_id() -> str:
    return str(uuid.uuid4())
