from __future__ import annotations

import numpy as np
import pytest

from schemas.events import QueryEvent, ReplyRoute, utc_now
from streams.config import RetrievalSettings
from streams.generation import Passage
from streams.retrieval import Retriever, collapse_per_document, variant_alpha


def p(doc: str, score: float, chunk: str = "") -> Passage:
    return Passage(doc_id=doc, chunk_id=chunk or f"{doc}-{score}", title=doc, text="t", score=score)


def test_collapse_keeps_the_best_chunk_of_each_document() -> None:
    hits = [p("long", 0.9, "a"), p("long", 0.8, "b"), p("long", 0.7, "c"), p("other", 0.6), p("third", 0.5)]
    assert [(h.doc_id, h.chunk_id) for h in collapse_per_document(hits, 2)] == [("long", "a"), ("other", "other-0.6")]


@pytest.mark.parametrize(
    ("variant", "alpha"),
    [("default", 0.4), ("hybrid", 0.4), ("dense", 1.0), ("bm25", 0.0), ("alpha=0.25", 0.25),
     ("alpha=1", 1.0), ("alpha=7", 0.4), ("nonsense", 0.4)],
)
def test_variants_choose_the_weight(variant: str, alpha: float) -> None:
    assert variant_alpha(variant, 0.4) == alpha


class RecordingStore:
    def __init__(self) -> None:
        self.calls: list[dict[str, object]] = []

    async def upsert(self, items: object) -> None:  # pragma: no cover - not used
        raise AssertionError

    async def hybrid_search(self, text: str, vector: list[float], **kw: object) -> list[Passage]:
        self.calls.append({"text": text, "vector": vector, **kw})
        return [p("a", 0.9), p("a", 0.8), p("b", 0.5)]


class FixedEmbedder:
    model_name, dim = "fixed", 3

    def __init__(self) -> None:
        self.calls = 0

    async def embed(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        return np.ones((len(texts), 3), dtype=np.float32)


def query(**kw: object) -> QueryEvent:
    return QueryEvent(text="q", reply_to=ReplyRoute(topic="answers", partition=0), deadline=utc_now(), **kw)


async def test_retriever_bounds_top_k_and_passes_filters_as_values() -> None:
    store, embedder = RecordingStore(), FixedEmbedder()
    retriever = Retriever(embedder, store, RetrievalSettings(top_k_max=5))
    found = await retriever.retrieve(query(top_k=50, filters={"category": "x"}, tenant="t1"))
    assert [x.doc_id for x in found.passages] == ["a", "b"]
    call = store.calls[0]
    assert call["top_k"] == 5 * 4 and call["tenant"] == "t1" and call["filters"] == {"category": "x"}


async def test_bm25_variant_skips_the_model() -> None:
    store, embedder = RecordingStore(), FixedEmbedder()
    found = await Retriever(embedder, store, RetrievalSettings()).retrieve(query(variant="bm25"))
    assert embedder.calls == 0 and found.alpha == 0.0
