"""A document's structure: sections under a heading path, blocks, sentences.

Everything is a span ``[start, end)`` of the original text, nothing is copied or
rewritten. Markdown (also what the HTML reader makes: headings as ``#`` lines):

* ATX headings ``#`` … ``######`` and setext headings (a one-line paragraph
  underlined with ``===`` or ``---``) open a section; its heading path is the
  titles of the open headings above it, outermost first.
* Blocks are paragraphs (separated by blank lines), headings and code fences
  (````` or ``~~~``, kept together; nothing inside a fence is a heading). A YAML
  front matter is a code block; thematic breaks (``---``, ``***``) separate.
* A section that holds nothing but its heading joins the section after it when
  that one is nested under it, so a title is never a chunk on its own.

Plain text is one section of paragraphs. :func:`sentences` splits a paragraph.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

BlockKind = Literal["heading", "paragraph", "code"]


@dataclass(frozen=True, slots=True)
class Block:
    start: int
    end: int
    kind: BlockKind


@dataclass(slots=True)
class Section:
    heading_path: tuple[str, ...]
    blocks: list[Block] = field(default_factory=list)

    @property
    def has_body(self) -> bool:
        return any(b.kind != "heading" for b in self.blocks)


_ATX = re.compile(r" {0,3}(#{1,6})(?:[ \t]+(.*?))??(?:[ \t]+#+)?[ \t]*$")
_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})")
_SETEXT = re.compile(r" {0,3}(=+|-{2,})[ \t]*$")
_THEMATIC = re.compile(r" {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$")
_NOT_SETEXT = re.compile(r"\s*(?:[-*+>|]|\d{1,9}[.)])(?:\s|$)")  # list, quote, table lines
_FRONT_MATTER = re.compile(r"---[ \t]*\r?\n.*?^(?:---|\.\.\.)[ \t]*$", re.DOTALL | re.MULTILINE)
_BLANK_LINES = re.compile(r"\n[ \t\r\f\v]*\n\s*")


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def plain_sections(text: str) -> list[Section]:
    """One section of paragraphs split at blank lines."""
    blocks = []
    pos = 0
    for match in _BLANK_LINES.finditer(text):
        blocks.append(_trim(text, pos, match.start()))
        pos = match.end()
    blocks.append(_trim(text, pos, len(text)))
    section = Section((), [Block(s, e, "paragraph") for s, e in blocks if e > s])
    return [section] if section.blocks else []


class _MarkdownParser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.sections: list[Section] = [Section(())]
        self.open: list[tuple[int, str]] = []  # (level, title) of the open headings
        self.para: tuple[int, int, int] | None = None  # start, end, lines

    def block(self, start: int, end: int, kind: BlockKind) -> None:
        start, end = _trim(self.text, start, end)
        if end > start:
            self.sections[-1].blocks.append(Block(start, end, kind))

    def flush(self) -> None:
        if self.para is not None:
            self.block(self.para[0], self.para[1], "paragraph")
            self.para = None

    def heading(self, level: int, title: str, start: int, end: int) -> None:
        self.flush()
        while self.open and self.open[-1][0] >= level:
            self.open.pop()
        title = " ".join(title.split())
        if title:
            self.open.append((level, title))
        self.sections.append(Section(tuple(t for _, t in self.open)))
        self.block(start, end, "heading")

    def parse(self) -> list[Section]:
        text = self.text
        pos = 0
        front = _FRONT_MATTER.match(text)
        if front:
            self.block(0, front.end(), "code")
            pos = front.end()
        fence: tuple[str, int] | None = None  # (char, length) of an open fence
        fence_start = 0
        while pos < len(text):
            nl = text.find("\n", pos)
            end = len(text) if nl < 0 else nl
            nxt = end + 1
            line = text[pos:end].rstrip("\r")
            if fence is not None:
                closing = _FENCE.match(line)
                if (
                    closing
                    and closing.group(1)[0] == fence[0]
                    and len(closing.group(1)) >= fence[1]
                ):
                    if not line[closing.end() :].strip():
                        self.block(fence_start, end, "code")
                        fence = None
            elif not line.strip():
                self.flush()
            elif m := _FENCE.match(line):
                self.flush()
                fence, fence_start = (m.group(1)[0], len(m.group(1))), pos
            elif m := _ATX.match(line):
                self.heading(len(m.group(1)), m.group(2) or "", pos, end)
            elif (m := _SETEXT.match(line)) and self.para is not None and self.para[2] == 1:
                first = text[self.para[0] : self.para[1]]
                if m.group(1)[0] == "=" or not _NOT_SETEXT.match(first):
                    start, self.para = self.para[0], None
                    self.heading(1 if m.group(1)[0] == "=" else 2, first, start, end)
                else:
                    self.para = (self.para[0], end, self.para[2] + 1)
            elif _THEMATIC.match(line):
                self.flush()
            elif self.para is None:
                self.para = (pos, end, 1)
            else:
                self.para = (self.para[0], end, self.para[2] + 1)
            pos = nxt
        if fence is not None:  # an unclosed fence runs to the end
            self.block(fence_start, len(text), "code")
        self.flush()
        return _join_bare_headings([s for s in self.sections if s.blocks])


def _join_bare_headings(sections: list[Section]) -> list[Section]:
    """Let a section with nothing but headings join the next one when nested under it."""
    out: list[Section] = []
    pending: Section | None = None
    for section in sections:
        if pending is not None:
            path = pending.heading_path
            if section.heading_path[: len(path)] == path:
                section = Section(section.heading_path, pending.blocks + section.blocks)
            else:
                out.append(pending)
            pending = None
        if section.has_body:
            out.append(section)
        else:
            pending = section
    if pending is not None:
        out.append(pending)
    return out


def markdown_sections(text: str) -> list[Section]:
    return _MarkdownParser(text).parse()


# --- sentences ----------------------------------------------------------------

#: Hangul, kana and CJK ideographs: scripts where a sentence may follow its
#: predecessor's period without a space
_CJK = "\u1100-\u11ff\u3040-\u30ff\u3130-\u318f\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_CLOSERS = "\"'\u201d\u2019)\\]\u300d\u300f\uff09"
_SENTENCE_BREAK = re.compile(
    rf"(?P<wide>[\u3002\uff01\uff1f]+[{_CLOSERS}]*)\s*"  # 。！？ end a sentence wherever they are
    rf"|(?P<end>[.!?\u2026]+[{_CLOSERS}]*)(?:\s+|(?=[{_CJK}]))"
    r"|\n"  # a line break
)
#: where a break can begin: each alternative above starts with one of these
_BREAK_START = re.compile(r"[.!?\u2026\u3002\uff01\uff1f\n]")
#: words that end in a period without ending the sentence (lower case, no period)
ABBREVIATIONS = frozenset(
    "e.g i.e etc vs cf al approx fig figs eq eqs no nos vol pp ca resp incl "
    "dr mr mrs ms prof st jr sr inc ltd co corp dept univ".split()
)


def _is_false_end(text: str, term_start: int, term: str, after: int, end: int) -> bool:
    """A period after an abbreviation or an initial, or followed by a lower-case word."""
    if after < end and "a" <= text[after] <= "z":
        return True
    if term != ".":
        return False
    word_start = term_start
    while (
        word_start > 0 and not text[word_start - 1].isspace() and text[word_start - 1] not in "(["
    ):
        word_start -= 1
    word = text[word_start:term_start]
    return word.lower() in ABBREVIATIONS or (len(word) == 1 and word.isupper())


def sentences(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """Sentence spans of ``text[start:end]``, trimmed, none empty.

    A sentence ends at ``. ! ? …`` (and closing quotes or brackets) followed by
    whitespace or directly by Hangul or CJK, at ``。！？``, and at a line break.
    ``3.5`` is no end; nor is a period after a common abbreviation or an initial,
    or one followed by a lower-case word.
    """
    spans: list[tuple[int, int]] = []
    pos = seen = start
    for candidate in _BREAK_START.finditer(text, start, end):
        if candidate.start() < seen:
            continue  # inside the previous break ("...")
        match = _SENTENCE_BREAK.match(text, candidate.start(), end)
        if match is None:
            continue
        seen = match.end()
        term = match.group("end")
        if term is not None and "\n" not in match.group(0):
            if _is_false_end(text, match.start(), term, match.end(), end):
                continue
        cut = match.start() + len(term or match.group("wide") or "")
        spans.append(_trim(text, pos, cut))
        pos = match.end()
    spans.append(_trim(text, pos, end))
    return [(s, e) for s, e in spans if e > s]
