"""Hybrid retrieval for one query: embed, search Weaviate, one result per document.

A query's ``variant`` picks the retrieval configuration (A/B tests, evaluation):
``default``/``hybrid`` use the weight of the question's language (``hybrid_alpha_ko``
for Korean, ``hybrid_alpha`` otherwise); ``dense`` is vector only; ``bm25`` is
keywords only; ``alpha=0.3`` sets the weight explicitly. Unknown variants use the
default and say so in the log.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

from schemas.events import QueryEvent
from streams.config import RetrievalSettings
from streams.embedding import Embedder
from streams.errors import ModelMismatch
from streams.followups import SearchPlan
from streams.keywords import language
from streams.metrics import EMBED_SECONDS, SEARCH_SECONDS
from streams.passages import Passage
from streams.vectorstore import VectorStore

log = logging.getLogger(__name__)

#: chunks fetched per wanted document, so that collapsing still leaves top_k documents
CANDIDATES_PER_RESULT = 4
_ALPHA = re.compile(r"^alpha=(0(\.\d+)?|1(\.0+)?)$")
#: Weaviate's fusions of the keyword and vector rankings: scores rescaled to [0, 1] and
#: summed with the weights, or reciprocal ranks summed
FUSIONS = ("relative_score", "ranked")


def default_alpha(text: str, settings: RetrievalSettings) -> float:
    """The fusion weight for this question's language (streams/keywords.py)."""
    return settings.hybrid_alpha_ko if language(text) == "ko" else settings.hybrid_alpha


def variant_fusion(variant: str, default: str) -> tuple[str, str]:
    """(fusion, the rest of the variant): ``ranked:alpha=0.5`` → ("ranked", "alpha=0.5")."""
    for fusion in FUSIONS:
        if variant == fusion:
            return fusion, "default"
        if variant.startswith(fusion + ":"):
            return fusion, variant[len(fusion) + 1:]
    return default, variant


def variant_alpha(variant: str, default: float) -> float:
    if variant in ("default", "hybrid", ""):
        return default
    if variant == "dense":
        return 1.0
    if variant == "bm25":
        return 0.0
    if match := _ALPHA.match(variant):
        return float(match.group(1))
    log.warning("unknown retrieval variant %r: using the default", variant)
    return default


def collapse_per_document(passages: Sequence[Passage], top_k: int) -> list[Passage]:
    """Best chunk of each document, in score order: one long document cannot crowd out the rest."""
    seen: set[str] = set()
    out: list[Passage] = []
    for passage in sorted(passages, key=lambda p: -p.score):
        if passage.doc_id not in seen:
            seen.add(passage.doc_id)
            out.append(passage)
            if len(out) == top_k:
                break
    return out


@dataclass(frozen=True, slots=True)
class Retrieved:
    passages: list[Passage]
    alpha: float
    embed_ms: float
    search_ms: float


class Retriever:
    def __init__(self, embedder: Embedder, store: VectorStore, settings: RetrievalSettings) -> None:
        self.embedder, self.store, self.settings = embedder, store, settings

    async def check_model(self) -> None:
        """Refuse to search an index whose vectors come from another model than ours. Asked
        on every query: the store keeps the answer and reads it again now and then, since an
        alias may point at another collection (``aichat reindex switch``)."""
        held = await self.store.index_model()
        if held is not None and held != self.embedder.model_name:
            raise ModelMismatch(
                f"the index holds vectors of {held or 'an unrecorded model'!r} but this answerer "
                f"embeds questions with {self.embedder.model_name!r}: set AICHAT_EMBED_MODEL to "
                "the index's model, or re-index (aichat rebuild)"
            )

    async def retrieve(self, query: QueryEvent, plan: SearchPlan | None = None) -> Retrieved:
        """Search for ``query``; a follow-up's ``plan`` (streams/followups.py) gives the text
        and vector to search instead of the question's."""
        await self.check_model()
        text = plan.text if plan is not None else query.text
        top_k = max(1, min(query.top_k, self.settings.top_k_max))
        fusion, variant = variant_fusion(query.variant, self.settings.hybrid_fusion)
        language_of = (plan.language_of or text) if plan is not None else text
        alpha = variant_alpha(variant, default_alpha(language_of, self.settings))
        started = time.perf_counter()
        vector: list[float] = [0.0] * max(self.embedder.dim, 1)
        if alpha > 0 and plan is not None and plan.vector is not None:
            vector = plan.vector
        elif alpha > 0:  # BM25 alone needs no query vector
            with EMBED_SECONDS.labels("answerer").time():
                vector = (await self.embedder.embed_query(text)).tolist()
        embedded = time.perf_counter()
        with SEARCH_SECONDS.time():
            candidates = await self.store.hybrid_search(
                text, vector, tenant=query.tenant, top_k=top_k * CANDIDATES_PER_RESULT,
                alpha=alpha, filters=query.filters, fusion=fusion,
            )
        done = time.perf_counter()
        return Retrieved(
            passages=collapse_per_document(candidates, top_k),
            alpha=alpha,
            embed_ms=round((embedded - started) * 1000, 2),
            search_ms=round((done - embedded) * 1000, 2),
        )
