"""Answer generation behind one Protocol; the default is extractive and offline.

:class:`ExtractiveGenerator` picks the sentences of the best retrieved chunks that
share the most terms with the question (Korean morphemes and English stems, the
analysis of keyword search: streams/keywords.py), cites each as ``[n]`` (n = position
in the sources list) and streams the answer a few words at a time. A paraphrased
question shares no term with its answer; then the lead sentences of the chunk closest
in meaning are quoted, but only when the question and that chunk are similar enough
(``min_similarity``, the cosine of their vectors). Otherwise it says plainly that
nothing relevant was found. Deterministic, offline.
"""

from __future__ import annotations

import math
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from streams.keywords import analyse
from streams.passages import Passage

NOTHING_FOUND = "I could not find anything relevant to that question in the indexed documents."

_SENTENCE = re.compile(r"(?<=[.!?。！？])(?:\s+|(?=[\uac00-\ud7a3]))|\n+")
#: question words: they match no answer (as stems, like the terms they are compared with)
_QUESTION_WORDS = frozenset(analyse(
    "from has have how i it its were what when where which who why do does did can you your"
))


class Generator(Protocol):
    name: str

    def generate(self, question: str, passages: Sequence[Passage]) -> AsyncIterator[str]:
        """Yield answer text deltas; citations ``[n]`` refer to ``passages[n-1]``."""
        ...


def terms(text: str) -> set[str]:
    """The keyword terms of a text (morphemes, stems), without question words."""
    return set(analyse(text)) - _QUESTION_WORDS


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
    overlap: int


class ExtractiveGenerator:
    """Cites the most relevant sentences of the retrieved passages."""

    name = "extractive"

    def __init__(self, max_sentences: int = 3, min_overlap: int = 1, words_per_delta: int = 8,
                 *, max_passages: int = 5, min_similarity: float = 0.0) -> None:
        self.max_sentences = max_sentences
        self.min_overlap = min_overlap
        self.max_passages = max_passages  # answers come from the best-ranked chunks only
        self.min_similarity = min_similarity  # 0: never quote by meaning alone
        # the answerer joins the deltas that come within AICHAT_ANSWER_TOKEN_INTERVAL_MS into
        # one token event (streams/deltas.py); a few words per delta is what streams with 0
        self.words_per_delta = words_per_delta

    def select(self, question: str, passages: Sequence[Passage]) -> list[tuple[int, str]]:
        """(1-based citation, sentence) pairs, most relevant first, then in reading order."""
        passages = passages[: self.max_passages]
        wanted = terms(question)
        if not wanted:
            return self.closest_in_meaning(passages)
        candidates: list[_Candidate] = []
        order = 0
        for index, passage in enumerate(passages):
            rank_weight = 1.0 / math.log2(index + 2)  # earlier passages are better ranked
            for sentence in split_sentences(passage.text):
                sentence_terms = terms(sentence)
                overlap = len(wanted & sentence_terms)
                order += 1
                if overlap >= self.min_overlap:
                    # prefer dense, on-topic sentences over long ones that mention everything
                    density = overlap / math.sqrt(len(sentence_terms) + 1)
                    candidates.append(_Candidate(overlap + density + rank_weight, index, order,
                                                 sentence, overlap))
        if not candidates:
            return self.closest_in_meaning(passages)
        # only sentences about as on-topic as the best one ("per day" is not about vacation days)
        most = max(c.overlap for c in candidates)
        candidates = [c for c in candidates if 2 * c.overlap >= most]
        best = sorted(candidates, key=lambda c: (-c.score, c.order))[: self.max_sentences]
        best.sort(key=lambda c: (c.passage_index, c.order))
        return [(c.passage_index + 1, c.sentence) for c in best]

    def closest_in_meaning(self, passages: Sequence[Passage]) -> list[tuple[int, str]]:
        """No sentence shares a term with the question: the lead of the chunk most similar
        to it, if similar enough; else nothing (an honest "not found")."""
        scored = [(p.similarity, i) for i, p in enumerate(passages) if p.similarity is not None]
        if self.min_similarity <= 0 or not scored:
            return []
        similarity, index = max(scored)
        if similarity < self.min_similarity:
            return []
        return [(index + 1, s) for s in split_sentences(passages[index].text)[: self.max_sentences]]

    async def generate(self, question: str, passages: Sequence[Passage]) -> AsyncIterator[str]:
        picked = self.select(question, passages)
        if not picked:
            yield NOTHING_FOUND
            return
        answer = " ".join(f"{sentence} [{cite}]" for cite, sentence in picked)
        words = re.findall(r"\S+\s*", answer)
        for i in range(0, len(words), self.words_per_delta):
            yield "".join(words[i : i + self.words_per_delta])
