"""Weaviate as the vector store: idempotent chunk upserts and hybrid search.

One :class:`WeaviateStore` per process owns one async client (``start``/``stop``).
Every batch result is checked object by object: a failed object raises
:class:`~streams.errors.EffectFailed` (or ``DependencyUnavailable`` when the
server is unreachable), never a silent partial write. Filters are built only
through the client's typed filter API, never by string concatenation.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx
import orjson
import weaviate
from weaviate.classes.data import DataObject
from weaviate.classes.query import Filter, MetadataQuery
from weaviate.exceptions import (
    UnexpectedStatusCodeError,
    WeaviateBaseError,
    WeaviateConnectionError,
    WeaviateQueryError,
)

from schemas.events import EmbeddedChunk, Scalar
from streams.config import WeaviateSettings
from streams.docstate import DOCS_DEFINITION, DocRegistry
from streams.errors import DependencyUnavailable, EffectFailed
from streams.generation import Passage
from streams.weaviate_errors import insert_failed, refused_objects

log = logging.getLogger(__name__)

COLLECTION_FILE = Path(__file__).resolve().parent.parent / "infra" / "weaviate" / "collection.json"
_RETURN_PROPS = ["doc_id", "tenant", "version", "seq", "title", "text", "source_uri", "metadata_json"]
#: BM25 runs over these: English-style words in title/text, Korean morphemes in text_ko
SEARCH_PROPS = ["title", "text", "text_ko"]
_NOT_HANGUL = re.compile(r"[^\u1100-\u11ff\u3131-\u318e\uac00-\ud7a3]+")


def hangul_only(*texts: str) -> str:
    """The Hangul runs of the texts, space-separated ("" when there are none).

    Korean needs a morphological tokenizer (kagome_kr) for BM25 — 캘린더에 must match
    캘린더 — but that tokenizer mangles Latin text, so it only ever sees Hangul.
    """
    return " ".join(run for t in texts for run in _NOT_HANGUL.split(t) if run)


@dataclass(frozen=True, slots=True)
class ChunkVector:
    """What the indexer writes: one embedded chunk with its vector as floats."""

    chunk: EmbeddedChunk
    vector: Sequence[float]


class VectorStore(Protocol):
    async def upsert(self, items: Sequence[ChunkVector]) -> None: ...

    async def hybrid_search(
        self,
        text: str,
        vector: Sequence[float],
        *,
        tenant: str,
        top_k: int,
        alpha: float,
        filters: Mapping[str, Scalar] | None = None,
    ) -> list[Passage]: ...


def collection_definition(name: str) -> dict[str, Any]:
    definition: dict[str, Any] = orjson.loads(COLLECTION_FILE.read_bytes())
    definition["class"] = name
    return definition


#: chunk properties a query may filter on directly; any other key is document metadata
CHUNK_FILTERS = frozenset({"doc_id", "source_uri", "version"})


def meta_property(key: str) -> str:
    """The Weaviate property holding one metadata key (``meta_<key>``, safe characters only)."""
    return "meta_" + re.sub(r"[^0-9A-Za-z_]", "_", key)


def build_filter(tenant: str, filters: Mapping[str, Scalar] | None) -> Any:
    """Tenant filter AND equality filters, through the typed filter API only.

    Values are only ever values: a filter like ``{"category": '" OR 1=1'}`` matches the
    documents whose category is that literal string. Metadata is stored as text, so a
    metadata filter compares the value's text (``1`` and ``"1"`` are equal).
    """
    clause = Filter.by_property("tenant").equal(tenant)
    for key, value in (filters or {}).items():
        if key in CHUNK_FILTERS:
            clause = clause & Filter.by_property(key).equal(value)
        else:
            clause = clause & Filter.by_property(meta_property(key)).equal(_meta_text(value))
    return clause


def _chunk_objects(items: Sequence[ChunkVector]) -> list[DataObject[dict[str, Any], None]]:
    """The Weaviate objects of embedded chunks."""
    return [
        DataObject(
            uuid=item.chunk.chunk_id,
            vector=list(item.vector),
            properties={
                "doc_id": item.chunk.doc_id,
                "tenant": item.chunk.tenant,
                "version": item.chunk.version,
                "seq": item.chunk.seq,
                "n_chunks": item.chunk.n_chunks,
                "title": item.chunk.title,
                "text": item.chunk.text,
                "text_ko": hangul_only(item.chunk.title, item.chunk.text),
                "char_start": item.chunk.char_start,
                "char_end": item.chunk.char_end,
                "source_uri": item.chunk.source_uri,
                "trace_id": item.chunk.trace_id,
                "metadata_json": orjson.dumps(item.chunk.metadata).decode(),
                **{meta_property(k): _meta_text(v) for k, v in item.chunk.metadata.items()},
            },
        )
        for item in items
    ]


def _document_filter(tenant: str, doc_id: str) -> Any:
    return Filter.by_property("tenant").equal(tenant) & Filter.by_property("doc_id").equal(doc_id)


def _chunk_named(obj: DataObject[Any, Any]) -> str:
    props = obj.properties or {}
    return (f"chunk {props.get('tenant')}/{props.get('doc_id')} v{props.get('version')} "
            f"#{props.get('seq')} (id {obj.uuid})")


def _meta_text(value: Scalar) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


class WeaviateStore:
    def __init__(self, settings: WeaviateSettings) -> None:
        self.settings = settings
        self._client: weaviate.WeaviateAsyncClient | None = None
        self._properties: set[str] = set()

    async def start(self) -> None:
        s = self.settings
        auth = (
            weaviate.auth.AuthApiKey(s.weaviate_api_key.get_secret_value())
            if s.weaviate_api_key
            else None
        )
        client = weaviate.use_async_with_local(
            host=s.weaviate_host,
            port=s.weaviate_http_port,
            grpc_port=s.weaviate_grpc_port,
            auth_credentials=auth,
            skip_init_checks=False,
        )
        try:
            await client.connect()
            await self.ensure_collection(client)
        except WeaviateConnectionError as exc:
            await client.close()
            raise DependencyUnavailable(f"Weaviate at {s.weaviate_host}:{s.weaviate_http_port}: {exc}") from exc
        self._client = client
        log.info("connected to Weaviate %s:%s, collection %s", s.weaviate_host, s.weaviate_http_port, s.weaviate_collection)

    async def stop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    @property
    def docs_collection_name(self) -> str:
        return f"{self.settings.weaviate_collection}Docs"

    async def ensure_collection(self, client: weaviate.WeaviateAsyncClient) -> None:
        """Create the chunk collection and the document-state collection if missing."""
        name = self.settings.weaviate_collection
        wanted = {
            name: collection_definition(name),
            self.docs_collection_name: {**DOCS_DEFINITION, "class": self.docs_collection_name},
        }
        for collection, definition in wanted.items():
            if await client.collections.exists(collection):
                await self._add_missing_properties(client, collection, definition)
                continue
            try:
                await client.collections.create_from_dict(definition)
            except UnexpectedStatusCodeError as exc:
                if "already exists" not in str(exc):  # another worker was faster
                    raise
            log.info("created Weaviate collection %s", collection)

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
                await self._http_add_property(self.settings.weaviate_collection, {
                    "name": name, "dataType": ["text"], "tokenization": "field",
                    "indexFilterable": True, "indexSearchable": False,
                })
            except EffectFailed as exc:
                if "already exists" not in str(exc):  # another worker added it meanwhile
                    raise
        await self._load_properties()

    async def _add_missing_properties(
        self, client: weaviate.WeaviateAsyncClient, name: str, definition: dict[str, Any]
    ) -> None:
        """A newer definition's extra properties are added (Weaviate adds, never changes, them)."""
        config = await client.collections.use(name).config.get()
        present = {p.name for p in config.properties}
        for prop in definition["properties"]:
            if prop["name"] not in present:
                await self._http_add_property(name, prop)
                log.warning("added property %s to Weaviate collection %s (existing objects have "
                            "it empty until re-indexed)", prop["name"], name)

    async def _http_add_property(self, name: str, prop: dict[str, Any]) -> None:
        s = self.settings
        headers = {"Authorization": f"Bearer {s.weaviate_api_key.get_secret_value()}"} if s.weaviate_api_key else {}
        async with httpx.AsyncClient(timeout=30) as http:
            response = await http.post(
                f"http://{s.weaviate_host}:{s.weaviate_http_port}/v1/schema/{name}/properties",
                json=prop, headers=headers,
            )
        if response.status_code >= 300:
            raise EffectFailed(f"cannot add property {prop['name']} to {name}: {response.text}")

    def _use(self, name: str) -> Any:
        if self._client is None:
            raise RuntimeError("WeaviateStore used before start()")
        return self._client.collections.use(name)

    @property
    def _collection(self) -> Any:
        return self._use(self.settings.weaviate_collection)

    @property
    def registry(self) -> DocRegistry:
        return DocRegistry(self._use(self.docs_collection_name))

    async def delete_chunks(self, tenant: str, doc_id: str, *, versions_below: int | None = None,
                            versions_up_to: int | None = None) -> int:
        """Delete a document's chunks of older versions (or all up to one); return how many.

        The document is (tenant, doc_id): another tenant's document with the same id is
        never touched.
        """
        where = _document_filter(tenant, doc_id)
        if versions_below is not None:
            where = where & Filter.by_property("version").less_than(versions_below)
        if versions_up_to is not None:
            where = where & Filter.by_property("version").less_or_equal(versions_up_to)
        try:
            result = await self._collection.data.delete_many(where=where)
        except WeaviateBaseError as exc:
            raise DependencyUnavailable(f"Weaviate delete failed: {exc}") from exc
        if result.failed:
            raise DependencyUnavailable(f"Weaviate failed to delete {result.failed} chunks of {tenant}/{doc_id}")
        return int(result.successful)

    async def count_chunks(self, tenant: str, doc_id: str, version: int | None = None) -> int:
        where = _document_filter(tenant, doc_id)
        if version is not None:
            where = where & Filter.by_property("version").equal(version)
        result = await self._collection.aggregate.over_all(total_count=True, filters=where)
        return int(result.total_count or 0)

    async def upsert(self, items: Sequence[ChunkVector]) -> None:
        await self._ensure_meta_properties({k for item in items for k in item.chunk.metadata})
        objects = _chunk_objects(items)
        try:
            result = await self._collection.data.insert_many(objects)
        except WeaviateConnectionError as exc:
            raise DependencyUnavailable(f"Weaviate unreachable: {exc}") from exc
        except WeaviateBaseError as exc:
            raise insert_failed(exc, len(objects), _chunk_named(objects[0])) from exc
        if result.has_errors:
            first = objects[min(result.errors)]
            raise refused_objects([e.message for e in result.errors.values()], len(objects),
                                  _chunk_named(first))

    async def hybrid_search(
        self,
        text: str,
        vector: Sequence[float],
        *,
        tenant: str,
        top_k: int,
        alpha: float,
        filters: Mapping[str, Scalar] | None = None,
    ) -> list[Passage]:
        unknown = {meta_property(k) for k in (filters or {}) if k not in CHUNK_FILTERS} - self._properties
        if unknown and unknown - await self._load_properties():
            return []  # no document has that metadata key: nothing can match
        try:
            result = await self._collection.query.hybrid(
                query=text,
                vector=list(vector),
                alpha=alpha,
                limit=top_k,
                query_properties=SEARCH_PROPS,
                filters=build_filter(tenant, filters),
                return_metadata=MetadataQuery(score=True),
                return_properties=_RETURN_PROPS,
            )
        except (WeaviateConnectionError, WeaviateQueryError) as exc:
            raise DependencyUnavailable(f"Weaviate search failed: {exc}") from exc
        return [
            Passage(
                doc_id=str(obj.properties["doc_id"]),
                chunk_id=str(obj.uuid),
                title=str(obj.properties.get("title") or ""),
                text=str(obj.properties.get("text") or ""),
                score=float(obj.metadata.score or 0.0),
                source_uri=str(obj.properties.get("source_uri") or ""),
            )
            for obj in result.objects
        ]

    async def count(self, tenant: str | None = None) -> int:
        where = Filter.by_property("tenant").equal(tenant) if tenant else None
        result = await self._collection.aggregate.over_all(total_count=True, filters=where)
        return int(result.total_count or 0)
