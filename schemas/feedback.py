"""The ``feedback`` topic: a user's rating of one of their own answered questions.

The gateway produces one :class:`FeedbackGiven` per accepted ``feedback`` frame, keyed
by ``query_id``; the shipper ships it and merges ``rating``, ``comment`` and
``rated_at`` into that question's summary (streams/feedback.py). The event carries the
asker's ``tenant`` and ``user`` from the token: the shipper merges it only into a
summary of the same tenant and user, so a gateway that accepted it wrongly (or a
producer outside the gateway) can never rate someone else's answer.

``variant`` and ``experiment`` repeat the question's assignment (query_gateway/
experiments.py) so ``aichat_gateway_feedback_total`` and Kibana can split ratings by
variant without a join.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from schemas.events import Event, Tenant, utc_now

#: longest comment accepted (characters); the gateway refuses longer ones
MAX_COMMENT_CHARS = 2_000

Rating = Literal[1, -1]


class FeedbackGiven(Event):
    """``feedback`` topic, keyed by ``query_id``: thumbs up (1) or down (-1), maybe a comment."""

    query_id: str = Field(min_length=1, max_length=128)
    session_id: str = ""
    tenant: Tenant = "default"
    user: str = Field("anonymous", min_length=1, max_length=256)
    rating: Rating
    comment: str = Field("", max_length=MAX_COMMENT_CHARS)
    rated_at: datetime = Field(default_factory=utc_now, description="UTC, RFC 3339")
    variant: str = Field("default", description="the rated question's variant")
    experiment: str = Field("", description="the rated question's experiment (empty: none)")


#: topic name (without prefix) → event model, beside schemas.events.TOPIC_EVENTS
FEEDBACK_TOPIC_EVENTS: dict[str, type[Event]] = {"feedback": FeedbackGiven}
