"""``aichat rebuild``: rebuild the vector index by replaying the ``documents`` topic.

Weaviate holds only what the pipeline derived from ``documents`` (the compacted source
of truth), so an index is rebuilt by dropping it and letting the pipeline read the
topic again from its beginning:

1. refuse while a worker of the role's consumer group is running (Kafka itself refuses
   an offset commit from outside a group that has members);
2. delete the chunk collection and its document-state collection;
3. commit the group's offsets: ``documents`` at its beginning, ``chunks`` and
   ``embeddings`` at their ends (what is still in flight there was derived from the old
   index and is derived again from ``documents``).

The next worker of the role re-creates the collections and re-indexes every retained
version; versions still win over arrival order.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from infra.errors import StackError
from infra.kafka.topics import admin_client
from streams.agents import ROLES
from streams.config import WorkerSettings, load_settings
from streams.endpoints import weaviate_http_options

log = logging.getLogger(__name__)

#: roles whose group consumes ``documents`` (they run the chunker)
INGESTING_ROLES = sorted(role for role, agents in ROLES.items() if "chunker" in agents)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "rebuild", help="drop the vector index and re-index it from the documents topic"
    )
    parser.add_argument("--role", choices=INGESTING_ROLES, default="ingest",
                        help="the worker role whose consumer group re-reads documents "
                        "(`aichat up` runs ingest; pipeline for a single all-in-one worker)")
    parser.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    settings = load_settings(WorkerSettings)
    collection = settings.weaviate_collection
    if not args.yes:
        answer = input(f"Delete Weaviate collections {collection} and {collection}Docs and "
                       f"re-index from {settings.topic('documents')}? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing changed")
            return 1
    try:
        offsets = asyncio.run(rebuild(settings, args.role))
    except StackError as exc:
        print(f"aichat rebuild: {exc}", file=sys.stderr)
        return 1
    print(f"dropped {collection} and {collection}Docs; group {group_id(settings, args.role)} "
          f"will re-read {offsets} records of documents: start `aichat worker --role {args.role}` "
          f"(or `aichat up`)")
    return 0


def group_id(settings: WorkerSettings, role: str) -> str:
    return f"{settings.topic_prefix}aichat-{role}"  # the Faust app id (streams/app.py)


async def rebuild(settings: WorkerSettings, role: str) -> int:
    """Reset the role's group first (it fails while workers run), then drop the index.
    Returns how many records of ``documents`` the group will read again."""
    pending = await reset_group(settings, group_id(settings, role))
    await drop_collections(settings)
    return pending


async def reset_group(settings: WorkerSettings, group: str) -> int:
    names = {base: settings.topic(base) for base in ("documents", "chunks", "embeddings")}
    partitions = await topic_partitions(settings, names)
    if not partitions["documents"]:
        raise StackError(f"topic {names['documents']} does not exist")
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=group,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([tp for tps in partitions.values() for tp in tps])
        start = await consumer.beginning_offsets(partitions["documents"])
        end = await consumer.end_offsets([*partitions["chunks"], *partitions["embeddings"]])
        try:
            await consumer.commit({**start, **end})
        except KafkaError as exc:
            raise StackError(f"Kafka refused to reset group {group} ({type(exc).__name__}): "
                             f"stop its workers first") from exc
        total_end = await consumer.end_offsets(partitions["documents"])
        return sum(total_end[tp] - start[tp] for tp in start)
    finally:
        await consumer.stop()


async def topic_partitions(settings: WorkerSettings, names: dict[str, str]) -> dict[str, list[TopicPartition]]:
    admin = admin_client(settings)
    await admin.start()
    try:
        described = await admin.describe_topics(list(names.values()))
    finally:
        await admin.close()
    by_name = {t["topic"]: sorted(p["partition"] for p in t["partitions"]) for t in described
               if not t.get("error_code")}
    return {base: [TopicPartition(name, p) for p in by_name.get(name, [])] for base, name in names.items()}


async def drop_collections(settings: WorkerSettings) -> None:
    async with httpx.AsyncClient(**weaviate_http_options(settings), timeout=60) as http:
        for name in (settings.weaviate_collection, f"{settings.weaviate_collection}Docs"):
            response = await http.delete(f"/v1/schema/{name}")
            if response.status_code >= 300 and response.status_code != 404:
                raise StackError(f"Weaviate refused to delete {name}: HTTP {response.status_code} "
                                 f"{response.text[:200]}")
            log.info("deleted Weaviate collection %s", name)
