"""Pack a document's sentences into chunks that fit the embedding model.

1. The document is cut into sections (Markdown headings) and blocks
   (paragraphs, code fences) by :mod:`streams.chunking.structure`.
2. The whole text is tokenized once; a span's token count is the number of
   tokens that begin in it, exact for spans cut between words.
3. Each block becomes *units*: a code fence or a sentence that fits, else its
   lines (code) or words; a word over the limit is cut between the tokenizer's
   words (URLs, CJK), and as the last resort at a token boundary that splits no
   character (:func:`~streams.chunking.tokenizer.fit_prefix`).
4. Units are packed greedily, one section at a time. A new paragraph that does
   not fit whole starts a new chunk once the current one is half full.
5. Each next chunk starts with the tail units of the previous one that fit in
   ``overlap_tokens``, as long as its first new unit still fits after them.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from streams.chunking.structure import Section, markdown_sections, plain_sections, sentences
from streams.chunking.tokenizer import TokenCounter, Tokens, fit_prefix, safe_cut

log = logging.getLogger(__name__)

#: the smallest chunk limit accepted, in tokens
MIN_TOKENS = 16
#: a chunk has at most this many characters per token of its limit (long words
#: the tokenizer reads as one [UNK] would otherwise make huge chunks)
MAX_CHARS_PER_TOKEN = 16
#: content types chunked as Markdown (the HTML reader writes headings as ``#`` lines)
MARKDOWN_TYPES = frozenset({"text/markdown", "text/x-markdown", "text/html"})

_WORD = re.compile(r"\S+")
_LINE = re.compile(r"[^\n]+")
_clamp_logged: set[tuple[str, int, int]] = set()


@dataclass(frozen=True, slots=True)
class TextChunk:
    """``text == document[char_start:char_end]``; ``n_tokens`` excludes the special tokens."""

    seq: int
    text: str
    char_start: int
    char_end: int
    heading_path: tuple[str, ...] = ()
    n_tokens: int = 0


@dataclass(slots=True)
class _Unit:
    start: int
    end: int
    n_tokens: int
    block: int
    joins: bool = True  # the boundary to the next unit lies between words: tokens add up


def resolve_limits(
    counter: TokenCounter, max_tokens: int | None, overlap_tokens: int
) -> tuple[int, int]:
    """``(max_tokens, overlap_tokens)`` checked, and clamped to what the model reads."""
    limit = counter.max_tokens
    wanted = limit if max_tokens is None else max_tokens
    if wanted < MIN_TOKENS:
        raise ValueError(f"max_tokens must be at least {MIN_TOKENS}, got {wanted}")
    if not 0 <= overlap_tokens < wanted:
        raise ValueError(f"overlap_tokens must be in [0, max_tokens), got {overlap_tokens}")
    if wanted <= limit:
        return wanted, overlap_tokens
    overlap = overlap_tokens if overlap_tokens < limit // 2 else limit // 4
    key = (counter.name, wanted, overlap_tokens)
    if key not in _clamp_logged:
        _clamp_logged.add(key)
        log.warning(
            "chunks of %d tokens (overlap %d) would be truncated by %s, which reads %d tokens "
            "plus %d special ones: chunking with %d (overlap %d)",
            wanted, overlap_tokens, counter.name, limit, counter.special_tokens, limit, overlap,
        )  # fmt: skip
    return limit, overlap


def chunk_document(
    text: str,
    *,
    counter: TokenCounter,
    content_type: str = "text/plain",
    max_tokens: int | None = None,
    overlap_tokens: int = 0,
) -> list[TextChunk]:
    """Chunks of ``text`` of at most ``max_tokens`` tokens (default and ceiling: the model's)."""
    max_tokens, overlap_tokens = resolve_limits(counter, max_tokens, overlap_tokens)
    if not text or text.isspace():
        return []
    kind = content_type.partition(";")[0].strip().lower()
    sections = markdown_sections(text) if kind in MARKDOWN_TYPES else plain_sections(text)
    chunker = _Chunker(text, counter, max_tokens, overlap_tokens)
    chunks: list[TextChunk] = []
    for section in sections:
        for start, end, n in chunker.pack(chunker.units(section)):
            chunks.append(
                TextChunk(len(chunks), text[start:end], start, end, section.heading_path, n)
            )
    return chunks


class _Chunker:
    def __init__(self, text: str, counter: TokenCounter, max_tokens: int, overlap: int) -> None:
        self.text = text
        self.counter = counter
        self.max_tokens = max_tokens
        self.max_chars = max_tokens * MAX_CHARS_PER_TOKEN
        self.overlap = overlap
        self.tokens: Tokens = counter.tokens(text)

    # --- units ----------------------------------------------------------------

    def units(self, section: Section) -> list[_Unit]:
        units: list[_Unit] = []
        for i, block in enumerate(section.blocks):
            if block.kind == "paragraph":
                for start, end in sentences(self.text, block.start, block.end):
                    self._add(units, start, end, i)
            elif block.kind == "code" and not self._fits(block.start, block.end):
                for line in _LINE.finditer(self.text, block.start, block.end):
                    end = line.end()
                    while end > line.start() and self.text[end - 1].isspace():
                        end -= 1
                    if end > line.start():
                        self._add(units, line.start(), end, i)  # indentation kept
            else:
                self._add(units, block.start, block.end, i)
        return units

    def _fits(self, start: int, end: int) -> bool:
        return end - start <= self.max_chars and self.tokens.count(start, end) <= self.max_tokens

    def _add(self, units: list[_Unit], start: int, end: int, block: int) -> None:
        """A span as one unit, else its words, else its tokenizer words, else hard cuts."""
        if self._fits(start, end):
            units.append(_Unit(start, end, self.tokens.count(start, end), block))
            return
        words = [(m.start(), m.end()) for m in _WORD.finditer(self.text, start, end)]
        if len(words) > 1:
            for word_start, word_end in words:
                self._add(units, word_start, word_end, block)
            return
        for piece_start, piece_end in self._word_pieces(start, end):
            if self._fits(piece_start, piece_end):
                units.append(
                    _Unit(piece_start, piece_end, self.tokens.count(piece_start, piece_end), block)
                )
            else:
                self._hard_cut(units, piece_start, piece_end, block)

    def _word_pieces(self, start: int, end: int) -> list[tuple[int, int]]:
        """``[start, end)`` (no whitespace) cut where the tokenizer starts a new word."""
        t = self.tokens
        cuts = [start]
        reach = start
        first = t.first_at(start)
        for k in range(first, t.first_at(end)):
            s = t.starts[k]
            if k > first and t.words[k] is not None and t.words[k] != t.words[k - 1]:
                if reach <= s and s > cuts[-1]:
                    cuts.append(s)
            reach = max(reach, t.ends[k])
        cuts.append(end)
        return list(zip(cuts, cuts[1:], strict=False))

    def _hard_cut(self, units: list[_Unit], start: int, end: int, block: int) -> None:
        """A word over the limit cut at token boundaries; the pieces do not join."""
        pos = start
        while pos < end:
            limit = min(end, pos + self.max_chars)
            limit = safe_cut(self.text, limit) if limit < end else limit
            if limit <= pos:
                limit = min(end, pos + self.max_chars)
            length, n = fit_prefix(self.counter, self.text[pos:limit], self.max_tokens)
            units.append(_Unit(pos, pos + length, n, block, joins=pos + length == end))
            pos += length

    # --- packing --------------------------------------------------------------

    def pack(self, units: list[_Unit]) -> list[tuple[int, int, int]]:
        """``(start, end, n_tokens)`` of each chunk of one section."""
        block_tokens: dict[int, int] = {}
        for u in units:
            block_tokens[u.block] = block_tokens.get(u.block, 0) + u.n_tokens
        out: list[tuple[int, int, int]] = []
        i = fresh = 0  # the chunk's first unit; its first unit not in the previous chunk
        while i < len(units):
            j, total = i, units[i].n_tokens
            while j + 1 < len(units) and units[j].joins:
                nxt = units[j + 1]
                if (
                    total + nxt.n_tokens > self.max_tokens
                    or nxt.end - units[i].start > self.max_chars
                ):
                    break
                if (
                    j >= fresh
                    and nxt.block != units[j].block
                    and 2 * total >= self.max_tokens
                    and total + block_tokens[nxt.block] > self.max_tokens
                ):
                    break  # the next paragraph would not fit whole: it starts the next chunk
                total += nxt.n_tokens
                j += 1
            if not self.counter.exact_spans:
                i, j, total = self._recount(units, i, j, fresh)
            out.append((units[i].start, units[j].end, total))
            first, i = i, j + 1
            fresh = i
            if i < len(units) and self.overlap and units[j].joins:
                carried = 0  # tail units of this chunk that fit in the overlap...
                while i - 1 > first and carried + units[i - 1].n_tokens <= self.overlap:
                    i -= 1
                    carried += units[i].n_tokens
                nxt = units[fresh]  # ...as long as the first new unit still fits after them
                while i < fresh and (
                    carried + nxt.n_tokens > self.max_tokens
                    or nxt.end - units[i].start > self.max_chars
                ):
                    carried -= units[i].n_tokens
                    i += 1
        return out

    def _recount(self, units: list[_Unit], i: int, j: int, fresh: int) -> tuple[int, int, int]:
        """Count ``units[i..j]`` for real; shrink (overlap first) or cut until it fits."""
        while True:
            n = self.counter.count(self.text[units[i].start : units[j].end])
            if n <= self.max_tokens:
                return i, j, n
            if i < fresh and i < j:
                i += 1
            elif j > i:
                j -= 1
            else:
                u = units[i]
                length, n = fit_prefix(self.counter, self.text[u.start : u.end], self.max_tokens)
                rest = head_end = u.start + length
                while self.text[head_end - 1].isspace():
                    head_end -= 1
                head = _Unit(u.start, head_end, n, u.block, joins=False)
                while rest < u.end and self.text[rest].isspace():
                    rest += 1
                tail = _Unit(
                    rest, u.end, self.counter.count(self.text[rest : u.end]), u.block, u.joins
                )
                units[i : i + 1] = [head, tail]
                return i, i, n
