"""The indexer's record of each document: which version is in the index, and its content.

One small Weaviate collection (:func:`docs_collection_name`) beside the chunks, one object
per document (id ``uuid5(tenant/doc_id)``), written only by the indexer. A document
is ``(tenant, doc_id)``: two tenants' documents with the same ``doc_id`` have two
states. It is what lets
versions win over arrival order (an older version, or one older than a delete, is
*stale*) and what lets the chunker skip re-embedding unchanged content.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from weaviate.classes.data import DataObject
from weaviate.classes.query import Filter
from weaviate.exceptions import WeaviateBaseError

from schemas.events import DocKey, document_key
from streams.errors import DependencyUnavailable
from streams.weaviate_errors import insert_failed, refused_objects, within

DOC_NAMESPACE = uuid.UUID("0b0c4f5e-7d3a-4f61-9f0e-3d2a4c8b9e21")
DocStatus = Literal["indexed", "deleted"]


def docs_collection_name(collection: str) -> str:
    """The document-state collection beside chunk collection ``collection`` (defined in
    infra/weaviate/docs-collection.json, created by infra/weaviate/provision.py)."""
    return f"{collection}Docs"


def doc_uuid(tenant: str, doc_id: str) -> str:
    return str(uuid.uuid5(DOC_NAMESPACE, document_key(tenant, doc_id)))


@dataclass(frozen=True, slots=True)
class DocState:
    doc_id: str
    tenant: str
    version: int
    status: DocStatus
    content_hash: str
    n_chunks: int
    indexed_at: datetime

    @property
    def key(self) -> DocKey:
        return (self.tenant, self.doc_id)

    def supersedes(self, version: int) -> bool:
        """True when an event of ``version`` is stale against this state.

        A newer indexed version wins; a delete wins over every version up to its own.
        Replaying the indexed version itself is not stale (it rewrites the same objects).
        """
        return self.version > version or (self.status == "deleted" and self.version >= version)

    def to_object(self) -> DataObject[dict[str, Any], None]:
        return DataObject(
            uuid=doc_uuid(self.tenant, self.doc_id),
            properties={
                "doc_id": self.doc_id,
                "tenant": self.tenant,
                "version": self.version,
                "status": self.status,
                "content_hash": self.content_hash,
                "n_chunks": self.n_chunks,
                "indexed_at": self.indexed_at,
            },
        )

    @classmethod
    def from_properties(cls, props: dict[str, Any]) -> DocState:
        return cls(
            doc_id=str(props["doc_id"]),
            tenant=str(props.get("tenant") or "default"),
            version=int(props["version"]),
            status="deleted" if props.get("status") == "deleted" else "indexed",
            content_hash=str(props.get("content_hash") or ""),
            n_chunks=int(props.get("n_chunks") or 0),
            indexed_at=props["indexed_at"],
        )


class DocRegistry:
    """Reads and writes :class:`DocState` objects through the store's collection handle."""

    def __init__(self, collection: Any, *, timeout_s: float = 30.0) -> None:
        self._collection = collection
        self._timeout_s = timeout_s  # each call's deadline (streams.weaviate_errors.within)

    async def get(self, keys: Iterable[DocKey]) -> dict[DocKey, DocState]:
        """The states of these documents that exist, by (tenant, doc_id)."""
        ids = sorted({doc_uuid(tenant, doc_id) for tenant, doc_id in keys})
        if not ids:
            return {}
        try:
            result = await within(self._timeout_s, self._collection.query.fetch_objects(
                filters=Filter.by_id().contains_any(ids), limit=len(ids)
            ), "reading document states")
        except WeaviateBaseError as exc:
            raise DependencyUnavailable(f"Weaviate: cannot read document states: {exc}") from exc
        states = (DocState.from_properties(dict(o.properties)) for o in result.objects)
        return {s.key: s for s in states}

    async def count(self) -> int:
        """How many documents have a state (indexed or deleted)."""
        try:
            result = await within(self._timeout_s, self._collection.aggregate.over_all(total_count=True),
                                  "counting document states")
        except WeaviateBaseError as exc:
            raise DependencyUnavailable(f"Weaviate: cannot count document states: {exc}") from exc
        return int(result.total_count or 0)

    async def put(self, states: Sequence[DocState]) -> None:
        if not states:
            return
        try:
            result = await within(self._timeout_s, self._collection.data.insert_many(
                [s.to_object() for s in states]), f"a write of {len(states)} document states")
        except WeaviateBaseError as exc:
            raise insert_failed(exc, len(states), _state_named(states[0])) from exc
        if result.has_errors:
            raise refused_objects([e.message for e in result.errors.values()], len(states),
                                  _state_named(states[min(result.errors)]))


def _state_named(state: DocState) -> str:
    return f"document state {state.tenant}/{state.doc_id} v{state.version}"
