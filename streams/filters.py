"""Weaviate filters of the chunk collection, built only through the client's typed API (pure).

A query's ``filters`` are equality filters on chunk properties (``doc_id``,
``source_uri``, ``version``) or on document metadata, which the indexer stores as
exact-match text properties ``meta_<key>``; the tenant is always a term. Values are
only ever values — never spliced into a query string.

What is here: the keys a query may filter on directly (:data:`CHUNK_FILTERS`), the
property a metadata key is stored in (:func:`meta_property`, :func:`meta_fields`,
:func:`meta_property_definition`), the properties a query's filters need
(:func:`metadata_properties`) and the filters themselves (:func:`build_filter` for a
search, :func:`document_filter` for one document's versions, :func:`tenant_filter`).
Nothing here holds a client; the store (streams/vectorstore.py) applies them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from weaviate.classes.query import Filter

from schemas.events import Scalar

#: chunk properties a query may filter on directly; any other key is document metadata
CHUNK_FILTERS = frozenset({"doc_id", "source_uri", "version"})


def meta_property(key: str) -> str:
    """The Weaviate property holding one metadata key (``meta_<key>``, safe characters only)."""
    return "meta_" + re.sub(r"[^0-9A-Za-z_]", "_", key)


def meta_text(value: Scalar) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def meta_fields(metadata: Mapping[str, Scalar]) -> dict[str, str]:
    """A chunk's metadata as the filterable properties it is stored in (``meta_<key>``: text)."""
    return {meta_property(k): meta_text(v) for k, v in metadata.items()}


def meta_property_definition(name: str) -> dict[str, Any]:
    """The schema of a metadata property: text matched exactly (whole value), filterable only."""
    return {"name": name, "dataType": ["text"], "tokenization": "field",
            "indexFilterable": True, "indexSearchable": False}


def metadata_properties(filters: Mapping[str, Scalar] | None) -> set[str]:
    """The ``meta_<key>`` properties a query's filters need (chunk-property keys need none)."""
    return {meta_property(k) for k in (filters or {}) if k not in CHUNK_FILTERS}


def tenant_filter(tenant: str) -> Any:
    return Filter.by_property("tenant").equal(tenant)


def build_filter(tenant: str, filters: Mapping[str, Scalar] | None) -> Any:
    """Tenant filter AND equality filters, through the typed filter API only.

    Values are only ever values: a filter like ``{"category": '" OR 1=1'}`` matches the
    documents whose category is that literal string. Metadata is stored as text, so a
    metadata filter compares the value's text (``1`` and ``"1"`` are equal).
    """
    clause = tenant_filter(tenant)
    for key, value in (filters or {}).items():
        if key in CHUNK_FILTERS:
            clause = clause & Filter.by_property(key).equal(value)
        else:
            clause = clause & Filter.by_property(meta_property(key)).equal(meta_text(value))
    return clause


def document_filter(tenant: str, doc_id: str, *, version: int | None = None,
                    versions_below: int | None = None, versions_up_to: int | None = None) -> Any:
    """One document's chunks (tenant AND doc_id), of one version, older ones or all up to one.

    The document is (tenant, doc_id): another tenant's document with the same id never matches.
    """
    where = tenant_filter(tenant) & Filter.by_property("doc_id").equal(doc_id)
    if version is not None:
        where = where & Filter.by_property("version").equal(version)
    if versions_below is not None:
        where = where & Filter.by_property("version").less_than(versions_below)
    if versions_up_to is not None:
        where = where & Filter.by_property("version").less_or_equal(versions_up_to)
    return where
