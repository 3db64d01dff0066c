"""The Kafka side of a backup: the positions it records, and the offsets a restore commits.

* :func:`kafka_point` reads, in this order, each consumer group's committed offsets and then
  the end offsets of its topics (so everything committed was produced before the ends
  were read), plus the ``documents`` topic's cleanup and replication settings;
* :func:`refuse_running` (with :func:`group_members`) names the running members of the
  groups a restore resets and refuses (Kafka would refuse the commit too, but only after
  the stores were overwritten);
* :func:`plan_group` turns a recorded group into :func:`infra.backup.manifest.plan_reset`'s
  offsets for the topics as they are now, and :func:`commit` commits them from outside the
  group, which Kafka accepts only while it has no members.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError

from infra.backup.manifest import (
    BackupError,
    GroupPoint,
    KafkaPoint,
    Offsets,
    ResetPlan,
    plan_reset,
)
from infra.groups import group_id, role_topics
from infra.kafka.topics import admin_client
from streams.config import KafkaSettings, WorkerSettings

TIMEOUT_S = 30.0
#: the documents topic's settings a manifest records (what protects the source of truth)
DOCUMENTS_CONFIG = ("cleanup.policy", "retention.ms", "retention.bytes", "min.insync.replicas",
                    "min.compaction.lag.ms", "unclean.leader.election.enable")
SHIPPER_ROLE = "shipper"


async def _partitions(admin: AIOKafkaAdminClient, topics: Sequence[str]) -> dict[str, list[int]]:
    """Partitions of the topics that exist (missing topics are left out)."""
    described = await admin.describe_topics(list(topics))
    return {t["topic"]: sorted(p["partition"] for p in t["partitions"]) for t in described
            if not t.get("error_code") and t["partitions"]}


def _by_topic(offsets: Mapping[TopicPartition, int]) -> Offsets:
    out: Offsets = {}
    for tp, offset in offsets.items():
        out.setdefault(tp.topic, {})[tp.partition] = offset
    return out


async def log_bounds(settings: KafkaSettings, topics: Sequence[str]) -> tuple[Offsets, Offsets]:
    """(log start offsets, end offsets) of every partition of ``topics`` (full names)."""
    admin = admin_client(settings)
    await asyncio.wait_for(admin.start(), TIMEOUT_S)
    try:
        partitions = await _partitions(admin, topics)
    finally:
        await admin.close()
    tps = [TopicPartition(t, p) for t, ps in partitions.items() for p in ps]
    if not tps:
        return {}, {}
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None,
                                enable_auto_commit=False)
    await asyncio.wait_for(consumer.start(), TIMEOUT_S)
    try:
        starts = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    return _by_topic(starts), _by_topic(ends)


async def _group_point(settings: KafkaSettings, admin: AIOKafkaAdminClient, group: str,
                       topics: set[str] | None) -> GroupPoint:
    """The group's committed offsets (on ``topics``, or all it has), then its topics' ends."""
    listed = await admin.list_consumer_group_offsets(group)
    committed = {tp: meta.offset for tp, meta in listed.items()
                 if meta.offset >= 0 and (topics is None or tp.topic in topics)}
    names = sorted(topics if topics is not None else {tp.topic for tp in committed})
    _, ends = await log_bounds(settings, names) if names else ({}, {})
    return GroupPoint(group=group, committed=_by_topic(committed), ends=ends)


async def _topic_config(admin: AIOKafkaAdminClient, topic: str) -> dict[str, str]:
    responses = await admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, topic, dict.fromkeys(DOCUMENTS_CONFIG))])
    config: dict[str, str] = {}
    for response in responses:
        for resource in response.to_object()["resources"]:
            for entry in resource["config_entries"]:
                if entry["config_names"] in DOCUMENTS_CONFIG and entry["config_value"] is not None:
                    config[entry["config_names"]] = str(entry["config_value"])
    (described,) = await admin.describe_topics([topic])
    factors = {len(p["replicas"]) for p in described["partitions"]}
    config["replication.factor"] = ",".join(str(f) for f in sorted(factors))
    return config


def ingest_group(settings: WorkerSettings, role: str) -> str:
    """The consumer group of the role's workers: the Faust app id, which for an index
    generation's ingest workers is a group of its own (streams/app.py; faust imported here,
    not by every ``aichat`` command)."""
    from streams.app import app_id

    return app_id(settings, role)


async def kafka_point(settings: WorkerSettings, role: str) -> KafkaPoint:
    """Where the ingest role's group and the shipper's group stand now (see the docstring)."""
    documents = settings.topic("documents")
    admin = admin_client(settings)
    await asyncio.wait_for(admin.start(), TIMEOUT_S)
    try:
        if documents not in await admin.list_topics():
            raise BackupError(f"topic {documents} does not exist: nothing was ever ingested "
                              f"with AICHAT_TOPIC_PREFIX={settings.topic_prefix!r}")
        ingest = await _group_point(settings, admin, ingest_group(settings, role),
                                    role_topics(settings, "ingest"))
        shipper = await _group_point(settings, admin, group_id(settings, SHIPPER_ROLE), None)
        config = await _topic_config(admin, documents)
    finally:
        await admin.close()
    return KafkaPoint(documents_topic=documents, documents_end_offsets=ingest.ends.get(documents, {}),
                      documents_config=config, groups={"ingest": ingest, "shipper": shipper})


async def group_members(settings: KafkaSettings, group: str) -> list[str]:
    """``client_id@host`` of each member of ``group`` now (empty: no worker of it runs)."""
    admin = admin_client(settings)
    await asyncio.wait_for(admin.start(), TIMEOUT_S)
    try:
        responses = await admin.describe_consumer_groups([group])
    finally:
        await admin.close()
    return [f"{m['client_id']}@{m['client_host'].lstrip('/')}" for r in responses
            for g in r.to_object()["groups"] if g["group"] == group for m in g["members"]]


def derived_topics(settings: KafkaSettings, purpose: str) -> frozenset[str]:
    """Topics of the group that the replay of ``documents`` derives again (ingest only)."""
    if purpose != "ingest":
        return frozenset()
    return frozenset(settings.topic(t) for t in ("chunks", "embeddings"))


async def plan_group(settings: KafkaSettings, purpose: str, point: GroupPoint) -> ResetPlan:
    """The offsets a restore commits for this recorded group now: the ingest topics for the
    ingest group (a ``pipeline`` group's ``queries`` stay as they are); for the shipper,
    every topic it recorded or has committed since (one it first shipped after the backup
    is read from its start, as the restored indices hold nothing of it)."""
    if purpose == "ingest":
        topics = role_topics(settings, "ingest")
    else:
        admin = admin_client(settings)
        await asyncio.wait_for(admin.start(), TIMEOUT_S)
        try:
            now = await admin.list_consumer_group_offsets(point.group)
        finally:
            await admin.close()
        topics = set(point.committed) | set(point.ends) | {tp.topic for tp in now}
    starts, ends = await log_bounds(settings, sorted(topics))
    return plan_reset(point, derived=derived_topics(settings, purpose), starts=starts, ends=ends)


async def commit(settings: KafkaSettings, plan: ResetPlan) -> None:
    """Commit the plan's offsets from outside its group (refused while it has members)."""
    if not plan.offsets:
        return
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=plan.group,
                                enable_auto_commit=False)
    await asyncio.wait_for(consumer.start(), TIMEOUT_S)
    try:
        offsets = {TopicPartition(t, p): o for (t, p), o in plan.offsets.items()}
        consumer.assign(list(offsets))
        await asyncio.wait_for(consumer.commit(offsets), TIMEOUT_S)
    except KafkaError as exc:
        raise BackupError(f"Kafka refused the offsets of group {plan.group} "
                          f"({type(exc).__name__}): a worker of it started meanwhile? Stop it "
                          "and run the restore again") from exc
    finally:
        await consumer.stop()


async def refuse_running(settings: KafkaSettings, groups: Sequence[str]) -> None:
    """Raise, naming them, when any of these groups has a running member."""
    running = {g: members for g in groups if (members := await group_members(settings, g))}
    if running:
        listed = "; ".join(f"{g}: {', '.join(m)}" for g, m in running.items())
        raise BackupError(f"workers are running ({listed}): stop them (the ingest workers for "
                          "Weaviate, the shipper for Elasticsearch) before a restore resets "
                          "their consumer groups; nothing was changed")
