from __future__ import annotations

from schemas.codec import encode, pack_vector
from schemas.events import DeadLetter, DocumentEvent, EmbeddedChunk
from streams.es_documents import index_name, to_document

TS = 1_790_000_000.0  # 2026-09-21


def _doc(dataset: str, value: bytes | None, offset: int = 7) -> object:
    return to_document(
        prefix="aichat-events",
        dataset=dataset,
        topic=f"p.{dataset}",
        partition=1,
        offset=offset,
        key="k",
        timestamp_s=TS,
        value=value,
    )


def test_id_and_index_are_deterministic() -> None:
    value = encode(DocumentEvent(doc_id="d", version=1, text="hello"))
    a, b = _doc("documents", value), _doc("documents", value)
    assert a.id == b.id == "p.documents-1-7"
    assert a.index == b.index == index_name("aichat-events", TS) == "aichat-events-2026.09.21"


def test_document_fields_are_namespaced_and_traced() -> None:
    event = DocumentEvent(doc_id="d", version=4, text="hello", metadata={"lang": "en"})
    doc = _doc("documents", encode(event))
    assert doc.source["trace"]["id"] == event.trace_id
    assert doc.source["event"]["dataset"] == "aichat.documents"
    assert doc.source["aichat"]["doc_id"] == "d"
    assert doc.source["aichat"]["metadata"] == {"lang": "en"}
    assert doc.source["kafka"] == {"topic": "p.documents", "partition": 1, "offset": 7, "key": "k"}


def test_vectors_are_not_shipped() -> None:
    chunk = EmbeddedChunk(
        chunk_id="c",
        doc_id="d",
        version=1,
        seq=0,
        n_chunks=1,
        text="t",
        char_start=0,
        char_end=1,
        vector=pack_vector([0.1, 0.2]),
        dim=2,
        model="m",
    )
    doc = _doc("embeddings", encode(chunk))
    assert "vector" not in doc.source["aichat"]
    assert doc.source["aichat"]["model"] == "m"


def test_dead_letters_are_failures_with_a_message() -> None:
    letter = DeadLetter(
        topic="p.documents",
        partition=0,
        offset=3,
        value="junk",
        agent="chunker",
        error_type="InvalidEvent",
        message="not JSON",
    )
    doc = _doc("dlq", encode(letter))
    assert doc.source["event"]["outcome"] == "failure"
    assert doc.source["aichat"]["dead_letter"]["error_type"] == "InvalidEvent"
    assert "not JSON" in doc.source["message"]


def test_undecodable_records_are_kept_as_failures() -> None:
    doc = _doc("documents", b"\xff\xfe junk")
    assert doc.source["event"]["outcome"] == "failure"
    assert "undecodable" in doc.source["message"]
    assert doc.source["@timestamp"].startswith("2026-09-21")
