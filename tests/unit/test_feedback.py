"""Feedback: the frame's validation, who may rate what, and the summary merge in the shipper."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from starlette.testclient import TestClient

from query_gateway.app import create_app
from query_gateway.auth import Principal
from query_gateway.dev_jwt import mint
from query_gateway.errors import InvalidQuery, KafkaUnavailable
from query_gateway.experiments import Assignment
from query_gateway.feedback import AnsweredQueries, NotAnswered, UnknownQuery
from query_gateway.protocol import FeedbackFrame, parse_frame
from schemas.events import AnswerEvent, QueryEvent
from schemas.feedback import FeedbackGiven
from streams.es_documents import EsDocument, StoredDocument
from streams.summaries import SummaryBuilder
from tests.unit.test_gateway_app import FakeTransport, query, receive_until_final, settings

SECRET = "feedback-tests-secret-of-at-least-32-bytes!"


def parse(frame: dict[str, Any]) -> object:
    return parse_frame(orjson.dumps(frame).decode(), max_frame_bytes=16_384, max_query_chars=100)


def rating(**extra: Any) -> dict[str, Any]:
    return {"type": "feedback", "id": "f1", "query_id": "q-1", "rating": 1, **extra}


def test_a_valid_feedback_frame() -> None:
    frame = parse(rating(rating=-1, comment="wrong document"))
    assert frame == FeedbackFrame(type="feedback", id="f1", query_id="q-1", rating=-1,
                                  comment="wrong document")
    assert parse(rating()) == FeedbackFrame(type="feedback", id="f1", query_id="q-1", rating=1)


@pytest.mark.parametrize("bad, problem", [
    (rating(rating=0), "rating"),
    (rating(rating=2), "rating"),
    (rating(rating=True), "rating"),
    (rating(rating=1.0), "rating"),
    (rating(rating="1"), "rating"),
    (rating(comment="x" * 2_001), "comment"),
    (rating(query_id=""), "query_id"),
    (rating(query_id="q" * 129), "query_id"),
    (rating(stars=5), "stars"),
    ({"type": "feedback", "id": "f1", "rating": 1}, "query_id"),
])
def test_invalid_feedback_frames_are_refused_naming_the_field(bad: dict[str, Any], problem: str) -> None:
    with pytest.raises(InvalidQuery) as refused:
        parse(bad)
    assert problem in refused.value.message and refused.value.client_id == "f1"


ALICE, BOB = Principal("alice", "acme"), Principal("bob", "acme")


def test_only_the_askers_answered_questions_can_be_rated() -> None:
    clock = [0.0]
    known = AnsweredQueries(window_s=60, remember=3, now=lambda: clock[0])
    known.asked("q1", ALICE, Assignment("exp", "dense"), "s1")
    with pytest.raises(NotAnswered):
        known.check("q1", ALICE)  # not answered yet
    known.answered("q1")
    assert known.check("q1", ALICE).assignment == Assignment("exp", "dense")
    # another user, another tenant, an unknown id: the same refusal (nothing is revealed)
    for principal, query_id in ((BOB, "q1"), (Principal("alice", "other"), "q1"), (ALICE, "q9")):
        with pytest.raises(UnknownQuery) as refused:
            known.check(query_id, principal, client_id="f1")
        assert refused.value.code == "unknown_query" and "of yours" in refused.value.message
    clock[0] = 61.0  # past the window
    with pytest.raises(UnknownQuery):
        known.check("q1", ALICE)
    for i in range(5):  # bounded: the oldest are forgotten
        known.asked(f"n{i}", ALICE, Assignment(), "s1")
    assert len(known) == 3


class FeedbackTransport(FakeTransport):
    def __init__(self) -> None:
        super().__init__()
        self.feedback: list[FeedbackGiven] = []
        self.feedback_error: str | None = None

    async def publish_feedback(self, event: FeedbackGiven) -> None:
        if self.feedback_error:
            raise KafkaUnavailable(self.feedback_error)
        self.feedback.append(event)


def _asked(ws: Any, text: str = "what is kafka?", id: str = "q1") -> str:
    ws.send_json(query(text, id=id))
    frames = receive_until_final(ws)
    assert frames[-1]["type"] in ("done", "error"), frames
    return str(frames[0]["query_id"])


def test_feedback_over_the_websocket_after_a_reconnect_and_refused_for_others() -> None:
    transport = FeedbackTransport()
    app = create_app(settings(gateway_auth="jwt", jwt_secret=SECRET), transport=transport, checks={})
    alice, bob = (f"/ws?token={mint(SECRET, user=u, tenant='acme')}" for u in ("alice", "bob"))
    with TestClient(app) as client:
        with client.websocket_connect(alice) as ws:
            query_id = _asked(ws)
        with client.websocket_connect(bob) as ws:  # bob may not rate alice's answer
            ws.send_json(rating(query_id=query_id))
            refused = ws.receive_json()
        with client.websocket_connect(alice) as ws:  # a new connection of alice may
            ws.send_json(rating(query_id=query_id, rating=-1, comment="outdated"))
            ack = ws.receive_json()
            transport.script = lambda event: [
                AnswerEvent(query_id=event.query_id, seq=0, kind="error",
                            error={"code": "search_unavailable", "message": "down"})]
            failed = _asked(ws, id="q2")
            ws.send_json(rating(id="f2", query_id=failed))
            not_answered = ws.receive_json()
            transport.feedback_error = "broker down"
            ws.send_json(rating(id="f3", query_id=query_id))
            unavailable = ws.receive_json()
    assert refused["type"] == "error" and refused["code"] == "unknown_query" and refused["id"] == "f1"
    assert ack == {"type": "feedback_ack", "id": "f1", "query_id": query_id}
    assert not_answered["code"] == "not_answered" and not_answered["id"] == "f2"
    assert unavailable["code"] == "feedback_unavailable"
    (event,) = transport.feedback
    assert (event.query_id, event.tenant, event.user, event.rating, event.comment) == (
        query_id, "acme", "alice", -1, "outdated")


# -- the shipper's merge ---------------------------------------------------------------------

INDEX = "p-summaries"


def shipped_query(query_id: str, tenant: str, user: str) -> EsDocument:
    return EsDocument("p-2026.12.02", f"queries-0-{query_id}", {
        "@timestamp": "2026-12-02T00:00:00+00:00", "event": {"dataset": "aichat.queries"},
        "aichat": {"query_id": query_id, "tenant": tenant, "user": user, "text": "q",
                   "variant": "dense", "experiment": "exp"}})


def shipped_feedback(query_id: str, tenant: str, user: str, rating: int = -1) -> EsDocument:
    return EsDocument("p-2026.12.02", f"feedback-0-{query_id}", {
        "@timestamp": "2026-12-02T00:00:05+00:00", "event": {"dataset": "aichat.feedback"},
        "aichat": {"query_id": query_id, "tenant": tenant, "user": user, "rating": rating,
                   "comment": "wrong", "rated_at": "2026-12-02T00:00:05+00:00", "session_id": "s"}})


def stored(tenant: str, user: str) -> StoredDocument:
    return StoredDocument({"aichat": {"query_id": "q", "tenant": tenant, "user": user,
                                      "outcome": "done"}}, seq_no=3, primary_term=1)


def test_a_rating_is_merged_only_into_the_summary_of_the_same_tenant_and_user() -> None:
    builder = SummaryBuilder("p")
    docs = [shipped_feedback("q1", "acme", "alice"), shipped_feedback("q2", "acme", "mallory"),
            shipped_feedback("q3", "acme", "alice"), shipped_query("q4", "acme", "alice"),
            shipped_feedback("q4", "acme", "alice", rating=1)]
    # every rated summary is read; q4's is not in Elasticsearch yet, its question is in this batch
    assert builder.missing(docs) == ["q1", "q2", "q3", "q4"]
    plan = builder.plan(docs, {"q1": stored("acme", "alice"), "q2": stored("acme", "alice")})
    rated = {u.id: u.source for u in plan.updates if "feedback" in u.source.get("aichat", {})}
    assert rated == {
        "q1": {"aichat": {"feedback": {"rating": -1, "comment": "wrong", "session_id": "s",
                                       "rated_at": "2026-12-02T00:00:05+00:00"}}},
        "q4": {"aichat": {"feedback": {"rating": 1, "comment": "wrong", "session_id": "s",
                                       "rated_at": "2026-12-02T00:00:05+00:00"}}},
    }
    ids = [u.id for u in plan.updates]
    assert ids.index("q4") < len(ids) - 1 and ids[-1] == "q4"  # the question first, then its rating
    assert sorted(plan.feedback) == [("merged", "q1"), ("merged", "q4"), ("no_summary", "q3"),
                                     ("not_owner", "q2")]
    question = next(u for u in plan.updates if u.id == "q4" and "text" in u.source["aichat"])
    assert question.source["aichat"]["experiment"] == "exp"  # the assignment on the summary


def test_feedback_event_roundtrip_has_the_assignment() -> None:
    event = FeedbackGiven(query_id="q1", tenant="acme", user="alice", rating=1,
                          variant="alpha=0.3", experiment="exp")
    assert FeedbackGiven.model_validate_json(event.model_dump_json()) == event
    with pytest.raises(ValueError):
        FeedbackGiven(query_id="q1", rating=0)  # type: ignore[arg-type]
    assert QueryEvent.model_fields["experiment"].default == ""
