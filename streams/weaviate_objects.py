"""The chunk collection's objects (pure): what a chunk is written as, what a hit reads back as.

:func:`chunk_object` is the Weaviate object of one embedded chunk: its id is the chunk id
(a replay overwrites, never duplicates), its ``keywords`` are the title and text analysed
for BM25 (streams/keywords.py) and its metadata are filterable ``meta_<key>`` properties
(streams/filters.py). :func:`passages` reads a search's objects back as
:class:`~streams.passages.Passage`, each with its cosine similarity to the question when
the vectors came back. :func:`chunk_named` names an object in an error. No client here:
the store (streams/vectorstore.py) writes and reads them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson
from weaviate.classes.data import DataObject
from weaviate.outputs.query import Object

from schemas.events import EmbeddedChunk
from streams.filters import meta_fields
from streams.keywords import keyword_field
from streams.passages import Passage

#: the properties a search returns
RETURN_PROPS = ["doc_id", "tenant", "version", "seq", "title", "text", "source_uri", "metadata_json"]


def chunk_object(chunk: EmbeddedChunk, vector: Sequence[float]) -> DataObject[dict[str, Any], None]:
    """The Weaviate object of an embedded chunk, keywords analysed (CPU work: MeCab)."""
    return DataObject(
        uuid=chunk.chunk_id,
        vector=list(vector),
        properties={
            "doc_id": chunk.doc_id,
            "tenant": chunk.tenant,
            "version": chunk.version,
            "seq": chunk.seq,
            "n_chunks": chunk.n_chunks,
            "title": chunk.title,
            "text": chunk.text,
            "keywords": keyword_field(chunk.title, chunk.text),
            "char_start": chunk.char_start,
            "char_end": chunk.char_end,
            "source_uri": chunk.source_uri,
            "model": chunk.model,
            "trace_id": chunk.trace_id,
            "metadata_json": orjson.dumps(chunk.metadata).decode(),
            **meta_fields(chunk.metadata),
        },
    )


def chunk_named(obj: DataObject[Any, Any]) -> str:
    props = obj.properties or {}
    return (f"chunk {props.get('tenant')}/{props.get('doc_id')} v{props.get('version')} "
            f"#{props.get('seq')} (id {obj.uuid})")


def _cosine(query: np.ndarray | None, vectors: Any) -> float | None:
    """The question's cosine similarity to a chunk (both vectors are L2-normalised)."""
    chunk = (vectors or {}).get("default") if query is not None else None
    if chunk is None or query is None or len(chunk) != len(query):
        return None
    return round(float(np.dot(query, np.asarray(chunk, dtype=np.float32))), 6)


def passages(objects: Sequence[Object[Any, Any]], vector: Sequence[float] | None) -> list[Passage]:
    """A search's hits as passages; ``vector`` is the question's, None when no vectors came back."""
    query = np.asarray(vector, dtype=np.float32) if vector is not None else None
    return [
        Passage(
            doc_id=str(obj.properties["doc_id"]),
            chunk_id=str(obj.uuid),
            title=str(obj.properties.get("title") or ""),
            text=str(obj.properties.get("text") or ""),
            score=float(obj.metadata.score or 0.0),
            source_uri=str(obj.properties.get("source_uri") or ""),
            similarity=_cosine(query, obj.vector),
            version=_version(obj.properties.get("version")),
        )
        for obj in objects
    ]


def _version(value: Any) -> int | None:
    """A chunk's ``version`` property (Weaviate returns JSON numbers: maybe a float)."""
    return None if value is None else int(value)
