"""A chunk as the Weaviate object the store writes, a search hit as the passage it reads back."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import pytest
from weaviate.outputs.query import MetadataReturn, Object

from schemas.events import EmbeddedChunk, chunk_uuid
from streams.keywords import keyword_field
from streams.passages import Passage
from streams.weaviate_objects import RETURN_PROPS, chunk_named, chunk_object, passages


def _chunk(**metadata: Any) -> EmbeddedChunk:
    return EmbeddedChunk(
        chunk_id=chunk_uuid("acme", "handbook", 2, 1), doc_id="handbook", tenant="acme", version=2,
        seq=1, n_chunks=3, title="Vacation", text="Employees get 25 vacation days.", char_start=10,
        char_end=41, source_uri="file:///handbook.md", metadata=metadata, model="e5", dim=2,
    )


def _hit(properties: dict[str, Any], score: float | None, vector: list[float] | None) -> Object[Any, Any]:
    return Object(uuid=uuid.UUID(int=7), metadata=MetadataReturn(score=score), properties=properties,
                  references=None, vector={"default": vector} if vector is not None else {},
                  collection="Chunks")


def test_a_chunk_is_written_under_its_own_id_with_keywords_and_filterable_metadata() -> None:
    chunk = _chunk(lang="en", public=True)
    obj = chunk_object(chunk, [0.6, 0.8])
    assert obj.uuid == chunk.chunk_id  # a replay overwrites the same object
    assert obj.vector == [0.6, 0.8]
    props = obj.properties
    assert props["keywords"] == keyword_field("Vacation", "Employees get 25 vacation days.")
    assert (props["tenant"], props["doc_id"], props["version"], props["seq"]) == ("acme", "handbook", 2, 1)
    assert (props["char_start"], props["char_end"], props["model"]) == (10, 41, "e5")
    assert orjson.loads(props["metadata_json"]) == {"lang": "en", "public": True}
    assert (props["meta_lang"], props["meta_public"]) == ("en", "true")
    assert set(RETURN_PROPS) <= set(props)  # a search can read back all it asks for


def test_an_object_is_named_by_its_document_version_and_position() -> None:
    obj = chunk_object(_chunk(), [1.0, 0.0])
    assert chunk_named(obj) == f"chunk acme/handbook v2 #1 (id {obj.uuid})"


def test_a_hit_reads_back_as_a_passage_with_its_similarity_to_the_question() -> None:
    hit = _hit({"doc_id": "handbook", "title": "Vacation", "text": "25 days.",
                "source_uri": "file:///handbook.md"}, 0.75, [0.6, 0.8])
    assert passages([hit], [1.0, 0.0]) == [Passage(
        doc_id="handbook", chunk_id=str(uuid.UUID(int=7)), title="Vacation", text="25 days.",
        score=0.75, source_uri="file:///handbook.md", similarity=0.6)]  # rounded to 6 places


@pytest.mark.parametrize(("question", "vector"), [(None, [0.6, 0.8]), ([1.0, 0.0], None),
                                                  ([1.0, 0.0, 0.0], [0.6, 0.8])])
def test_without_comparable_vectors_there_is_no_similarity(
    question: list[float] | None, vector: list[float] | None
) -> None:
    """A keyword-only search returns no vectors; a vector of another length is not compared."""
    [passage] = passages([_hit({"doc_id": "handbook"}, None, vector)], question)
    assert passage.similarity is None
    assert (passage.title, passage.text, passage.source_uri, passage.score) == ("", "", "", 0.0)
