"""Client frames: what is accepted, and how each refusal is named."""

from __future__ import annotations

import orjson
import pytest

from query_gateway import protocol
from query_gateway.errors import (
    BadFrame,
    FrameRefused,
    FrameTooLarge,
    InvalidQuery,
    QueryTooLong,
    UnknownType,
)
from schemas.events import AnswerError, AnswerEvent, Source

LIMITS = {"max_frame_bytes": 1024, "max_query_chars": 50}


def parse(frame: object) -> protocol.ClientFrame:
    return protocol.parse_frame(orjson.dumps(frame).decode(), **LIMITS)


def test_query_frame_with_defaults() -> None:
    frame = parse({"type": "query", "id": "q1", "text": "what is kafka?"})
    assert frame == protocol.QueryFrame(
        type="query", id="q1", text="what is kafka?", top_k=5, filters={}
    )


def test_query_frame_with_top_k_and_scalar_filters() -> None:
    filters = {"lang": "en", "year": 2024, "score": 0.5, "public": True, "_x1": "y"}
    frame = parse({"type": "query", "id": "q1", "text": "t", "top_k": 20, "filters": filters})
    assert isinstance(frame, protocol.QueryFrame)
    assert frame.top_k == 20
    assert frame.filters == filters
    assert type(frame.filters["public"]) is bool and type(frame.filters["year"]) is int


def test_cancel_and_ping() -> None:
    assert parse({"type": "cancel", "id": "q1"}) == protocol.CancelFrame(type="cancel", id="q1")
    assert parse({"type": "ping"}) == protocol.PingFrame(type="ping")


@pytest.mark.parametrize(
    ("raw", "error", "words"),
    [
        ("{not json", BadFrame, "not valid JSON"),
        ("[1, 2]", BadFrame, "JSON object"),
        ('"query"', BadFrame, "JSON object"),
        (b'{"type":"ping"}', BadFrame, "binary"),
        ('{"type":"subscribe","id":"q1"}', UnknownType, "'subscribe'"),
        ('{"id":"q1"}', UnknownType, "None"),
        (
            '{"type":"query","id":"q1","text":"' + "x" * 2000 + '"}',
            FrameTooLarge,
            "limit is 1024 bytes",
        ),
        ('{"type":"query","id":"q1","text":"' + "x" * 51 + '"}', QueryTooLong, "limit is 50"),
        ('{"type":"query","id":"q1","text":"   "}', InvalidQuery, "text is empty"),
        ('{"type":"query","id":"q1"}', InvalidQuery, "text"),
        ('{"type":"query","id":"q1","text":"t","top_k":0}', InvalidQuery, "top_k"),
        ('{"type":"query","id":"q1","text":"t","top_k":21}', InvalidQuery, "top_k"),
        ('{"type":"query","id":"q1","text":"t","top_k":"5"}', InvalidQuery, "top_k"),
        ('{"type":"query","id":"q1","text":"t","top_k":true}', InvalidQuery, "top_k"),
        (
            '{"type":"query","id":"q1","text":"t","filters":{"a":{"b":1}}}',
            InvalidQuery,
            "filters.a",
        ),
        ('{"type":"query","id":"q1","text":"t","filters":{"a":[1]}}', InvalidQuery, "filters.a"),
        ('{"type":"query","id":"q1","text":"t","filters":{"a":null}}', InvalidQuery, "filters.a"),
        ('{"type":"query","id":"q1","text":"t","filters":{"1a":"x"}}', InvalidQuery, "filters.1a"),
        ('{"type":"query","id":"q1","text":"t","filters":{"a-b":"x"}}', InvalidQuery, "filters"),
        ('{"type":"query","id":"q1","text":"t","topk":3}', InvalidQuery, "topk"),
        ('{"type":"query","id":"","text":"t"}', InvalidQuery, "id"),
        ('{"type":"query","id":7,"text":"t"}', InvalidQuery, "id"),
        ('{"type":"cancel"}', InvalidQuery, "id"),
    ],
)
def test_refusals_name_the_problem(raw: str | bytes, error: type[FrameRefused], words: str) -> None:
    with pytest.raises(error) as info:
        protocol.parse_frame(raw, **LIMITS)
    assert words in info.value.message
    assert info.value.code == error.code


def test_refusal_keeps_the_client_id_when_there_is_one() -> None:
    with pytest.raises(QueryTooLong) as info:
        parse({"type": "query", "id": "q9", "text": "x" * 51})
    frame = protocol.error_from(info.value, "e1")
    assert frame == {
        "type": "error",
        "id": "q9",
        "code": "query_too_long",
        "message": info.value.message,
        "error_id": "e1",
    }


def test_frame_size_counts_bytes_not_characters() -> None:
    text = "한" * 400  # 400 characters, 1,200 bytes in UTF-8
    with pytest.raises(FrameTooLarge):
        protocol.parse_frame(
            orjson.dumps({"type": "query", "id": "q", "text": text}).decode(),
            max_frame_bytes=1024,
            max_query_chars=2000,
        )


def test_answer_events_map_to_frames() -> None:
    src = Source(doc_id="d1", chunk_id="c1", title="Kafka", score=0.9, snippet="…")
    sources = AnswerEvent(query_id="x", seq=0, kind="sources", sources=[src])
    assert protocol.answer_frame("q1", sources) == {
        "type": "sources",
        "id": "q1",
        "sources": [src.model_dump(mode="json")],
    }
    token = AnswerEvent(query_id="x", seq=1, kind="token", delta="Hel")
    assert protocol.answer_frame("q1", token) == {"type": "token", "id": "q1", "delta": "Hel"}
    done = AnswerEvent(query_id="x", seq=2, kind="done", timings_ms={"retrieve": 12.5})
    assert protocol.answer_frame("q1", done) == {
        "type": "done",
        "id": "q1",
        "timings_ms": {"retrieve": 12.5},
    }
    failed = AnswerEvent(
        query_id="x",
        seq=3,
        kind="error",
        error=AnswerError(code="retrieval_failed", message="weaviate down", error_id="e7"),
    )
    assert protocol.answer_frame("q1", failed) == {
        "type": "error",
        "id": "q1",
        "code": "retrieval_failed",
        "message": "weaviate down",
        "error_id": "e7",
    }
    bare = AnswerEvent(query_id="x", seq=4, kind="error")
    assert protocol.answer_frame("q1", bare)["code"] == "answer_failed"


def test_dumps_is_compact_json() -> None:
    assert protocol.dumps(protocol.pong()) == '{"type":"pong"}'
    assert orjson.loads(protocol.dumps(protocol.ack("q1", "u-1"))) == {
        "type": "ack",
        "id": "q1",
        "query_id": "u-1",
    }


def test_aichat_ask_strips_terminal_control_sequences() -> None:
    from query_gateway.cli import printable

    hostile = "25 days\x1b[2J\x1b]0;pwned\x07 of \x1b[31mpaid\x1b[0m vacation\x08\r\nnext\tline"
    assert printable(hostile) == "25 days of paid vacation\nnext\tline"
