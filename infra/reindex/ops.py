"""What ``aichat reindex`` does on Weaviate and Kafka (the decisions are infra/reindex.py's).

* A generation's collections are created from the same definitions as every chunk and
  document-state collection (infra/weaviate/schema.py), the chunk collection's description
  carrying the generation's spec (infra/generations.py).
* Its pipeline's Kafka state: the backlog of its group on ``documents``, ``chunks.<name>``
  and ``embeddings.<name>`` (log end minus committed offset, as streams/lag.py measures it)
  and the group's members; a fresh generation's group is reset to the beginning of
  ``documents`` (infra/rebuild.py), whatever a dropped generation of the same name left.
* The alias moves with one ``PUT /v1/aliases/<name>`` (atomic in Weaviate). Replacing a real
  collection by the alias takes a delete and a create: for those few milliseconds the name
  answers nothing, which the store's search waits out (streams/vectorstore.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer

from infra.errors import StackError
from infra.generations import Generation, class_schema, spec_settings
from infra.kafka.topics import admin_client, ensure_topics
from infra.rebuild import reset_group, topic_partitions
from infra.reindex.plan import Pipeline, SwitchAction
from infra.weaviate.schema import render_collection, render_docs_collection
from streams.app import app_id
from streams.config import PIPELINE_TOPICS, WorkerSettings
from streams.docstate import docs_collection_name

log = logging.getLogger(__name__)

TIMEOUT_S = 15.0


def generation_worker_settings(settings: WorkerSettings, spec: Generation) -> WorkerSettings:
    """The settings of ``spec``'s ingest workers, as :func:`infra.generations.generation_settings`
    gives them from their environment (:meth:`Generation.env`)."""
    return settings.model_copy(update={"index_generation": spec.collection,
                                       "weaviate_collection": spec.collection, **spec.settings})


def new_generation(settings: WorkerSettings, name: str, replaces: str | None) -> Generation:
    """The spec of a generation ``name`` made with ``settings`` for the serving name."""
    return Generation(collection=name, alias=settings.weaviate_collection, replaces=replaces,
                      settings=spec_settings(settings),
                      created_at=datetime.now(UTC).isoformat(timespec="milliseconds"))


async def taken(http: httpx.AsyncClient, name: str) -> bool:
    """Whether ``name`` or its ``Docs`` twin is a collection or an alias already."""
    for each in (name, docs_collection_name(name)):
        if (await http.get(f"/v1/aliases/{each}")).status_code == 200 or await class_schema(http, each):
            return True
    return False


async def create_collections(http: httpx.AsyncClient, settings: WorkerSettings, spec: Generation) -> None:
    """The generation's chunk collection (its description with the spec) and document states."""
    gen = generation_worker_settings(settings, spec)
    chunks = render_collection(gen)
    chunks["description"] = spec.describe(str(chunks.get("description") or ""))
    for definition in (chunks, render_docs_collection(gen)):
        response = await http.post("/v1/schema", json=definition)
        if response.status_code != 200:
            raise StackError(f"cannot create collection {definition['class']}: HTTP "
                             f"{response.status_code} {response.text[:300]}")
        log.info("created Weaviate collection %s", definition["class"])


async def prepare_pipeline(settings: WorkerSettings, spec: Generation, *, fresh: bool) -> int:
    """Create the generation's topics; a ``fresh`` one's group starts at the beginning of
    ``documents``. Returns the records of ``documents`` it will read (0 when not reset)."""
    gen = generation_worker_settings(settings, spec)
    await ensure_topics(gen)
    if not fresh:
        return 0
    return await reset_group(gen, app_id(gen, "ingest"))


async def pipeline_state(settings: WorkerSettings, spec: Generation) -> Pipeline:
    gen = generation_worker_settings(settings, spec)
    return await group_state(gen, app_id(gen, "ingest"), ["documents", *PIPELINE_TOPICS])


