"""The chunker against the bundled embedding model's real tokenizer (local, offline)."""

from __future__ import annotations

import logging
import random
import time
import unicodedata
from pathlib import Path

import pytest
from pydantic import ValidationError
from tokenizers import Tokenizer

from streams.chunking import (
    DEFAULT_MODEL,
    TextChunk,
    TokenCounter,
    TokenizerCounter,
    Tokens,
    chunk_document,
    chunk_text,
    fit_prefix,
    load_token_counter,
    sentences,
)
from streams.config import RetrievalSettings
from streams.models import resolve_model_path

MODEL_DIR = Path(resolve_model_path(DEFAULT_MODEL))
MAX_SEQ_LENGTH = 256  # sentence_bert_config.json of the bundled model


@pytest.fixture(scope="module")
def counter() -> TokenizerCounter:
    return load_token_counter(DEFAULT_MODEL)


@pytest.fixture(scope="module")
def model_tokenizer() -> Tokenizer:
    """The model's tokenizer, loaded apart from the counter, adding [CLS] and [SEP]."""
    tokenizer = Tokenizer.from_file(str(MODEL_DIR / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def check(
    text: str, chunks: list[TextChunk], tokenizer: Tokenizer, max_tokens: int = MAX_SEQ_LENGTH - 2
) -> None:
    """What every chunking must hold, checked with the model's own tokenizer."""
    assert [c.seq for c in chunks] == list(range(len(chunks)))
    for c in chunks:
        assert c.text and not c.text.isspace()
        assert text[c.char_start : c.char_end] == c.text
        with_specials = len(tokenizer.encode(c.text).ids)
        assert with_specials <= MAX_SEQ_LENGTH, "the model would truncate this chunk"
        assert with_specials - 2 <= max_tokens
        assert c.n_tokens == with_specials - 2
    for a, b in zip(chunks, chunks[1:], strict=False):
        assert a.char_start < b.char_start and a.char_end < b.char_end  # never contained


ENGLISH = (
    "Apache Kafka is a distributed event store and stream-processing platform. It is an "
    "open-source system developed by the Apache Software Foundation written in Java and Scala. "
    "The project aims to provide a unified, high-throughput, low-latency platform for handling "
    "real-time data feeds.\n\nKafka can connect to external systems via Kafka Connect. "
)
KOREAN = (
    "모든 직원은 원격 근무를 할 수 있습니다.원격 근무일은 미리 등록해야 합니다. "
    "연차 휴가는 매년 15일이 주어지며, 사용하지 않은 휴가는 다음 해로 이월됩니다.\n\n"
    "휴가 신청은 최소 3일 전에 팀장의 승인을 받아야 합니다!질문이 있으면 인사팀에 문의하세요. "
)
MIXED = "Kafka는 분산 스트리밍 플랫폼입니다.It was built at LinkedIn. 日本語の文です。次の文です！ "
LONG_URL = "Docs: https://example.com/" + "/".join(f"seg{i}?q={i}&x=abc_def" for i in range(400))
TEXTS = {
    "english": ENGLISH * 12,
    "korean": KOREAN * 12,
    "mixed": MIXED * 30,
    "cjk run without spaces": ("中文句子下一句汉字测试" * 500)[:5000],
    "hangul run without spaces": ("가나다라마바사아자차카타파하" * 400)[:5000],
    "latin run without spaces": ("abcdefghij" * 500),
    "long url": LONG_URL,
}


@pytest.mark.parametrize("name", list(TEXTS))
@pytest.mark.parametrize(("max_tokens", "overlap"), [(None, 0), (200, 32), (48, 8)])
def test_no_chunk_exceeds_the_limit(
    name: str,
    max_tokens: int | None,
    overlap: int,
    counter: TokenCounter,
    model_tokenizer: Tokenizer,
) -> None:
    text = TEXTS[name]
    chunks = chunk_document(text, counter=counter, max_tokens=max_tokens, overlap_tokens=overlap)
    assert chunks
    check(text, chunks, model_tokenizer, max_tokens or counter.max_tokens)
    # nothing is lost: every non-space character is in some chunk
    covered = [False] * len(text)
    for c in chunks:
        covered[c.char_start : c.char_end] = [True] * (c.char_end - c.char_start)
    assert all(covered[i] for i, ch in enumerate(text) if not ch.isspace())


def test_the_default_limit_is_the_models_max_seq_length_minus_specials(
    counter: TokenCounter,
) -> None:
    assert (counter.max_tokens, counter.special_tokens) == (MAX_SEQ_LENGTH - 2, 2)
    chunks = chunk_document(ENGLISH * 40, counter=counter)
    assert max(c.n_tokens for c in chunks) > 200  # chunks fill what the model reads


def test_settings_beyond_the_model_are_clamped_and_logged_once(
    counter: TokenCounter, model_tokenizer: Tokenizer, caplog: pytest.LogCaptureFixture
) -> None:
    text = ENGLISH * 40
    with caplog.at_level(logging.WARNING, logger="streams.chunking"):
        chunks = chunk_document(text, counter=counter, max_tokens=1000, overlap_tokens=300)
        chunk_document(text, counter=counter, max_tokens=1000, overlap_tokens=300)
    check(text, chunks, model_tokenizer)
    assert max(c.n_tokens for c in chunks) > 200
    warnings = [r for r in caplog.records if "would be truncated" in r.getMessage()]
    assert len(warnings) == 1


def test_bad_limits_are_refused(counter: TokenCounter) -> None:
    with pytest.raises(ValueError):
        chunk_document("x", counter=counter, max_tokens=100, overlap_tokens=100)
    with pytest.raises(ValueError):
        chunk_document("x", counter=counter, max_tokens=4)
    with pytest.raises(ValidationError, match="chunk_overlap_tokens"):
        RetrievalSettings(chunk_max_tokens=100, chunk_overlap_tokens=100)
    settings = RetrievalSettings()
    assert (settings.chunk_max_tokens, settings.chunk_overlap_tokens) == (400, 48)


def test_empty_and_blank_text_give_no_chunks(counter: TokenCounter) -> None:
    for text in ("", " \n\n \t"):
        assert chunk_document(text, counter=counter) == []
        assert chunk_document(text, counter=counter, content_type="text/markdown") == []
    assert chunk_text("") == []


HANDBOOK = """\
# Handbook

Welcome to the company. This handbook explains the rules.

## Vacation

Everyone gets 25 days of vacation per year.

### Carry-over

Up to 5 unused days carry over to the next year. They expire on March 31.

### Requests

Ask your manager at least two weeks ahead.

## Remote work

Remote work is allowed two days a week.
"""


def test_the_heading_path_travels_with_each_chunk(counter: TokenCounter) -> None:
    chunks = chunk_document(HANDBOOK, counter=counter, content_type="text/markdown", max_tokens=64)
    paths = {c.text.splitlines()[0]: c.heading_path for c in chunks}
    assert paths == {
        "# Handbook": ("Handbook",),
        "## Vacation": ("Handbook", "Vacation"),
        "### Carry-over": ("Handbook", "Vacation", "Carry-over"),
        "### Requests": ("Handbook", "Vacation", "Requests"),
        "## Remote work": ("Handbook", "Remote work"),
    }
    # a chunk never mixes two sections, even where the limit would allow it
    assert all(c.text.count("#") <= 3 for c in chunks)
    assert chunk_document(HANDBOOK, counter=counter, content_type="text/markdown; charset=utf-8")[
        -1
    ].heading_path == ("Handbook", "Remote work")


def test_plain_text_has_no_headings(counter: TokenCounter) -> None:
    chunks = chunk_document(HANDBOOK, counter=counter, content_type="text/plain")
    assert len(chunks) == 1 and chunks[0].heading_path == ()


def test_setext_headings_front_matter_and_bare_titles(counter: TokenCounter) -> None:
    text = (
        "---\ntitle: Guide\n---\n\nIntro text before any heading.\n\n"
        "Guide\n=====\n\n"  # a title alone joins the section nested under it
        "Setup\n-----\n\nInstall it.\n\n"
        "- a list item\n---\n\nAfter the rule.\n"
    )
    chunks = chunk_document(text, counter=counter, content_type="text/markdown", max_tokens=16)
    assert [(c.text, c.heading_path) for c in chunks] == [
        ("---\ntitle: Guide\n---\n\nIntro text before any heading.", ()),
        ("Guide\n=====\n\nSetup\n-----\n\nInstall it.", ("Guide", "Setup")),
        ("- a list item\n---\n\nAfter the rule.", ("Guide", "Setup")),  # a rule, not a heading
    ]


def test_code_fences_stay_whole_or_split_on_lines(
    counter: TokenCounter, model_tokenizer: Tokenizer
) -> None:
    fence = "```python\ndef f(x):\n\n    # not a heading\n    return x + 1\n```"
    text = f"# Code\n\nA function. It adds one.\n\n{fence}\n\nAfter the code."
    chunks = chunk_document(text, counter=counter, content_type="text/markdown", max_tokens=64)
    assert any(fence in c.text for c in chunks)
    assert {c.heading_path for c in chunks} == {("Code",)}

    lines = [
        f"    value_{i} = compute(value_{i - 1}, factor={i})  # step {i}" for i in range(1, 60)
    ]
    long_fence = "```\n" + "\n".join(lines) + "\n```"
    chunks = chunk_document(
        long_fence, counter=counter, content_type="text/markdown", max_tokens=80
    )
    check(long_fence, chunks, model_tokenizer, 80)
    assert len(chunks) > 3
    for c in chunks:  # each chunk is whole lines, indentation kept
        assert c.char_start == 0 or long_fence[c.char_start - 1] == "\n"
        assert c.char_end == len(long_fence) or long_fence[c.char_end] == "\n"


def test_korean_sentences_split_without_a_space_after_the_period(counter: TokenCounter) -> None:
    text = "모든 직원은 원격 근무를 할 수 있습니다.원격 근무일은 미리 등록해야 합니다."
    chunks = chunk_document(text, counter=counter, max_tokens=40)
    assert [c.text for c in chunks] == [
        "모든 직원은 원격 근무를 할 수 있습니다.",
        "원격 근무일은 미리 등록해야 합니다.",
    ]


@pytest.mark.parametrize("form", ["NFC", "NFD"])
def test_a_long_korean_word_is_cut_between_syllables(
    form: str, counter: TokenCounter, model_tokenizer: Tokenizer
) -> None:
    word = unicodedata.normalize(form, "원격근무를합니다" * 3)  # one word of 63 tokens (jamo)
    chunks = chunk_document(word, counter=counter, max_tokens=16)
    check(word, chunks, model_tokenizer, 16)
    assert len(chunks) > 2
    assert "".join(c.text for c in chunks) == word
    for c in chunks:  # a chunk never starts with the vowel or final consonant of a syllable
        assert not 0x1160 <= ord(c.text[0]) <= 0x11FF, "a syllable was split"
    # each piece holds whole syllables: composing it changes nothing about the others
    nfc = [unicodedata.normalize("NFC", c.text) for c in chunks]
    assert "".join(nfc) == unicodedata.normalize("NFC", word)


def test_sentence_ends() -> None:
    def split(text: str) -> list[str]:
        return [text[s:e] for s, e in sentences(text, 0, len(text))]

    assert split("It costs 3.5 dollars, e.g. in Dr. Smith's shop. Next one!  Last?") == [
        "It costs 3.5 dollars, e.g. in Dr. Smith's shop.",
        "Next one!",
        "Last?",
    ]
    assert split("합니다.두번째 문장입니다!세번째") == ["합니다.", "두번째 문장입니다!", "세번째"]
    assert split("日本語の文です。次の文です！最後") == ["日本語の文です。", "次の文です！", "最後"]
    assert split('He said "Stop." Then he left...\nA new line') == [
        'He said "Stop."',
        "Then he left...",
        "A new line",
    ]


def sentence_list(n: int) -> str:
    return " ".join(f"Sentence number {i} is here." for i in range(n))


def test_overlap_repeats_the_tail_sentences(
    counter: TokenCounter, model_tokenizer: Tokenizer
) -> None:
    text = sentence_list(60)
    chunks = chunk_document(text, counter=counter, max_tokens=48, overlap_tokens=16)
    check(text, chunks, model_tokenizer, 48)
    for a, b in zip(chunks, chunks[1:], strict=False):
        shared = text[b.char_start : a.char_end]
        assert b.char_start < a.char_end, "consecutive chunks overlap"
        assert 0 < counter.count(shared) <= 16
        assert shared.startswith("Sentence") and shared.endswith(".")  # whole sentences
    assert all(
        f"Sentence number {i} is here." in " ".join(c.text for c in chunks) for i in range(60)
    )

    plain = chunk_document(text, counter=counter, max_tokens=48, overlap_tokens=0)
    assert all(b.char_start > a.char_end for a, b in zip(plain, plain[1:], strict=False))
    assert len(plain) < len(chunks)


def test_overlap_leaves_room_for_new_text(
    counter: TokenCounter, model_tokenizer: Tokenizer
) -> None:
    text = sentence_list(30)
    chunks = chunk_document(text, counter=counter, max_tokens=20, overlap_tokens=19)
    check(text, chunks, model_tokenizer, 20)
    assert chunks[-1].text.endswith("29 is here.")


def test_a_paragraph_that_does_not_fit_starts_a_new_chunk(counter: TokenCounter) -> None:
    first = sentence_list(5)  # 30 tokens
    text = first + "\n\n" + sentence_list(6)  # 36 tokens
    chunks = chunk_document(text, counter=counter, max_tokens=48)
    assert [c.text for c in chunks] == [first, sentence_list(6)]
    # a chunk less than half full takes what fits of the next paragraph
    chunks = chunk_document(text, counter=counter, max_tokens=64)
    assert chunks[0].text.startswith(first + "\n\nSentence number 0")


def test_chunking_is_deterministic(counter: TokenCounter) -> None:
    text = HANDBOOK * 3 + KOREAN * 5 + LONG_URL
    first = chunk_document(
        text, counter=counter, content_type="text/markdown", max_tokens=50, overlap_tokens=10
    )
    fresh = TokenizerCounter.from_path(MODEL_DIR)
    again = chunk_document(
        text, counter=fresh, content_type="text/markdown", max_tokens=50, overlap_tokens=10
    )
    assert first == again


def test_without_exact_spans_every_chunk_is_recounted(
    counter: TokenCounter, model_tokenizer: Tokenizer
) -> None:
    text = ENGLISH * 5 + KOREAN * 5 + LONG_URL
    exact = chunk_document(text, counter=counter, max_tokens=64, overlap_tokens=16)
    recounting = TokenizerCounter.from_path(MODEL_DIR)
    recounting.exact_spans = False
    assert chunk_document(text, counter=recounting, max_tokens=64, overlap_tokens=16) == exact


class _PrefixCounter:
    """A token per 4 characters, plus 3 tokens at the start of every text it counts.

    Like a tokenizer that marks a text's start, the pieces of a text do not add
    up to the whole: only a real count of each chunk keeps it under the limit.
    """

    name = "prefix"
    max_tokens = 100
    special_tokens = 0
    exact_spans = False

    def count(self, text: str) -> int:
        return len(self.tokens(text))

    def tokens(self, text: str) -> Tokens:
        starts = [0, 0, 0, *range(0, len(text), 4)]
        ends = [0, 0, 0, *(min(s + 4, len(text)) for s in starts[3:])]
        return Tokens(starts, ends, [None] * len(starts))


def test_a_tokenizer_whose_pieces_do_not_add_up_still_never_overflows() -> None:
    fake = _PrefixCounter()
    text = sentence_list(40) + " " + "x" * 500
    chunks = chunk_document(text, counter=fake, max_tokens=40, overlap_tokens=10)
    for c in chunks:
        assert text[c.char_start : c.char_end] == c.text
        assert fake.count(c.text) == c.n_tokens <= 40
    for a, b in zip(chunks, chunks[1:], strict=False):
        assert a.char_end < b.char_end
    # the recount is what keeps them under: trusting the pieces' sums would overflow
    fake.exact_spans = True
    trusting = chunk_document(text, counter=fake, max_tokens=40, overlap_tokens=10)
    assert any(fake.count(c.text) > 40 for c in trusting)


def test_fit_prefix_takes_the_longest_prefix_that_fits(counter: TokenCounter) -> None:
    text = "중국어 中文句子 and English words " * 10
    length, n = fit_prefix(counter, text, 30)
    assert n == counter.count(text[:length]) <= 30
    assert counter.count(text[: length + 1]) > 30 or text[length].isspace()


def abstract(rng: random.Random) -> str:
    words = "cells protein expression mice patients increased reduced signaling gene human".split()
    out = []
    while sum(map(len, out)) < 1500:
        n = rng.randint(12, 30)
        out.append(
            " ".join(rng.choice(words) for _ in range(n)).capitalize() + f" ({rng.random():.2f})."
        )
    return " ".join(out)


def test_speed_guard_300_abstracts_chunk_in_under_3_seconds(counter: TokenCounter) -> None:
    """A generous bound, not a benchmark: it catches accidental quadratic work."""
    rng = random.Random(7)
    docs = [f"Title {i}\n\n{abstract(rng)}" for i in range(300)]
    started = time.perf_counter()
    chunks = [chunk_document(d, counter=counter, max_tokens=200, overlap_tokens=32) for d in docs]
    elapsed = time.perf_counter() - started
    assert all(chunks)
    assert elapsed < 3.0, f"300 abstracts took {elapsed:.2f}s"
