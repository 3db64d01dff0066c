"""Answer generation behind one Protocol; the default is extractive and offline.

:class:`ExtractiveGenerator` picks the sentences of the retrieved chunks that
share the most terms with the question, cites each as ``[n]`` (n = position in
the sources list) and streams the answer word by word. It is deterministic and
says plainly when nothing relevant was found.
"""

from __future__ import annotations

import math
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol

NOTHING_FOUND = "I could not find anything relevant to that question in the indexed documents."

_WORD = re.compile(r"[0-9A-Za-z]+|[\uac00-\ud7a3]+|[\u3040-\u30ff\u4e00-\u9fff]")
_SENTENCE = re.compile(r"(?<=[.!?。！？])(?:\s+|(?=[\uac00-\ud7a3]))|\n+")
_STOPWORDS = frozenset(
    "a an and are as at be by for from has have how i in is it its of on or that the this to "
    "was were what when where which who why will with do does did can you your".split()
)


@dataclass(frozen=True, slots=True)
class Passage:
    """A retrieved chunk, as the generator sees it."""

    doc_id: str
    chunk_id: str
    title: str
    text: str
    score: float
    source_uri: str = ""


class Generator(Protocol):
    name: str

    def generate(self, question: str, passages: Sequence[Passage]) -> AsyncIterator[str]:
        """Yield answer text deltas; citations ``[n]`` refer to ``passages[n-1]``."""
        ...


def terms(text: str) -> set[str]:
    """Lower-cased words; Hangul words also as character bigrams (no morphology needed)."""
    out: set[str] = set()
    for word in _WORD.findall(text.lower()):
        if word in _STOPWORDS:
            continue
        out.add(word)
        if "\uac00" <= word[0] <= "\ud7a3" and len(word) > 2:
            out.update(word[i : i + 2] for i in range(len(word) - 1))
    return out


def split_sentences(text: str) -> list[str]:
    """Sentences of a passage; Markdown heading lines are structure, not answers."""
    parts = (s.strip() for s in _SENTENCE.split(text))
    return [s for s in parts if s and not s.startswith("#")]


@dataclass(frozen=True, slots=True)
class _Candidate:
    score: float
    passage_index: int
    order: int
    sentence: str


class ExtractiveGenerator:
    """Cites the most relevant sentences of the retrieved passages."""

    name = "extractive"

    def __init__(self, max_sentences: int = 3, min_overlap: int = 1, words_per_delta: int = 8) -> None:
        self.max_sentences = max_sentences
        self.min_overlap = min_overlap
        # each delta is one answer event through Kafka and one websocket frame: a few words
        # per delta keeps the text streaming while costing an eighth of the events
        self.words_per_delta = words_per_delta

    def select(self, question: str, passages: Sequence[Passage]) -> list[tuple[int, str]]:
        """(1-based citation, sentence) pairs, most relevant first, then in reading order."""
        wanted = terms(question)
        if not wanted:
            return []
        candidates: list[_Candidate] = []
        order = 0
        for index, passage in enumerate(passages):
            rank_weight = 1.0 / math.log2(index + 2)  # earlier passages are better ranked
            for sentence in split_sentences(passage.text):
                overlap = len(wanted & terms(sentence))
                order += 1
                if overlap >= self.min_overlap:
                    # prefer dense, on-topic sentences over long ones that mention everything
                    density = overlap / math.sqrt(len(terms(sentence)) + 1)
                    candidates.append(_Candidate(overlap + density + rank_weight, index, order, sentence))
        best = sorted(candidates, key=lambda c: (-c.score, c.order))[: self.max_sentences]
        best.sort(key=lambda c: (c.passage_index, c.order))
        return [(c.passage_index + 1, c.sentence) for c in best]

    async def generate(self, question: str, passages: Sequence[Passage]) -> AsyncIterator[str]:
        picked = self.select(question, passages)
        if not picked:
            yield NOTHING_FOUND
            return
        answer = " ".join(f"{sentence} [{cite}]" for cite, sentence in picked)
        words = re.findall(r"\S+\s*", answer)
        for i in range(0, len(words), self.words_per_delta):
            yield "".join(words[i : i + self.words_per_delta])
