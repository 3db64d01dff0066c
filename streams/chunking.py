"""Split a document into overlapping chunks on paragraph and sentence boundaries.

Pure functions, no Kafka. Offsets refer to the original text, so
``text[chunk.char_start:chunk.char_end] == chunk.text`` always holds.

1. The text is cut into *segments*: sentences inside paragraphs. A sentence
   ends at ``. ! ? 。 ！ ？`` (and ``…``) followed by whitespace or directly by
   Hangul, or at a line break.
2. Segments are packed greedily into chunks of at most ``max_chars``.
3. A segment longer than ``max_chars`` is cut at the last whitespace before the
   limit (or at the limit where a script has no spaces).
4. Each next chunk starts with the tail segments of the previous one that fit in
   ``overlap_chars``, so a fact split across a boundary is still found.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# a sentence end: punctuation then whitespace, punctuation directly followed by
# Hangul (Korean text often omits the space), or a line break
_SENTENCE_END = re.compile(r"(?<=[.!?。！？…])(?:\s+|(?=[\u1100-\u11ff\u3131-\u318e\uac00-\ud7a3]))|\n+")


@dataclass(frozen=True, slots=True)
class Span:
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class TextChunk:
    seq: int
    text: str
    char_start: int
    char_end: int


def _segments(text: str) -> list[Span]:
    """Sentence spans with surrounding whitespace trimmed; empty ones dropped."""
    spans: list[Span] = []
    pos = 0
    for match in _SENTENCE_END.finditer(text):
        spans.append(Span(pos, match.start()))
        pos = match.end()
    spans.append(Span(pos, len(text)))
    out = []
    for span in spans:
        start, end = span.start, span.end
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        if end > start:
            out.append(Span(start, end))
    return out


def _split_long(text: str, span: Span, max_chars: int) -> list[Span]:
    """Cut a too-long segment at whitespace before the limit, else hard at the limit."""
    pieces = []
    start = span.start
    while span.end - start > max_chars:
        limit = start + max_chars
        cut = text.rfind(" ", start + max_chars // 2, limit)
        cut = cut if cut > start else limit
        pieces.append(Span(start, cut))
        start = cut
        while start < span.end and text[start].isspace():
            start += 1
    if span.end > start:
        pieces.append(Span(start, span.end))
    return pieces


def chunk_text(text: str, *, max_chars: int = 800, overlap_chars: int = 100) -> list[TextChunk]:
    if max_chars < 1:
        raise ValueError("max_chars must be positive")
    if not 0 <= overlap_chars < max_chars:
        raise ValueError("overlap_chars must be in [0, max_chars)")
    segments: list[Span] = []
    for seg in _segments(text):
        segments.extend(_split_long(text, seg, max_chars))
    if not segments:
        return []

    chunks: list[TextChunk] = []
    i = 0
    while i < len(segments):
        j = i
        while j + 1 < len(segments) and segments[j + 1].end - segments[i].start <= max_chars:
            j += 1
        start, end = segments[i].start, segments[j].end
        chunks.append(TextChunk(len(chunks), text[start:end], start, end))
        if j + 1 >= len(segments):
            break
        # the next chunk begins with the tail of this one that fits in the overlap
        nxt = j + 1
        while nxt - 1 > i and end - segments[nxt - 1].start <= overlap_chars:
            nxt -= 1
        # ...but only as much overlap as leaves room for the next new segment
        while nxt <= j and segments[j + 1].end - segments[nxt].start > max_chars:
            nxt += 1
        i = nxt
    return chunks
