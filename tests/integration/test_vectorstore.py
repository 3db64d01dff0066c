"""WeaviateStore against the real Weaviate: idempotent upserts, hybrid search, tenant filter."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import numpy as np
import pytest

from infra.weaviate.provision import ensure_collections
from schemas.codec import pack_vector
from schemas.events import EmbeddedChunk, chunk_uuid
from streams.config import WorkerSettings
from streams.endpoints import weaviate_http_options
from streams.errors import EffectFailed, ModelMismatch, is_retriable
from streams.vectorstore import ChunkVector, WeaviateStore


def _item(doc_id: str, text: str, vector: np.ndarray, *, tenant: str = "default", seq: int = 0) -> ChunkVector:
    chunk = EmbeddedChunk(
        chunk_id=chunk_uuid(tenant, doc_id, 1, seq), doc_id=doc_id, tenant=tenant, version=1, seq=seq,
        n_chunks=1, text=text, char_start=0, char_end=len(text), title=doc_id,
        vector=pack_vector(vector), dim=len(vector), model="test",
    )
    return ChunkVector(chunk, vector.tolist())


def _unit(*values: float) -> np.ndarray:
    v = np.zeros(8, dtype=np.float32)
    v[: len(values)] = values
    return v / np.linalg.norm(v)


@pytest.fixture
async def store(services: WorkerSettings, unique: str) -> AsyncIterator[WeaviateStore]:
    settings = services.model_copy(update={"weaviate_collection": f"Vs{unique}"})
    await ensure_collections(settings)
    s = WeaviateStore(settings)
    await s.start()
    yield s
    await s.stop()
    async with httpx.AsyncClient(**weaviate_http_options(settings)) as http:
        for collection in (settings.weaviate_collection, f"{settings.weaviate_collection}Docs"):
            await http.delete(f"/v1/schema/{collection}")


async def test_replayed_upserts_leave_one_object_per_chunk(store: WeaviateStore) -> None:
    items = [_item("a", "alpha apples", _unit(1)), _item("b", "beta bananas", _unit(0, 1))]
    await store.upsert(items)
    await store.upsert(items)  # a replay of the same events
    assert await store.count() == 2


async def test_hybrid_search_finds_by_keyword_and_by_vector(store: WeaviateStore) -> None:
    await store.upsert([_item("a", "alpha apples", _unit(1)), _item("b", "beta bananas", _unit(0, 1))])
    by_keyword = await store.hybrid_search("bananas", _unit(1).tolist(), tenant="default", top_k=2, alpha=0.0)
    assert by_keyword[0].doc_id == "b"
    by_vector = await store.hybrid_search("zzz", _unit(1).tolist(), tenant="default", top_k=2, alpha=1.0)
    assert by_vector[0].doc_id == "a"


async def test_a_tenant_never_sees_another_tenants_chunks(store: WeaviateStore) -> None:
    await store.upsert([
        _item("mine", "shared words here", _unit(1), tenant="t1"),
        _item("theirs", "shared words here", _unit(1), tenant="t2"),
    ])
    hits = await store.hybrid_search("shared words", _unit(1).tolist(), tenant="t1", top_k=10, alpha=0.5)
    assert [h.doc_id for h in hits] == ["mine"]


async def test_filters_are_values_not_syntax(store: WeaviateStore) -> None:
    await store.upsert([_item("a", "alpha", _unit(1))])
    hits = await store.hybrid_search(
        "alpha", _unit(1).tolist(), tenant="default", top_k=5, alpha=0.5, filters={"doc_id": '" OR 1=1 }'}
    )
    assert hits == []
    # a metadata key no document has matches nothing (it is not an error, nor ignored)
    assert await store.hybrid_search("alpha", _unit(1).tolist(), tenant="default", top_k=5, alpha=0.5,
                                     filters={"secret": "x"}) == []


async def test_metadata_filters_match_exact_values(store: WeaviateStore) -> None:
    tricky = '" OR 1=1 } *:*'
    a = _item("a", "shared text", _unit(1))
    b = _item("b", "shared text", _unit(1))
    c = _item("c", "shared text", _unit(1))
    a = ChunkVector(a.chunk.model_copy(update={"metadata": {"category": "public", "year": 2024}}), a.vector)
    b = ChunkVector(b.chunk.model_copy(update={"metadata": {"category": tricky}}), b.vector)
    c = ChunkVector(c.chunk.model_copy(update={"metadata": {"category": "category:secret"}}), c.vector)
    await store.upsert([a, b, c])

    async def docs(**filters: object) -> list[str]:
        hits = await store.hybrid_search("shared", _unit(1).tolist(), tenant="default", top_k=10,
                                         alpha=0.5, filters=filters)  # type: ignore[arg-type]
        return sorted(h.doc_id for h in hits)

    assert await docs(category="public") == ["a"]
    assert await docs(category=tricky) == ["b"]
    assert await docs(category="category:secret") == ["c"]
    assert await docs(category="secret") == []
    assert await docs(year=2024) == ["a"]


async def test_a_refused_object_fails_the_batch_loudly(store: WeaviateStore) -> None:
    good = _item("a", "alpha", _unit(1))
    bad = _item("b", "beta", np.ones(3, dtype=np.float32))  # wrong vector length for the collection
    await store.upsert([good])
    with pytest.raises(EffectFailed, match="1 of 2 objects failed"):
        await store.upsert([_item("c", "gamma", _unit(0, 1)), bad])


async def test_a_lone_object_weaviate_refuses_is_not_an_outage(store: WeaviateStore) -> None:
    """Every object of the request refused (a vector of the wrong length): the client's
    "all failed" error must say "refused" (dead-letter), not "unavailable" (retry forever)."""
    await store.upsert([_item("good", "eight dimensions", _unit(1))])
    short = np.ones(4, dtype=np.float32) / 2
    with pytest.raises(EffectFailed, match="length") as refused:
        await store.upsert([_item("bad", "four dimensions", short)])
    assert not is_retriable(refused.value)
    assert "default/bad" in str(refused.value)
    # in a batch with valid objects, the refusal is named too, and not retried
    with pytest.raises(EffectFailed, match="default/bad"):
        await store.upsert([_item("fine", "ok", _unit(0, 1)), _item("bad", "four", short)])


async def test_a_delete_removes_only_its_own_tenants_document(store: WeaviateStore) -> None:
    await store.upsert([_item("1", "acme text", _unit(1), tenant="acme"),
                        _item("1", "globex text", _unit(1), tenant="globex")])
    assert await store.count_chunks("acme", "1") == await store.count_chunks("globex", "1") == 1
    assert await store.delete_chunks("globex", "1", versions_up_to=1) == 1
    assert await store.count_chunks("acme", "1") == 1
    assert await store.count_chunks("globex", "1") == 0


async def test_korean_and_english_keywords_match_across_inflections(store: WeaviateStore) -> None:
    """BM25 over the pre-analysed keywords: 캘린더에 finds 캘린더, "carried" finds "carry"."""
    await store.upsert([
        _item("ko", "원격 근무일은 팀 캘린더에 미리 등록해야 합니다.", _unit(1)),
        _item("en", "Unused days can be carried over into the next year.", _unit(0, 1)),
        _item("other", "전혀 관계없는 문서입니다. Nothing related here.", _unit(0, 0, 1)),
    ])
    ko = await store.hybrid_search("캘린더는 어디서 등록하나요?", _unit(0, 0, 0, 1).tolist(),
                                   tenant="default", top_k=3, alpha=0.0)
    assert ko[0].doc_id == "ko"
    en = await store.hybrid_search("can I carry days over", _unit(0, 0, 0, 1).tolist(),
                                   tenant="default", top_k=3, alpha=0.0)
    assert en[0].doc_id == "en"


async def test_vectors_of_another_model_are_refused(store: WeaviateStore) -> None:
    await store.upsert([_item("a", "first model", _unit(1))])
    other = _item("b", "second model", _unit(0, 1))
    other = ChunkVector(other.chunk.model_copy(update={"model": "another-model"}), other.vector)
    with pytest.raises(ModelMismatch, match="one model per collection"):
        await store.upsert([other])
    assert await store.index_model() == "test"
