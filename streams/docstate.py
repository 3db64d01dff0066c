"""The indexer's record of each document: which version is in the index, and its content.

One small Weaviate collection (``<collection>Docs``) beside the chunks, one object
per document (id ``uuid5(doc_id)``), written only by the indexer. It is what lets
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

from streams.errors import DependencyUnavailable, EffectFailed

DOC_NAMESPACE = uuid.UUID("0b0c4f5e-7d3a-4f61-9f0e-3d2a4c8b9e21")
DocStatus = Literal["indexed", "deleted"]

DOCS_DEFINITION: dict[str, Any] = {
    "description": "One object per document: the version in the index (written by the indexer only).",
    "vectorizer": "none",
    "vectorIndexConfig": {"skip": True},
    "properties": [
        {"name": "doc_id", "dataType": ["text"], "tokenization": "field", "indexSearchable": False},
        {"name": "tenant", "dataType": ["text"], "tokenization": "field", "indexSearchable": False},
        {"name": "version", "dataType": ["int"]},
        {"name": "status", "dataType": ["text"], "tokenization": "field", "indexSearchable": False},
        {"name": "content_hash", "dataType": ["text"], "tokenization": "field", "indexSearchable": False},
        {"name": "n_chunks", "dataType": ["int"]},
        {"name": "indexed_at", "dataType": ["date"]},
    ],
}


def doc_uuid(doc_id: str) -> str:
    return str(uuid.uuid5(DOC_NAMESPACE, doc_id))


@dataclass(frozen=True, slots=True)
class DocState:
    doc_id: str
    tenant: str
    version: int
    status: DocStatus
    content_hash: str
    n_chunks: int
    indexed_at: datetime

    def supersedes(self, version: int) -> bool:
        """True when an event of ``version`` is stale against this state.

        A newer indexed version wins; a delete wins over every version up to its own.
        Replaying the indexed version itself is not stale (it rewrites the same objects).
        """
        return self.version > version or (self.status == "deleted" and self.version >= version)

    def to_object(self) -> DataObject[dict[str, Any], None]:
        return DataObject(
            uuid=doc_uuid(self.doc_id),
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

    def __init__(self, collection: Any) -> None:
        self._collection = collection

    async def get(self, doc_ids: Iterable[str]) -> dict[str, DocState]:
        ids = sorted({doc_uuid(d) for d in doc_ids})
        if not ids:
            return {}
        try:
            result = await self._collection.query.fetch_objects(
                filters=Filter.by_id().contains_any(ids), limit=len(ids)
            )
        except WeaviateBaseError as exc:
            raise DependencyUnavailable(f"Weaviate: cannot read document states: {exc}") from exc
        states = (DocState.from_properties(dict(o.properties)) for o in result.objects)
        return {s.doc_id: s for s in states}

    async def put(self, states: Sequence[DocState]) -> None:
        if not states:
            return
        try:
            result = await self._collection.data.insert_many([s.to_object() for s in states])
        except WeaviateBaseError as exc:
            raise DependencyUnavailable(f"Weaviate: cannot write document states: {exc}") from exc
        if result.has_errors:
            index, error = next(iter(result.errors.items()))
            raise EffectFailed(f"document state of {states[index].doc_id} refused: {error.message}")
