from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import orjson
import pytest

from schemas.codec import decode, encode, pack_vector, unpack_vector
from schemas.errors import InvalidEvent
from schemas.events import (
    ChunkEvent,
    DocumentEvent,
    QueryEvent,
    ReplyRoute,
    chunk_uuid,
    document_key,
)
from schemas.generate import JSON_DIR, render


def test_document_roundtrip_keeps_every_field() -> None:
    doc = DocumentEvent(
        doc_id="d1", version=3, title="T", text="hello", metadata={"lang": "en", "n": 2}
    )
    back = decode(DocumentEvent, encode(doc))
    assert back == doc
    assert back.produced_at.tzinfo is not None


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "expected a JSON object"),
        (b'{"schema_version": 2, "doc_id": "d", "version": 1}', "unsupported schema_version 2"),
        (b'{"schema_version": 1, "version": 1}', "doc_id"),
        (b'{"schema_version": 1, "doc_id": "d", "version": -1}', "version"),
        (
            b'{"schema_version": 1, "doc_id": "d", "version": 1, "metadata": {"k": {"nested": 1}}}',
            "metadata",
        ),
        (None, "empty value"),
    ],
)
def test_invalid_documents_are_refused_with_a_reason(raw: bytes | None, reason: str) -> None:
    with pytest.raises(InvalidEvent, match=reason):
        decode(DocumentEvent, raw)


def test_chunk_ids_are_deterministic_and_distinct() -> None:
    assert chunk_uuid("t", "d", 1, 0) == chunk_uuid("t", "d", 1, 0)
    ids = {
        chunk_uuid("t", "d", 1, 0),
        chunk_uuid("t", "d", 1, 1),
        chunk_uuid("t", "d", 2, 0),
        chunk_uuid("t", "e", 1, 0),
        chunk_uuid("u", "d", 1, 0),  # another tenant's document with the same doc_id
    }
    assert len(ids) == 5


def test_a_document_is_its_tenant_and_doc_id() -> None:
    a = DocumentEvent(doc_id="1", tenant="acme", version=1, text="x")
    b = DocumentEvent(doc_id="1", tenant="globex", version=1, text="x")
    assert a.doc_key != b.doc_key and a.kafka_key != b.kafka_key
    assert a.kafka_key == document_key("acme", "1") == "acme/1"
    # tenants hold no "/", so the key splits back unambiguously even when doc_id has one
    assert document_key("acme", "x/y").split("/", 1) == ["acme", "x/y"]


def test_vector_encoding_roundtrips_float32() -> None:
    v = np.random.default_rng(0).standard_normal(384).astype(np.float32)
    encoded = pack_vector(v)
    assert len(encoded) < 384 * 4 * 1.4  # base64 of raw float32, far smaller than a JSON list
    assert np.array_equal(unpack_vector(encoded, 384), v)
    with pytest.raises(InvalidEvent, match="dim says 383"):
        unpack_vector(encoded, 383)


def test_query_filters_refuse_keys_that_are_not_identifiers() -> None:
    route = ReplyRoute(topic="answers", partition=0)
    deadline = datetime.now(UTC) + timedelta(seconds=5)
    QueryEvent(text="q", reply_to=route, deadline=deadline, filters={"category": "x"})
    with pytest.raises(ValueError):
        QueryEvent(text="q", reply_to=route, deadline=deadline, filters={"a:b": "x"})


def test_chunk_inherits_nothing_unknown() -> None:
    raw = orjson.dumps(
        {
            "schema_version": 1,
            "chunk_id": "c",
            "doc_id": "d",
            "version": 1,
            "seq": 0,
            "n_chunks": 1,
            "text": "t",
            "char_start": 0,
            "char_end": 1,
            "future_field": 1,
        }
    )
    chunk = decode(ChunkEvent, raw)  # unknown fields are ignored (forward compatible)
    assert not hasattr(chunk, "future_field")


def test_committed_json_schemas_match_the_models() -> None:
    for name, content in render().items():
        path = JSON_DIR / name
        assert path.exists(), f"{path} missing: run python -m schemas.generate"
        assert path.read_bytes() == content, f"{path} is stale: run python -m schemas.generate"


def test_versions_stay_within_what_every_store_holds_exactly() -> None:
    from schemas.events import MAX_VERSION

    DocumentEvent(doc_id="d", version=MAX_VERSION, text="x")
    with pytest.raises(ValueError, match="less than or equal"):
        DocumentEvent(doc_id="d", version=MAX_VERSION + 1, text="x")  # a nanosecond timestamp
