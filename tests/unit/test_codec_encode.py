"""The wire bytes of an event: the JSON of its ``model_dump(mode="json")``, whatever writes them."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from schemas.codec import decode, encode
from schemas.events import AnswerError, AnswerEvent, Event, QueryEvent, ReplyRoute, Source

WHEN = datetime(2026, 12, 1, 8, 30, 15, 123456, tzinfo=UTC)
EVENTS: list[Event] = [
    AnswerEvent(query_id="q", seq=0, kind="sources", produced_at=WHEN, sources=[
        Source(doc_id="d/1", chunk_id="c1", title="휴가 규정 \"quoted\"", score=0.1234567, snippet="é\n\t"),
    ]),
    AnswerEvent(query_id="q", seq=1, kind="token", delta="25 days [1] ✓ ", produced_at=WHEN),
    AnswerEvent(query_id="q", seq=2, kind="done", timings_ms={"embed": 1e-7, "total": 12345.5}),
    AnswerEvent(query_id="q", seq=3, kind="error", error=AnswerError(code="unavailable", message="m")),
    QueryEvent(text="연차는 며칠?", filters={"lang": "ko", "n": 3, "x": 0.5, "ok": True},
               reply_to=ReplyRoute(topic="answers", partition=2), deadline=WHEN),
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: type(e).__name__)
def test_encode_writes_the_json_of_the_events_dump_and_decodes_back(event: Event) -> None:
    raw = encode(event)
    assert raw == orjson.dumps(event.model_dump(mode="json"))
    assert decode(type(event), raw) == event
