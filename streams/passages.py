"""What a search returns: :class:`Passage`, a retrieved chunk.

The vector store returns passages and the generators read them; the type lives
here so that neither imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Passage:
    """A retrieved chunk, as the generator sees it."""

    doc_id: str
    chunk_id: str
    title: str
    text: str
    score: float
    source_uri: str = ""
    #: cosine similarity of the question and the chunk vectors (None without a vector search)
    similarity: float | None = None
    #: the document version the chunk belongs to (None when the store did not say)
    version: int | None = None
