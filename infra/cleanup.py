"""Drop everything one isolated run (a test system, a benchmark) created on the shared stack:
its topics, its Weaviate collections and its Elasticsearch indices and templates."""

from __future__ import annotations

import httpx

from infra.errors import StackError
from infra.kafka.topics import delete_prefixed_topics
from streams.config import WorkerSettings
from streams.endpoints import elastic_http_options, weaviate_http_options

DEFAULT_INDEX_PREFIX = "aichat-events"
DEFAULT_COLLECTION = "Chunk"


async def drop_isolated_state(settings: WorkerSettings) -> None:
    """Best effort on the real services; refuses the default topics and indices, and leaves
    the default collection alone (a run that only isolated its topics and indices)."""
    if settings.elastic_index_prefix == DEFAULT_INDEX_PREFIX or not settings.topic_prefix:
        raise StackError("refusing to drop the default topics or indices")
    await delete_prefixed_topics(settings)
    prefix = settings.elastic_index_prefix
    if settings.weaviate_collection != DEFAULT_COLLECTION:
        async with httpx.AsyncClient(**weaviate_http_options(settings), timeout=60) as weaviate:
            for collection in (settings.weaviate_collection, f"{settings.weaviate_collection}Docs"):
                await weaviate.delete(f"/v1/schema/{collection}")
    async with httpx.AsyncClient(**elastic_http_options(settings), timeout=60) as es:
        await es.delete(f"/{prefix}-*")
        for template in (prefix, f"{prefix}-logs", f"{prefix}-summaries"):
            await es.delete(f"/_index_template/{template}")
