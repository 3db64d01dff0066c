"""The store behind a serving alias, and a generation's writer check, on the real Weaviate.

An answerer's store keeps its client while ``aichat reindex`` moves the alias: the index's
model is read again (a switch to a generation of another model is noticed, not searched
with the wrong vectors), and a search in the moment a real collection is replaced by the
alias waits for it instead of failing. An ingest worker refuses to write through an alias.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np
import pytest

from infra.generations import Generation, check_writer, generation_settings, weaviate_rest
from infra.weaviate.provision import ensure_collections
from schemas.codec import pack_vector
from schemas.events import EmbeddedChunk, chunk_uuid
from streams import vectorstore
from streams.config import WorkerSettings
from streams.errors import ConfigError
from streams.vectorstore import ChunkVector, WeaviateStore


def _chunk(doc_id: str, text: str, model: str) -> ChunkVector:
    vector = np.zeros(8, dtype=np.float32)
    vector[0] = 1.0
    chunk = EmbeddedChunk(chunk_id=chunk_uuid("default", doc_id, 1, 0), doc_id=doc_id, version=1, seq=0,
                          n_chunks=1, text=text, char_start=0, char_end=len(text), title=doc_id,
                          vector=pack_vector(vector), dim=8, model=model)
    return ChunkVector(chunk, vector.tolist())


@pytest.fixture
async def names(services: WorkerSettings, unique: str) -> AsyncIterator[tuple[WorkerSettings, str, str]]:
    """The settings of a serving name ``Ra<unique>`` and two physical collections, dropped after."""
    serving = f"Ra{unique}"
    one, two = f"{serving}_a", f"{serving}_b"
    yield services.model_copy(update={"weaviate_collection": serving}), one, two
    async with weaviate_rest(services) as http:
        await http.delete(f"/v1/aliases/{serving}")
        for name in (serving, one, two):
            for collection in (name, f"{name}Docs"):
                await http.delete(f"/v1/schema/{collection}")


async def _filled(settings: WorkerSettings, name: str, doc_id: str, model: str) -> None:
    physical = settings.model_copy(update={"weaviate_collection": name})
    await ensure_collections(physical)
    store = WeaviateStore(physical)
    await store.start()
    try:
        await store.upsert([_chunk(doc_id, f"{doc_id} lives here", model)])
    finally:
        await store.stop()


async def test_a_switch_to_another_models_generation_is_noticed(
    names: tuple[WorkerSettings, str, str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings, one, two = names
    await _filled(settings, one, "first", "model-a")
    await _filled(settings, two, "second", "model-b")
    async with weaviate_rest(settings) as http:
        assert (await http.post("/v1/aliases", json={"alias": settings.weaviate_collection, "class": one})).status_code == 200
        monkeypatch.setattr(vectorstore, "MODEL_RECHECK_S", 0.2)
        store = WeaviateStore(settings)
        await store.start()
        try:
            assert await store.index_model() == "model-a"
            assert (await http.put(f"/v1/aliases/{settings.weaviate_collection}", json={"class": two})).status_code == 200
            await asyncio.sleep(0.3)
            assert await store.index_model() == "model-b"
            hits = await store.hybrid_search("lives", [1.0] + [0.0] * 7, tenant="default", top_k=3, alpha=0.5)
            assert [h.doc_id for h in hits] == ["second"]
        finally:
            await store.stop()


async def test_a_search_waits_while_the_collection_is_replaced_by_its_alias(
    names: tuple[WorkerSettings, str, str],
) -> None:
    settings, one, _ = names
    await _filled(settings, one, "moved", "model-a")
    store = WeaviateStore(settings)  # the serving name, not there yet
    await store.start()
    try:
        search = asyncio.create_task(store.hybrid_search("lives", [1.0] + [0.0] * 7, tenant="default",
                                                         top_k=3, alpha=0.5))
        await asyncio.sleep(0.3)  # the search finds no such collection meanwhile, and waits
        async with weaviate_rest(settings) as http:
            await http.post("/v1/aliases", json={"alias": settings.weaviate_collection, "class": one})
        assert [h.doc_id for h in await search] == ["moved"]
    finally:
        await store.stop()


async def test_an_ingest_worker_refuses_to_write_through_an_alias_or_unflagged_into_a_generation(
    names: tuple[WorkerSettings, str, str],
) -> None:
    settings, one, two = names
    await _filled(settings, one, "first", "model-a")
    async with weaviate_rest(settings) as http:
        await http.post("/v1/aliases", json={"alias": settings.weaviate_collection, "class": one})
        spec = Generation(two, settings.weaviate_collection, one, {"chunk_max_tokens": 200})
        definition = {"class": two, "description": spec.describe("test"), "vectorizer": "none",
                      "properties": [{"name": "doc_id", "dataType": ["text"]}]}
        assert (await http.post("/v1/schema", json=definition)).status_code == 200
    with pytest.raises(ConfigError, match=f"is an alias \\(of {one}\\)"):
        await check_writer(settings)
    assert await ensure_collections(settings) == []  # the answer role creates nothing behind an alias
    worker = generation_settings(settings.model_copy(update={"index_generation": two}), "ingest")
    with pytest.raises(ConfigError, match="AICHAT_CHUNK_MAX_TOKENS is 400, generation .* is built with 200"):
        await check_writer(worker)
    await check_writer(worker.model_copy(update={"chunk_max_tokens": 200}))
