"""Weaviate as the vector store: idempotent chunk upserts and hybrid search.

One :class:`WeaviateStore` per process owns one async client (``start``/``stop``).
Every batch result is checked object by object: a failed object raises
:class:`~streams.errors.EffectFailed` (or ``DependencyUnavailable`` when the
server is unreachable), never a silent partial write. Filters are built only
through the client's typed filter API, never by string concatenation (streams/filters.py);
what a chunk is written as and how a hit reads back are streams/weaviate_objects.py.

The store only connects: its collections are created before it starts, by whoever starts
the process (``aichat worker`` through infra/weaviate/provision.py). At run time it adds
the filterable property of a metadata key seen for the first time (:func:`add_property`).

The collection it searches may be an alias (``aichat reindex``) that moves to another
collection while the process runs: the index's model is read again every
:data:`MODEL_RECHECK_S`, and a search that finds no such collection is tried again for
:data:`MISSING_COLLECTION_WAIT_S` (the moment a real collection is replaced by its alias).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
import weaviate
from weaviate.classes.query import HybridFusion, MetadataQuery
from weaviate.exceptions import (
    WeaviateBaseError,
    WeaviateConnectionError,
    WeaviateQueryError,
)

from schemas.events import EmbeddedChunk, Scalar
from streams.config import WeaviateSettings
from streams.docstate import DocRegistry, docs_collection_name
from streams.endpoints import weaviate_http_options, weaviate_url
from streams.errors import DependencyUnavailable, EffectFailed, ModelMismatch
from streams.filters import (
    build_filter,
    document_filter,
    meta_property,
    meta_property_definition,
    metadata_properties,
    tenant_filter,
)
from streams.keywords import keyword_field
from streams.passages import Passage
from streams.weaviate_connect import weaviate_client
from streams.weaviate_errors import insert_failed, refused_objects, within
from streams.weaviate_objects import RETURN_PROPS, chunk_named, chunk_object, passages

log = logging.getLogger(__name__)

#: BM25 runs over this one property: title and text analysed in the pipeline (streams/keywords.py)
SEARCH_PROPS = ["keywords"]
#: a delete that matched this many objects or more is repeated until one matches none:
#: Weaviate removes at most QUERY_MAXIMUM_RESULTS objects per call (10,000 by default)
DELETE_REPEAT_AT = 100
#: seconds after which the index's model is read again: behind an alias it may have changed
MODEL_RECHECK_S = 5.0
#: how long a search retries "no such collection", every 50 ms: the few milliseconds between
#: deleting a real collection and creating the alias of the same name in its place
MISSING_COLLECTION_WAIT_S = 2.0


@dataclass(frozen=True, slots=True)
class ChunkVector:
    """What the indexer writes: one embedded chunk with its vector as floats."""

    chunk: EmbeddedChunk
    vector: Sequence[float]


class VectorStore(Protocol):
    """What the agents call: the chunk writes and deletes and the document states (the
    indexer, the chunker), the model check and the search (the answerer)."""

    @property
    def registry(self) -> DocRegistry: ...

    async def upsert(self, items: Sequence[ChunkVector]) -> None: ...

    async def delete_chunks(self, tenant: str, doc_id: str, *, versions_below: int | None = None,
                            versions_up_to: int | None = None) -> int: ...

    async def index_model(self) -> str | None: ...

    async def hybrid_search(
        self,
        text: str,
        vector: Sequence[float],
        *,
        tenant: str,
        top_k: int,
        alpha: float,
        filters: Mapping[str, Scalar] | None = None,
        fusion: str = "relative_score",
    ) -> list[Passage]: ...


async def add_property(settings: WeaviateSettings, collection: str, prop: dict[str, Any]) -> None:
    """``POST /v1/schema/<collection>/properties``: one property more (Weaviate never changes one)."""
    async with httpx.AsyncClient(**weaviate_http_options(settings), timeout=30) as http:
        response = await http.post(f"/v1/schema/{collection}/properties", json=prop)
    if response.status_code >= 300:
        raise EffectFailed(f"cannot add property {prop['name']} to {collection}: {response.text}")


class WeaviateStore:
    def __init__(self, settings: WeaviateSettings) -> None:
        self.settings = settings
        self._client: weaviate.WeaviateAsyncClient | None = None
        self._properties: set[str] = set()
        self._model: str | None = None  # of the collection's vectors, once known
        self._model_read_at = -MODEL_RECHECK_S  # time.monotonic() of the last read

    async def start(self) -> None:
        s = self.settings
        client = weaviate_client(s)
        try:
            await client.connect()
        except WeaviateConnectionError as exc:
            await client.close()
            raise DependencyUnavailable(f"Weaviate at {weaviate_url(s)}: {exc}") from exc
        self._client = client
        log.info("connected to Weaviate %s, collection %s", weaviate_url(s), s.weaviate_collection)

    async def stop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    @property
    def docs_collection_name(self) -> str:
        return docs_collection_name(self.settings.weaviate_collection)

    async def _load_properties(self) -> set[str]:
        config = await self._collection.config.get()
        self._properties = {p.name for p in config.properties}
        return self._properties

    async def _ensure_meta_properties(self, keys: set[str]) -> None:
        """Add a filterable text property (exact match) for metadata keys seen for the first time."""
        missing = {meta_property(k) for k in keys} - self._properties
        if not missing or not (missing := missing - await self._load_properties()):
            return
        for name in sorted(missing):
            try:
                await add_property(self.settings, self.settings.weaviate_collection,
                                   meta_property_definition(name))
            except EffectFailed as exc:
                if "already exists" not in str(exc):  # another worker added it meanwhile
                    raise
        await self._load_properties()

    def _use(self, name: str) -> Any:
        if self._client is None:
            raise RuntimeError("WeaviateStore used before start()")
        return self._client.collections.use(name)

    @property
    def _collection(self) -> Any:
        return self._use(self.settings.weaviate_collection)

    @property
    def registry(self) -> DocRegistry:
        return DocRegistry(self._use(self.docs_collection_name), timeout_s=self.settings.weaviate_timeout_s)

    async def delete_chunks(self, tenant: str, doc_id: str, *, versions_below: int | None = None,
                            versions_up_to: int | None = None) -> int:
        """Delete a document's chunks of older versions (or all up to one); return how many.

        The document is (tenant, doc_id): another tenant's document with the same id is
        never touched. A call that matched :data:`DELETE_REPEAT_AT` objects or more is
        repeated, so a server-side cap per call (``QUERY_MAXIMUM_RESULTS``) leaves nothing.
        """
        where = document_filter(tenant, doc_id, versions_below=versions_below,
                                versions_up_to=versions_up_to)
        removed = 0
        while True:
            try:
                result = await within(self.settings.weaviate_timeout_s,
                                      self._collection.data.delete_many(where=where), "a delete")
            except WeaviateBaseError as exc:
                raise DependencyUnavailable(f"Weaviate delete failed: {exc}") from exc
            if result.failed:
                raise DependencyUnavailable(
                    f"Weaviate failed to delete {result.failed} chunks of {tenant}/{doc_id}")
            removed += int(result.successful)
            if result.matches < DELETE_REPEAT_AT:
                return removed

    async def count_chunks(self, tenant: str, doc_id: str, version: int | None = None) -> int:
        where = document_filter(tenant, doc_id, version=version)
        result = await within(self.settings.weaviate_timeout_s,
                              self._collection.aggregate.over_all(total_count=True, filters=where), "a count")
        return int(result.total_count or 0)

    async def index_model(self) -> str | None:
        """The embedding model of the vectors in the collection (None when it is empty;
        "" for chunks written before the model was recorded); read again after
        :data:`MODEL_RECHECK_S`, since an alias may point at another collection by then."""
        now = time.monotonic()
        if self._model is not None and now - self._model_read_at < MODEL_RECHECK_S:
            return self._model
        try:
            result = await within(self.settings.weaviate_timeout_s, self._collection.query.fetch_objects(
                limit=1, return_properties=["model"]), "reading the index's model")
        except WeaviateBaseError as exc:
            if self._model is not None:
                return self._model  # the last known one: read again on the next call
            raise DependencyUnavailable(f"Weaviate: cannot read the index's model: {exc}") from exc
        if not result.objects:
            return self._model
        self._model, self._model_read_at = str(result.objects[0].properties.get("model") or ""), now
        return self._model

    async def _refuse_other_models(self, items: Sequence[ChunkVector]) -> None:
        """Vectors of two models in one collection would rank as if comparable: refuse."""
        held = await self.index_model()
        if held is None:
            self._model = held = items[0].chunk.model  # the first writer names the index's model
        for item in items:
            if item.chunk.model != held:
                raise ModelMismatch(
                    f"chunk {item.chunk.kafka_key} #{item.chunk.seq} was embedded by "
                    f"{item.chunk.model!r}, but collection {self.settings.weaviate_collection} holds "
                    f"vectors of {held or 'an unrecorded model'!r}: one model per collection; to change "
                    "it, re-index (aichat rebuild, or a new AICHAT_WEAVIATE_COLLECTION)"
                )

    async def upsert(self, items: Sequence[ChunkVector]) -> None:
        if not items:
            return
        await self._refuse_other_models(items)
        await self._ensure_meta_properties({k for item in items for k in item.chunk.metadata})
        # keyword analysis (MeCab) is CPU work: off the event loop
        objects = await asyncio.to_thread(lambda: [chunk_object(i.chunk, i.vector) for i in items])
        try:
            result = await within(self.settings.weaviate_timeout_s,
                                  self._collection.data.insert_many(objects), f"a write of {len(objects)} chunks")
        except WeaviateConnectionError as exc:
            raise DependencyUnavailable(f"Weaviate unreachable: {exc}") from exc
        except WeaviateBaseError as exc:
            raise insert_failed(exc, len(objects), chunk_named(objects[0])) from exc
        if result.has_errors:
            first = objects[min(result.errors)]
            raise refused_objects([e.message for e in result.errors.values()], len(objects),
                                  chunk_named(first))

    async def hybrid_search(
        self,
        text: str,
        vector: Sequence[float],
        *,
        tenant: str,
        top_k: int,
        alpha: float,
        filters: Mapping[str, Scalar] | None = None,
        fusion: str = "relative_score",
    ) -> list[Passage]:
        unknown = metadata_properties(filters) - self._properties
        if unknown and unknown - await self._load_properties():
            return []  # no document has that metadata key: nothing can match
        give_up_at = time.monotonic() + MISSING_COLLECTION_WAIT_S
        while True:
            try:
                result = await within(self.settings.weaviate_timeout_s, self._collection.query.hybrid(
                    query=keyword_field(text) or text,
                    vector=list(vector),
                    alpha=alpha,
                    limit=top_k,
                    query_properties=SEARCH_PROPS,
                    filters=build_filter(tenant, filters),
                    return_metadata=MetadataQuery(score=True),
                    return_properties=RETURN_PROPS,
                    include_vector=alpha > 0,  # for each passage's similarity to the question
                    fusion_type=HybridFusion.RANKED if fusion == "ranked" else HybridFusion.RELATIVE_SCORE,
                ), "a search")
                return passages(result.objects, vector if alpha > 0 else None)
            except WeaviateQueryError as exc:
                if "could not find class" in str(exc) and time.monotonic() < give_up_at:
                    await asyncio.sleep(0.05)  # an alias is taking the collection's place
                    continue
                raise DependencyUnavailable(f"Weaviate search failed: {exc}") from exc
            except WeaviateConnectionError as exc:
                raise DependencyUnavailable(f"Weaviate search failed: {exc}") from exc

    async def count(self, tenant: str | None = None) -> int:
        where = tenant_filter(tenant) if tenant else None
        result = await within(self.settings.weaviate_timeout_s,
                              self._collection.aggregate.over_all(total_count=True, filters=where), "a count")
        return int(result.total_count or 0)
