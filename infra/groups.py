"""Consumer groups of the worker roles, and the move from one ``pipeline`` group to two.

Each role is one Faust app id, so one consumer group: ``<prefix>aichat-<role>``
(streams/app.py). ``aichat up`` used to run one ``pipeline`` worker (chunker,
embedder, indexer and answerer in one group); it now runs an ``ingest`` worker and
an ``answer`` worker, two new groups. A group that never committed starts at the
beginning of its topics (``auto_offset_reset="earliest"``), which would be a
surprise on the first start after the upgrade: ``ingest`` would re-chunk and
re-embed every retained document version, ``answer`` would walk through every
retained old query.

:func:`adopt_offsets` avoids that: for each new group that has no committed offset
at all, it commits the old group's offsets on the topics the new role consumes, so
both carry on where ``pipeline`` stopped. It never touches a group that already
has history, nor the old group itself. The reverse move (back to ``pipeline``) is
not automatic: the old group resumes from its own, older offsets and replays what
the two roles did meanwhile — idempotently (deterministic chunk ids, versions win),
but it costs a re-embedding of those documents.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from infra.kafka.topics import admin_client
from streams.agents import ROLES
from streams.config import KafkaSettings

log = logging.getLogger(__name__)

#: the topic each agent consumes (the shipper, which reads every topic, has a group of its own)
CONSUMES = {"chunker": "documents", "embedder": "chunks", "indexer": "embeddings", "answerer": "queries"}
TIMEOUT_S = 15.0


def group_id(settings: KafkaSettings, role: str) -> str:
    """The consumer group of a role: the Faust app id (streams/app.py)."""
    return f"{settings.topic_prefix}aichat-{role}"


def role_topics(settings: KafkaSettings, role: str) -> set[str]:
    return {settings.topic(CONSUMES[agent]) for agent in ROLES[role] if agent in CONSUMES}


async def adopt_offsets(
    settings: KafkaSettings, source: str = "pipeline", targets: Sequence[str] = ("ingest", "answer")
) -> dict[str, int]:
    """Give each target group without history the source group's committed offsets on its
    topics. Returns ``{target group: partitions adopted}`` for the groups it committed."""
    admin = admin_client(settings)
    await asyncio.wait_for(admin.start(), TIMEOUT_S)
    try:
        old = await admin.list_consumer_group_offsets(group_id(settings, source))
        old_offsets = {tp: meta.offset for tp, meta in old.items() if meta.offset >= 0}
        if not old_offsets:
            return {}
        adopted: dict[str, int] = {}
        for target in targets:
            group = group_id(settings, target)
            if any(meta.offset >= 0 for meta in (await admin.list_consumer_group_offsets(group)).values()):
                continue  # it has a history of its own
            topics = role_topics(settings, target)
            wanted = {tp: offset for tp, offset in old_offsets.items() if tp.topic in topics}
            if wanted:
                await _commit(settings, group, wanted)
                adopted[group] = len(wanted)
                log.info("group %s starts at the offsets of %s on %d partitions", group,
                         group_id(settings, source), len(wanted))
        return adopted
    finally:
        await admin.close()


async def _commit(settings: KafkaSettings, group: str, offsets: dict[TopicPartition, int]) -> None:
    """Commit from outside the group (Kafka accepts it while the group has no members)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=group,
                                enable_auto_commit=False)
    await asyncio.wait_for(consumer.start(), TIMEOUT_S)
    try:
        consumer.assign(list(offsets))
        await asyncio.wait_for(consumer.commit(offsets), TIMEOUT_S)
    except KafkaError as exc:
        raise RuntimeError(f"Kafka refused the offsets of group {group} ({type(exc).__name__}: {exc}); "
                           "is a worker of that role already running?") from exc
    finally:
        await consumer.stop()
