"""One query's life: publish → forward the answer events → ``done``, ``error`` or deadline.

    Inflight.start(frame) ─► task: register the answer queue ─► publish QueryEvent (broker ack)
        ─► ack ─► answer events as frames … done | error
                  nothing final by the deadline plus a grace ─► deadline_exceeded
    cancel frame, disconnect, session end ─► task cancelled ─► QueryCancelled (Hub.cancel_query)

:class:`Inflight` holds the queries of one session, by client id, each in its own
task. Its frames go out through the session's ``send``, never to the socket itself.
An answerer that restarts replays the query from seq 0: a replayed event equal to
the one sent is dropped, a different one ends the query (``answer_interrupted``).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from query_gateway import protocol
from query_gateway.auth import Principal
from query_gateway.errors import AnswerInterrupted, DeadlineExceeded, GatewayError, UnknownId
from query_gateway.experiments import EXPERIMENT_FIRST_TOKEN, EXPERIMENT_QUERIES, Assignment
from query_gateway.hub import CLOSE_FLUSH_S, Hub
from query_gateway.metrics import ANSWERS_DROPPED, QUERIES, TIME_TO_DONE, TIME_TO_FIRST_TOKEN
from query_gateway.refusals import excerpt
from schemas.events import AnswerEvent, CancelReason, QueryEvent, ReplyRoute

logger = logging.getLogger(__name__)

#: queue a frame for the session's writer
Send = Callable[[dict[str, Any]], Awaitable[None]]

#: ``aichat_gateway_queries_total{outcome}`` of a query cut short, by the cancellation's reason
_OUTCOME: dict[CancelReason, str] = {
    "client": "cancelled",
    "disconnected": "disconnected",
    "token_expired": "token_expired",
    "slow_client": "slow_client",
    "shutdown": "shutting_down",
}


class Inflight:
    """The queries in flight on one session. ``ending()`` says the session is ending:
    a query stops after the frame it is forwarding."""

    def __init__(
        self,
        hub: Hub,
        session_id: str,
        principal: Principal,
        *,
        send: Send,
        ending: Callable[[], bool],
    ) -> None:
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self._query_ids: dict[str, str] = {}  # client id -> query id, once publishing began
        self._hub = hub
        self._settings = hub.settings
        self._session_id = session_id
        self._principal = principal
        self._send = send
        self._ending = ending

    def start(self, frame: protocol.QueryFrame) -> None:
        """Run the query in its own task; a variant the client may not choose is refused here."""
        assignment = self._hub.experiments.assign(
            self._principal.tenant, self._principal.user, requested=frame.variant, client_id=frame.id
        )
        task = asyncio.create_task(self._run(frame, time.perf_counter(), assignment),
                                   name=f"query-{frame.id}")
        self.tasks[frame.id] = task
        task.add_done_callback(lambda t: self._forget(frame.id, t))

    def _forget(self, client_id: str, task: asyncio.Task[None]) -> None:
        if self.tasks.get(client_id) is task:
            del self.tasks[client_id]
            if not task.cancelled():
                self._query_ids.pop(client_id, None)

    async def cancel(self, client_id: str) -> None:
        """The client's ``cancel`` frame: stop the query, announce it, confirm with ``cancelled``."""
        task = self.tasks.get(client_id)
        if task is None or not task.cancel():
            raise UnknownId(
                f"no query with id {excerpt(client_id)} is in flight", client_id=client_id
            )
        self.tasks.pop(client_id, None)
        await asyncio.wait([task])  # no frame of it can follow ours
        QUERIES.labels(outcome="cancelled").inc()
        query_id = self._query_ids.pop(client_id, None)
        if query_id is not None:
            self._announce(query_id, "client")
        await self._send(
            protocol.error(client_id, "cancelled", "the query was cancelled", protocol.new_error_id())
        )

    async def abandon(self, reason: CancelReason) -> list[str]:
        """At the session's end: cancel what still runs, count and announce every query cut
        short; their client ids (for the error frames the session may still send)."""
        abandoned = dict(self.tasks)
        for task in abandoned.values():
            if task.cancel():
                QUERIES.labels(outcome=_OUTCOME[reason]).inc()
        # asyncio.wait, not gather: it never re-raises the children's cancellation
        # as our own, so a cancel scope around this handler sees only its own
        if abandoned:
            _, stuck = await asyncio.wait(abandoned.values(), timeout=CLOSE_FLUSH_S * 5)
            if stuck:
                logger.error(
                    "connection %s: %d query tasks ignored cancellation",
                    self._session_id,
                    len(stuck),
                )
        # what is left: queries cancelled here, or that stopped themselves as the session ended
        ended = list(abandoned) + [c for c in self._query_ids if c not in abandoned]
        for client_id, query_id in self._query_ids.items():
            if client_id not in abandoned:
                QUERIES.labels(outcome=_OUTCOME[reason]).inc()
            self._announce(query_id, reason)
        self._query_ids.clear()
        return ended

    def _announce(self, query_id: str, reason: CancelReason) -> None:
        self._hub.cancel_query(query_id, self._session_id, self._principal, reason)

    # -- one query ---------------------------------------------------------------------------

    async def _run(self, frame: protocol.QueryFrame, started: float, assignment: Assignment) -> None:
        s = self._settings
        query_id = str(uuid.uuid4())
        conversation_id = frame.conversation_id or str(uuid.uuid4())  # absent: a new one
        extra = {"query_id": query_id, "trace_id": query_id}
        budget_s = (s.answer_deadline_ms + s.answer_grace_ms) / 1000
        queue = self._hub.transport.register(query_id)
        try:
            event = QueryEvent(
                query_id=query_id,
                trace_id=query_id,
                session_id=self._session_id,
                tenant=self._principal.tenant,
                user=self._principal.user,
                text=frame.text,
                top_k=assignment.top_k or frame.top_k,
                filters=dict(frame.filters),
                reply_to=ReplyRoute(topic=s.answers_topic, partition=s.gateway_reply_partition),
                deadline=datetime.now(UTC) + timedelta(milliseconds=s.answer_deadline_ms),
                conversation_id=conversation_id,
                variant=assignment.variant,
                experiment=assignment.experiment,
            )
            self._query_ids[frame.id] = query_id
            await self._hub.transport.publish(event)
            self._hub.answered.asked(query_id, self._principal, assignment, self._session_id)
            logger.info(
                "query %s published for client id %s", query_id, excerpt(frame.id), extra=extra
            )
            await self._send(protocol.ack(frame.id, query_id, conversation_id))
            outcome = await self._forward(frame.id, queue, started, started + budget_s, extra,
                                          assignment)
        except GatewayError as exc:  # kafka_unavailable, deadline_exceeded
            outcome = exc.code
            error_id = protocol.new_error_id()
            logger.warning(
                "query failed (%s, error_id %s): %s", exc.code, error_id, exc.message, extra=extra
            )
            await self._send(protocol.error_from(exc, error_id, frame.id))
        except Exception:
            outcome = "error"
            error_id = protocol.new_error_id()
            logger.exception("query failed (error_id %s)", error_id, extra=extra)
            await self._send(protocol.error(frame.id, "internal", "internal error", error_id))
        finally:
            self._hub.transport.unregister(query_id)
        QUERIES.labels(outcome=outcome).inc()
        EXPERIMENT_QUERIES.labels(assignment.experiment, assignment.variant, outcome).inc()
        if outcome == "done":
            self._hub.answered.answered(query_id)  # it may be rated now (query_gateway/feedback.py)

    async def _forward(
        self,
        client_id: str,
        queue: asyncio.Queue[Any],
        started: float,
        give_up_at: float,
        extra: dict[str, str],
        assignment: Assignment,
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
                EXPERIMENT_FIRST_TOKEN.labels(assignment.experiment, assignment.variant).observe(elapsed)
            elif answer.kind == "done":
                out["timings_ms"]["gateway_total"] = round(elapsed * 1000, 1)
                TIME_TO_DONE.observe(elapsed)
            await self._send(out)
            if answer.kind in ("done", "error"):
                return "done" if answer.kind == "done" else "error"
            if self._ending():  # the session is ending: nothing more goes out
                raise asyncio.CancelledError


def _content(answer: AnswerEvent) -> tuple[object, ...]:
    """What a client sees of an answer event (its timings aside): equal for a true replay."""
    error = answer.error.code if answer.error is not None else None
    return (answer.kind, answer.delta, tuple(s.chunk_id for s in answer.sources), error)