async def group_state(settings: WorkerSettings, group: str, bases: list[str]) -> Pipeline:
    """The backlog of ``group`` on these topics and its member count."""
    names = {base: settings.topic(base) for base in bases}
    partitions = [tp for tps in (await topic_partitions(settings, names)).values() for tp in tps]
    admin = admin_client(settings)
    await asyncio.wait_for(admin.start(), TIMEOUT_S)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None,
                                enable_auto_commit=False)
    try:
        await asyncio.wait_for(consumer.start(), TIMEOUT_S)
        committed = await admin.list_consumer_group_offsets(group, partitions=partitions)
        described = await admin.describe_consumer_groups([group])
        members = sum(len(g[5]) for response in described for g in response.groups if g[1] == group)
        if not partitions:
            return Pipeline(group, {}, members)
        start = await consumer.beginning_offsets(partitions)
        end = await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()
        await admin.close()
    lag: dict[str, int] = {}
    for tp in partitions:
        meta = committed.get(tp)
        position = meta.offset if meta is not None and meta.offset >= 0 else start[tp]
        lag[tp.topic] = lag.get(tp.topic, 0) + max(0, end[tp] - position)
    return Pipeline(group, lag, members)


async def collection_model(http: httpx.AsyncClient, name: str) -> str | None:
    """The embedding model of the vectors in collection (or alias) ``name``; None when empty."""
    response = await http.get("/v1/objects", params={"class": name, "limit": 1})
    if response.status_code != 200:
        return None
    objects = response.json().get("objects") or []
    return str(objects[0]["properties"].get("model") or "") if objects else None


async def count(http: httpx.AsyncClient, name: str, status: str | None = None) -> int | None:
    """Objects in collection ``name`` (with ``status``, for document states); None if missing."""
    where = f'(where: {{path: ["status"], operator: Equal, valueText: "{status}"}})' if status else ""
    response = await http.post("/v1/graphql", json={"query": f"{{Aggregate {{{name}{where} {{meta {{count}}}}}}}}"})
    body: dict[str, Any] = response.json() if response.status_code == 200 else {}
    rows = (body.get("data") or {}).get("Aggregate", {}).get(name) if not body.get("errors") else None
    return int(rows[0]["meta"]["count"]) if rows else None


async def move_alias(http: httpx.AsyncClient, alias: str, target: str, action: SwitchAction) -> float:
    """Point ``alias`` at ``target``; returns for how many seconds the serving name answered
    from neither collection (0 for ``create`` and for ``update``, which is atomic; the gap
    between deleting the real collection and creating the alias for ``replace``)."""
    gap = 0.0
    if action == "update":
        response = await http.put(f"/v1/aliases/{alias}", json={"class": target})
    else:
        if action == "replace":
            _deleted(await http.delete(f"/v1/schema/{alias}"), alias)
            started = time.perf_counter()  # from here on the name answers nothing
        response = await http.post("/v1/aliases", json={"alias": alias, "class": target})
        if action == "replace":
            gap = time.perf_counter() - started
            _deleted(await http.delete(f"/v1/schema/{docs_collection_name(alias)}"), docs_collection_name(alias))
    if response.status_code != 200:
        raise StackError(f"cannot point alias {alias} at {target}: HTTP {response.status_code} "
                         f"{response.text[:300]}")
    log.info("alias %s now points at %s (%s)", alias, target, action)
    return gap


def _deleted(response: httpx.Response, name: str) -> None:
    if response.status_code >= 300 and response.status_code != 404:
        raise StackError(f"cannot delete collection {name}: HTTP {response.status_code} {response.text[:300]}")


async def drop_generation(http: httpx.AsyncClient, settings: WorkerSettings, spec: Generation) -> list[str]:
    """Delete the generation's collections and its own topics; what was deleted."""
    gone = []
    for name in (spec.collection, docs_collection_name(spec.collection)):
        _deleted(await http.delete(f"/v1/schema/{name}"), name)
        gone.append(name)
    gen = generation_worker_settings(settings, spec)
    topics = [gen.topic(base) for base in PIPELINE_TOPICS]
    admin = admin_client(settings)
    await asyncio.wait_for(admin.start(), TIMEOUT_S)
    try:
        present = set(await admin.list_topics())
        doomed = [t for t in topics if t in present]
        if doomed:
            await admin.delete_topics(doomed)
    finally:
        await admin.close()
    return gone + doomed

