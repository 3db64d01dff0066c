"""Weaviate filters of the chunk collection, built only through the client's typed API (pure).

A query's ``filters`` are equality filters on chunk properties (``doc_id``,
``source_uri``, ``version``) or on document metadata, which the indexer stores as
exact-match text properties ``meta_<key>``; the tenant is always a term. Values are
only ever values — never spliced into a query string.
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
            clause = clause & Filter.by_property(meta_property(key)).equal(meta_text(value))
    return clause


def document_filter(tenant: str, doc_id: str) -> Any:
    return Filter.by_property("tenant").equal(tenant) & Filter.by_property("doc_id").equal(doc_id)


def meta_text(value: Scalar) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)
