from __future__ import annotations

import pytest

from streams.chunking import chunk_text


def test_offsets_point_at_the_chunk_text() -> None:
    text = "Alpha beta. Gamma delta!\n\nEpsilon zeta? Eta theta. " * 20
    chunks = chunk_text(text, max_chars=120, overlap_chars=30)
    assert len(chunks) > 3
    for c in chunks:
        assert text[c.char_start : c.char_end] == c.text
        assert len(c.text) <= 120
    assert [c.seq for c in chunks] == list(range(len(chunks)))


def test_every_sentence_is_covered_and_chunks_overlap() -> None:
    sentences = [f"Sentence number {i} is here." for i in range(40)]
    text = " ".join(sentences)
    chunks = chunk_text(text, max_chars=200, overlap_chars=60)
    joined = " ".join(c.text for c in chunks)
    assert all(s in joined for s in sentences)
    # consecutive chunks share text (overlap), and each starts after the previous one
    for a, b in zip(chunks, chunks[1:], strict=False):
        assert b.char_start < a.char_end
        assert b.char_start > a.char_start


def test_korean_sentences_split_without_a_space_after_the_period() -> None:
    text = "모든 직원은 원격 근무를 할 수 있습니다.원격 근무일은 미리 등록해야 합니다."
    chunks = chunk_text(text, max_chars=30, overlap_chars=0)
    assert [c.text for c in chunks] == [
        "모든 직원은 원격 근무를 할 수 있습니다.",
        "원격 근무일은 미리 등록해야 합니다.",
    ]


def test_a_long_run_without_spaces_is_cut_at_the_limit() -> None:
    text = "가" * 250
    chunks = chunk_text(text, max_chars=100, overlap_chars=10)
    assert [len(c.text) for c in chunks] == [100, 100, 50]
    assert "".join(c.text for c in chunks) == text


def test_empty_and_blank_text_give_no_chunks() -> None:
    assert chunk_text("") == []
    assert chunk_text(" \n\n \t") == []


def test_overlap_must_be_smaller_than_the_chunk() -> None:
    with pytest.raises(ValueError):
        chunk_text("x", max_chars=10, overlap_chars=10)
