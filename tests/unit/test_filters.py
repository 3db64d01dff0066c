"""A query's tenant and filters become typed Weaviate filters; no Weaviate needed."""

from __future__ import annotations

from typing import Any

from streams.filters import (
    CHUNK_FILTERS,
    build_filter,
    document_filter,
    meta_fields,
    meta_property,
    meta_property_definition,
    metadata_properties,
)


def _terms(clause: Any) -> list[tuple[str, str, Any]]:
    """The (property, operator, value) terms of an AND of filters, in the order they were joined."""
    if hasattr(clause, "filters"):
        return [term for part in clause.filters for term in _terms(part)]
    return [(clause.target, clause.operator.value, clause.value)]


def test_the_tenant_is_always_a_term() -> None:
    assert _terms(build_filter("acme", None)) == [("tenant", "Equal", "acme")]
    assert _terms(build_filter("acme", {}))[0] == ("tenant", "Equal", "acme")
    assert _terms(build_filter("acme", {"lang": "en"}))[0] == ("tenant", "Equal", "acme")


def test_chunk_keys_filter_their_property_and_metadata_keys_their_text() -> None:
    clause = build_filter("acme", {"doc_id": "handbook", "version": 2, "lang": "en", "draft": False,
                                   "year": 2024})
    assert _terms(clause) == [
        ("tenant", "Equal", "acme"),
        ("doc_id", "Equal", "handbook"),
        ("version", "Equal", 2),
        ("meta_lang", "Equal", "en"),
        ("meta_draft", "Equal", "false"),  # metadata is stored as text: a bool as lower case
        ("meta_year", "Equal", "2024"),
    ]


def test_a_value_is_a_value_never_syntax() -> None:
    hostile = '" OR 1=1 }'
    assert _terms(build_filter("acme", {"doc_id": hostile, "category": hostile}))[1:] == [
        ("doc_id", "Equal", hostile), ("meta_category", "Equal", hostile)]


def test_a_metadata_key_is_stored_under_a_safe_property_name() -> None:
    assert meta_property("lang") == "meta_lang"
    assert meta_property("a-b.c d/ü") == "meta_a_b_c_d__"
    assert meta_fields({"lang": "ko", "public": True, "n": 1.5}) == {
        "meta_lang": "ko", "meta_public": "true", "meta_n": "1.5"}


def test_a_metadata_property_matches_whole_values_and_is_not_searched() -> None:
    assert meta_property_definition("meta_lang") == {
        "name": "meta_lang", "dataType": ["text"], "tokenization": "field",
        "indexFilterable": True, "indexSearchable": False}


def test_only_metadata_keys_need_a_metadata_property() -> None:
    assert metadata_properties(None) == set()
    assert metadata_properties(dict.fromkeys(CHUNK_FILTERS, "x")) == set()
    assert metadata_properties({"doc_id": "a", "lang": "en", "team-x": 1}) == {"meta_lang", "meta_team_x"}


def test_a_document_is_its_tenant_and_id_and_may_be_narrowed_to_versions() -> None:
    document = [("tenant", "Equal", "acme"), ("doc_id", "Equal", "handbook")]
    assert _terms(document_filter("acme", "handbook")) == document
    assert _terms(document_filter("acme", "handbook", version=3)) == [*document, ("version", "Equal", 3)]
    assert _terms(document_filter("acme", "handbook", versions_below=3, versions_up_to=5)) == [
        *document, ("version", "LessThan", 3), ("version", "LessThanEqual", 5)]
