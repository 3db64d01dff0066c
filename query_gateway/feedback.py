"""Feedback frames: a rating of the caller's own answered question → the ``feedback`` topic.

    {"type": "feedback", "id": "f1", "query_id": "<from ack>", "rating": 1 | -1, "comment": "…"}
        ─► AnsweredQueries.check (this user's, answered) ─► FeedbackGiven on ``feedback``
        ─► {"type": "feedback_ack", "id": "f1", "query_id": …}

**Who may rate what.** Each replica remembers the questions it answered (query id →
tenant, user, variant, experiment, whether ``done`` went out), in memory, bounded by
``AICHAT_FEEDBACK_REMEMBER`` entries and ``AICHAT_FEEDBACK_WINDOW_S``. A rating is
accepted only for a question of the same (tenant, user) that ended with ``done`` —
on any connection of that user to this replica, so a reconnect keeps it. A query id
this replica does not know (another user's, expired, or answered by another replica,
e.g. after a restart) is refused with ``unknown_query`` — the same answer for all, so
no one learns whether another user's query id exists; one still being answered or
that ended in an error with ``not_answered``. The event carries the asker's tenant
and user, and the shipper merges it only into a summary of that same tenant and
user (streams/feedback.py): a second check that holds whoever produced the event.

A user may rate a question again: the latest rating wins in the summary.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from prometheus_client import Counter
from pydantic import Field

from query_gateway.errors import FrameRefused, KafkaUnavailable
from query_gateway.experiments import Assignment
from query_gateway.refusals import excerpt
from schemas.feedback import FeedbackGiven
from streams.settings_base import SettingsBase

if TYPE_CHECKING:  # auth imports the settings, which import this module's
    from query_gateway.auth import Principal

logger = logging.getLogger(__name__)

FEEDBACK = Counter(
    "aichat_gateway_feedback_total",
    "Ratings accepted and published onto the feedback topic, by rating, experiment and variant",
    ["rating", "experiment", "variant"],  # rating: up | down; experiment "" = none
)


class FeedbackSettings(SettingsBase):
    feedback_window_s: float = Field(
        86_400.0, gt=0, description="how long after its answer a question may be rated"
    )
    feedback_remember: int = Field(
        100_000, ge=1, description="answered questions a gateway replica remembers for feedback"
    )


class UnknownQuery(FrameRefused):
    code = "unknown_query"


class NotAnswered(FrameRefused):
    code = "not_answered"


class FeedbackUnavailable(FrameRefused):
    code = "feedback_unavailable"
    retriable = True


@runtime_checkable
class FeedbackTransport(Protocol):
    async def publish_feedback(self, event: FeedbackGiven) -> None:
        """Return once the broker acknowledged the event; raise :class:`KafkaUnavailable`."""


@dataclass(slots=True)
class Asked:
    tenant: str
    user: str
    assignment: Assignment
    session_id: str
    at: float
    answered: bool = False


class AnsweredQueries:
    """The questions one replica asked on its users' behalf, and which were answered."""

    def __init__(self, *, window_s: float, remember: int,
                 now: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self.remember = remember
        self._asked: OrderedDict[str, Asked] = OrderedDict()
        self._now = now

    def __len__(self) -> int:
        return len(self._asked)

    def asked(self, query_id: str, principal: Principal, assignment: Assignment, session_id: str) -> None:
        self._asked[query_id] = Asked(principal.tenant, principal.user, assignment, session_id, self._now())
        self._asked.move_to_end(query_id)
        while len(self._asked) > self.remember:
            self._asked.popitem(last=False)

    def answered(self, query_id: str) -> None:
        asked = self._asked.get(query_id)
        if asked is not None:
            asked.answered, asked.at = True, self._now()

    def check(self, query_id: str, principal: Principal, *, client_id: str | None = None) -> Asked:
        """This user's answered question ``query_id``, or raise the refusal the client sees."""
        asked = self._asked.get(query_id)
        if asked is not None and self._now() - asked.at > self.window_s:
            del self._asked[query_id]
            asked = None
        if asked is None or (asked.tenant, asked.user) != (principal.tenant, principal.user):
            raise UnknownQuery(
                f"no answered question {excerpt(query_id)} of yours is known here: feedback is "
                f"accepted for your own questions answered by this gateway within the last "
                f"{self.window_s / 3600:g} h",
                client_id=client_id,
            )
        if not asked.answered:
            raise NotAnswered(
                f"question {excerpt(query_id)} has no complete answer (still running, failed or "
                "cancelled): only answered questions can be rated",
                client_id=client_id,
            )
        return asked


async def submit(transport: object, answered: AnsweredQueries, principal: Principal,
                 session_id: str, *, client_id: str, query_id: str, rating: int,
                 comment: str) -> FeedbackGiven:
    """Check ownership, publish the rating and count it; raise a :class:`FrameRefused` child."""
    asked = answered.check(query_id, principal, client_id=client_id)
    if not isinstance(transport, FeedbackTransport):
        raise FeedbackUnavailable("this gateway cannot record feedback", client_id=client_id)
    event = FeedbackGiven(
        query_id=query_id, trace_id=query_id, session_id=session_id, tenant=principal.tenant,
        user=principal.user, rating=1 if rating > 0 else -1, comment=comment,
        variant=asked.assignment.variant, experiment=asked.assignment.experiment,
    )
    try:
        await transport.publish_feedback(event)
    except KafkaUnavailable as exc:
        raise FeedbackUnavailable(
            f"the rating could not be recorded: {exc.message}; send it again", client_id=client_id
        ) from exc
    FEEDBACK.labels(rating="up" if event.rating > 0 else "down",
                    experiment=event.experiment, variant=event.variant).inc()
    logger.info("feedback %+d on query %s", event.rating, query_id,
                extra={"query_id": query_id, "trace_id": query_id})
    return event
