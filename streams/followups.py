"""How a question of a conversation is searched: the search text and vector of a follow-up.

"Can I carry them over?" after "How many vacation days do I get?" finds nothing on its
own. Two ways to use the earlier turns:

* **offline** (the default, no model call): the keyword half searches the question and
  the earlier questions, each repeated by its weight (``decay ** n`` for the n-th earlier
  one, relative to the oldest used: with decay 0.5 and two earlier questions, the
  question 4 times, the last one twice, the one before once; BM25 counts a repeated
  query term again); the vector half searches the weighted sum of the questions'
  vectors, normalised. The question's own words and meaning dominate, so a question
  that changes the subject still finds its own documents.
* **rewrite** (with an OpenAI-compatible generator, streams/rewrite.py): the model
  writes a standalone question from the conversation, and that is searched alone.

:func:`plan_search` gives the :class:`SearchPlan` the retriever runs; the plan's
:class:`~schemas.events.FollowUp` goes on the query's ``sources`` event.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from schemas.conversations import Turn
from schemas.events import FollowUp
from streams.embedding import Embedder

#: the most times one text is repeated in the keyword half
MAX_REPEAT = 4


@dataclass(frozen=True, slots=True)
class SearchPlan:
    """What to search: ``text`` for the keyword half, ``vector`` for the vector half (``None``:
    the embedding of ``text``); ``language_of`` picks the fusion weight."""

    text: str
    vector: list[float] | None = None
    language_of: str = ""
    followup: FollowUp | None = None


def earlier_questions(turns: Sequence[Turn], n: int) -> list[str]:
    """The last ``n`` questions, newest first (a turn's standalone rewrite when it had one)."""
    picked = [t.search_text or t.question for t in reversed(turns)]
    return picked[:n]


def weights(n_earlier: int, decay: float) -> list[float]:
    """The question's weight (1) and the earlier ones' (``decay ** k``), newest first."""
    return [decay**k for k in range(n_earlier + 1)]


def expanded_text(question: str, earlier: Sequence[str], decay: float) -> str:
    """The keyword half's text: every text repeated by its weight relative to the smallest."""
    ws = weights(len(earlier), decay)
    smallest = ws[-1]
    parts: list[str] = []
    for text, w in zip([question, *earlier], ws, strict=True):
        parts += [text] * max(1, min(MAX_REPEAT, round(w / smallest)))
    return "\n".join(parts)


def blend(vectors: np.ndarray, ws: Sequence[float]) -> list[float]:
    """The weighted sum of L2-normalised vectors, normalised again."""
    mixed = np.asarray(ws, dtype=np.float32) @ vectors
    norm = float(np.linalg.norm(mixed))
    return (mixed / norm if norm > 0 else mixed).astype(np.float32).tolist()


async def offline_plan(question: str, turns: Sequence[Turn], embedder: Embedder | None, *,
                       n_turns: int, decay: float) -> SearchPlan:
    """The offline method; with no ``embedder`` (a BM25-only search) no vector is made."""
    earlier = earlier_questions(turns, n_turns)
    if not earlier:
        return SearchPlan(text=question, language_of=question)
    vector = None
    if embedder is not None:
        texts = [question, *earlier]
        vectors = await asyncio.gather(*(embedder.embed_query(t) for t in texts))
        vector = blend(np.stack(vectors), weights(len(earlier), decay))
    return SearchPlan(text=expanded_text(question, earlier, decay), vector=vector,
                      language_of=question,
                      followup=FollowUp(method="offline", turns=len(earlier)))


def rewrite_plan(question: str, rewrite: str, turns_used: int) -> SearchPlan:
    """The model's standalone question, searched on its own."""
    return SearchPlan(text=rewrite, language_of=rewrite,
                      followup=FollowUp(method="rewrite", turns=turns_used, rewrite=rewrite))
