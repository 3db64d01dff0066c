"""The collection definitions (REST schema format) and the stack's creation of the chunk collection.

``collection.json`` is the chunks (``<collection>``), ``docs-collection.json`` the indexer's
record of each document beside them (``<collection>Docs``, streams/docstate.py). A worker
creates both, and adds a newer definition's properties, through infra/weaviate/provision.py.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import httpx

from infra.errors import StackError
from streams.config import WeaviateSettings
from streams.docstate import docs_collection_name
from streams.endpoints import weaviate_headers, weaviate_http_options, weaviate_url

log = logging.getLogger(__name__)

COLLECTION_FILE = Path(__file__).with_name("collection.json")
DOCS_COLLECTION_FILE = Path(__file__).with_name("docs-collection.json")
__all__ = ["ensure_collection", "render_collection", "render_docs_collection", "weaviate_headers",
           "weaviate_url"]


def render_collection(settings: WeaviateSettings, text: str | None = None) -> dict[str, Any]:
    """The class definition with ``class`` set to ``weaviate_collection`` (pure)."""
    raw = COLLECTION_FILE.read_text(encoding="utf-8") if text is None else text
    body: dict[str, Any] = json.loads(raw)
    body["class"] = settings.weaviate_collection
    return body


def render_docs_collection(settings: WeaviateSettings) -> dict[str, Any]:
    """The document-state class definition, ``class`` = ``<weaviate_collection>Docs`` (pure)."""
    body: dict[str, Any] = json.loads(DOCS_COLLECTION_FILE.read_text(encoding="utf-8"))
    body["class"] = docs_collection_name(settings.weaviate_collection)
    return body


def ensure_collection(settings: WeaviateSettings, *, timeout_s: float = 30.0) -> bool:
    """Create the collection unless ``GET /v1/schema/<class>`` finds it; True if created."""
    name = settings.weaviate_collection
    options = weaviate_http_options(settings)
    base = options["base_url"]
    try:
        with httpx.Client(**options, timeout=timeout_s) as client:
            found = client.get(f"/v1/schema/{name}")
            if found.status_code == 200:
                return False
            if found.status_code != 404:
                raise StackError(
                    f"GET /v1/schema/{name}: HTTP {found.status_code} {found.text[:300]}"
                )
            created = client.post("/v1/schema", json=render_collection(settings))
            if created.status_code == 422 and "already exists" in created.text:
                return False  # created concurrently
            if created.status_code != 200:
                raise StackError(
                    f"cannot create collection {name}: HTTP {created.status_code} {created.text[:500]}"
                )
    except httpx.HTTPError as exc:
        raise StackError(f"weaviate at {base} unreachable: {exc}") from exc
    log.info("created Weaviate collection %s", name)
    return True
