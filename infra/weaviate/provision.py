"""A worker's Weaviate collections, created before its store connects (``aichat worker``).

:func:`ensure_collections` creates the chunk collection (``collection.json``) and the
document-state collection (``docs-collection.json``) when missing, and adds the
properties a newer definition has to an existing one (Weaviate adds properties, never
changes them). Workers may run it at the same moment: "already exists" is success. Once
the name is an alias of an index generation (``aichat reindex``) it creates nothing.

An unreachable Weaviate raises :class:`~streams.errors.DependencyUnavailable` (retriable),
so a worker started before Weaviate waits for it (streams/resources.py), as its store does.
"""

from __future__ import annotations

import logging
from typing import Any

import weaviate
from weaviate.exceptions import (
    UnexpectedStatusCodeError,
    WeaviateConnectionError,
    WeaviateUnsupportedFeatureError,
)

from infra.weaviate.schema import render_collection, render_docs_collection
from streams.config import WeaviateSettings
from streams.endpoints import weaviate_url
from streams.errors import DependencyUnavailable
from streams.vectorstore import add_property
from streams.weaviate_connect import weaviate_client

log = logging.getLogger(__name__)


async def ensure_collections(settings: WeaviateSettings) -> list[str]:
    """Create the chunk and document-state collections if missing; return those created."""
    client = weaviate_client(settings)
    try:
        await client.connect()
        return await create_missing(client, settings)
    except WeaviateConnectionError as exc:
        raise DependencyUnavailable(f"Weaviate at {weaviate_url(settings)}: {exc}") from exc
    finally:
        await client.close()


async def create_missing(client: weaviate.WeaviateAsyncClient, settings: WeaviateSettings) -> list[str]:
    """:func:`ensure_collections` on a connected client. A serving name that is an alias
    (``aichat reindex``) is left alone: its generation was made, and is provisioned, by its
    own workers (infra/generations.py)."""
    if await _is_alias(client, settings.weaviate_collection):
        return []
    created = []
    for definition in (render_collection(settings), render_docs_collection(settings)):
        collection = definition["class"]
        if await client.collections.exists(collection):
            await add_missing_properties(client, settings, collection, definition)
            continue
        try:
            await client.collections.create_from_dict(definition)
        except UnexpectedStatusCodeError as exc:
            if "already exists" not in str(exc):
                raise
            continue  # another worker was faster: it created the collection
        log.info("created Weaviate collection %s", collection)
        created.append(collection)
    return created


async def _is_alias(client: weaviate.WeaviateAsyncClient, name: str) -> bool:
    try:
        return await client.alias.get(alias_name=name) is not None
    except WeaviateUnsupportedFeatureError:  # a server before 1.32 has no aliases
        return False


async def add_missing_properties(
    client: weaviate.WeaviateAsyncClient, settings: WeaviateSettings, name: str,
    definition: dict[str, Any],
) -> None:
    """A newer definition's extra properties are added (Weaviate adds, never changes, them)."""
    config = await client.collections.use(name).config.get()
    present = {p.name for p in config.properties}
    for prop in definition["properties"]:
        if prop["name"] not in present:
            await add_property(settings, name, prop)
            log.warning("added property %s to Weaviate collection %s (existing objects have "
                        "it empty until re-indexed)", prop["name"], name)
