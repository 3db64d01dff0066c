"""Topic definitions (``topics.toml``) and their idempotent creation with aiokafka's admin client.

Usable alone (tests call :func:`ensure_topics` with their own prefix): existing topics
are left as they are, missing ones are created with the partitions and configs of
the file, and with as many replicas as the file's ``[replication]`` policy gives for
the cluster's brokers (:meth:`ReplicationPolicy.for_brokers`): RF 3 with
``min.insync.replicas=2`` on three brokers, RF 1 on the single-node stack.
"""

from __future__ import annotations

import asyncio
import logging
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError, for_code

from infra.errors import StackError
from infra.kafka.probing import probing
from streams.config import KafkaSettings

log = logging.getLogger(__name__)

TOPICS_FILE = Path(__file__).with_name("topics.toml")
_ALREADY_EXISTS = 36


@dataclass(frozen=True)
class TopicSpec:
    name: str
    key: str = ""
    partitions: int | None = None
    config: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Replication:
    """Replicas of each partition, and how many must have a write before acks=all returns."""

    factor: int
    min_insync: int


SINGLE_REPLICA = Replication(1, 1)


@dataclass(frozen=True)
class ReplicationPolicy:
    """``[replication]`` of ``topics.toml``: the numbers follow the cluster's size."""

    max_factor: int = 3
    min_insync_replicas: int = 2

    def for_brokers(self, brokers: int) -> Replication:
        """RF = brokers (at most ``max_factor``); min ISR = RF - 1 (at most the setting, at least 1)."""
        if brokers < 1:
            raise ValueError(f"a cluster has at least one broker, got {brokers}")
        factor = min(brokers, self.max_factor)
        return Replication(factor, max(1, min(self.min_insync_replicas, factor - 1)))


def load_replication_policy(path: Path = TOPICS_FILE) -> ReplicationPolicy:
    with open(path, "rb") as fh:
        table = tomllib.load(fh).get("replication", {})
    values = {k: table[k] for k in ("max_factor", "min_insync_replicas") if k in table}
    for key, value in values.items():
        if not isinstance(value, int) or value < 1:
            raise StackError(f"{path}: replication.{key} must be a positive integer")
    return ReplicationPolicy(**values)


def load_topic_specs(path: Path = TOPICS_FILE) -> list[TopicSpec]:
    """Parse ``[topics.<name>]`` tables; config values are strings as Kafka expects."""
    with open(path, "rb") as fh:
        data = tomllib.load(fh)
    specs = []
    for name, table in data.get("topics", {}).items():
        partitions = table.get("partitions")
        if partitions is not None and (not isinstance(partitions, int) or partitions < 1):
            raise StackError(f"{path}: topics.{name}.partitions must be a positive integer")
        config = {str(k): str(v) for k, v in table.get("config", {}).items()}
        specs.append(TopicSpec(name, str(table.get("key", "")), partitions, config))
    return specs


def new_topics(
    settings: KafkaSettings,
    specs: list[TopicSpec],
    extra_prefix: str | None = None,
    replication: Replication = SINGLE_REPLICA,
) -> list[NewTopic]:
    """The topics to create: names prefixed, partitions defaulting to the setting, the
    given replicas (``min.insync.replicas`` set only where there is more than one)."""
    prefix = extra_prefix or ""
    extra = {} if replication.factor == 1 else {"min.insync.replicas": str(replication.min_insync)}
    return [
        NewTopic(
            name=prefix + settings.topic(spec.name),
            num_partitions=spec.partitions or settings.topic_partitions,
            replication_factor=replication.factor,
            topic_configs={**extra, **spec.config},
        )
        for spec in specs
    ]


def admin_client(settings: KafkaSettings, request_timeout_ms: int = 10_000) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap,
        client_id="aichat-stack",
        request_timeout_ms=request_timeout_ms,
    )


def _failure(exc: BaseException, timeout_s: float) -> str:
    """A probe's detail for ``exc``: its type and message (a bare timeout says so)."""
    text = str(exc) or f"no answer within {timeout_s:.0f}s"
    return text if type(exc).__name__ in text else f"{type(exc).__name__}: {text}"


async def kafka_probe(settings: KafkaSettings, timeout_s: float = 3.0) -> tuple[bool, str]:
    """(healthy, detail): the broker answers metadata and lists at least one broker.

    A refused connection is an answer here, not an error: aiokafka's own ERROR lines about
    it are demoted (infra/kafka/probing.py)."""
    with probing():
        admin = admin_client(settings, request_timeout_ms=int(timeout_s * 1000))
        try:
            await asyncio.wait_for(admin.start(), timeout_s)
            cluster = await asyncio.wait_for(admin.describe_cluster(), timeout_s)
        except Exception as exc:  # noqa: BLE001 - any failure means "not healthy", reported as detail
            return False, _failure(exc, timeout_s)
        finally:
            await admin.close()
    brokers = cluster.get("brokers", [])
    if not brokers:
        return False, "no broker registered yet"
    return True, f"{len(brokers)} broker(s), controller {cluster.get('controller_id')}"


async def kafka_node_probe(
    host: str, port: int, node_id: int, timeout_s: float = 3.0
) -> tuple[bool, str]:
    """(healthy, detail) of one node of a cluster: it answers metadata on its own listener
    and lists itself among the brokers (registered and unfenced, i.e. caught up)."""
    with probing():
        client = AIOKafkaClient(
            bootstrap_servers=f"{host}:{port}",
            client_id="aichat-stack",
            request_timeout_ms=int(timeout_s * 1000),
        )
        try:
            await asyncio.wait_for(client.bootstrap(), timeout_s)
            ids = sorted(b.nodeId for b in client.cluster.brokers())
        except Exception as exc:  # noqa: BLE001 - any failure means "not healthy", reported as detail
            return False, _failure(exc, timeout_s)
        finally:
            await client.close()
    if not ids:
        return False, f"no answer from {host}:{port}"
    if node_id not in ids:
        return False, f"answers, but node {node_id} is not among the brokers {ids} yet"
    # (no controller id: a KRaft broker names a random broker there for old clients)
    return True, f"node {node_id} of brokers {ids}"


async def live_brokers(admin: AIOKafkaAdminClient) -> list[int]:
    """The ids of the brokers the cluster lists now (registered and unfenced)."""
    cluster = await admin.describe_cluster()
    return sorted(int(b["node_id"]) for b in cluster.get("brokers", []))


async def wait_for_brokers(settings: KafkaSettings, count: int, timeout_s: float) -> list[int]:
    """Poll until the cluster lists ``count`` brokers; raise :class:`StackError` after the timeout.

    Nodes still starting refuse connections meanwhile: expected, so not logged as errors."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    seen: list[int] = []
    with probing():
        admin = admin_client(settings)
        await admin.start()
        try:
            while True:
                try:
                    seen = await live_brokers(admin)
                except KafkaError as exc:
                    if not exc.retriable:
                        raise
                if len(seen) >= count:
                    return seen
                if loop.time() > deadline:
                    raise StackError(
                        f"only brokers {seen} of {count} registered after {timeout_s:.0f}s"
                    )
                await asyncio.sleep(1.0)
        finally:
            await admin.close()


async def ensure_topics(
    settings: KafkaSettings,
    *,
    extra_prefix: str | None = None,
    deadline_s: float = 60.0,
    brokers: int | None = None,
) -> list[str]:
    """Create the missing topics of ``topics.toml``; return every full topic name (in file order).

    Replicas follow ``brokers`` (the stack passes its node count), by default the number of
    brokers the cluster lists now.
    """
    specs = load_topic_specs()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + deadline_s
    admin = admin_client(settings)
    await admin.start()
    try:
        if brokers is None:
            brokers = len(await live_brokers(admin)) or 1
        replication = load_replication_policy().for_brokers(brokers)
        wanted = new_topics(settings, specs, extra_prefix, replication)
        names = [t.name for t in wanted]
        while True:
            try:
                existing = set(await admin.list_topics())
                missing = [t for t in wanted if t.name not in existing]
                if not missing:
                    return names
                response = await admin.create_topics(missing)
            except KafkaError as exc:  # e.g. the node asked has just gone away
                if not exc.retriable or loop.time() > deadline:
                    raise
                log.info("listing or creating topics failed (%s), retrying", exc)
                await asyncio.sleep(1.0)
                continue
            retry = []
            for name, code, message in (e[:3] for e in response.topic_errors):
                if code in (0, _ALREADY_EXISTS):
                    if code == 0:
                        log.info("created topic %s (replication factor %d, min.insync.replicas "
                                 "%d)", name, replication.factor, replication.min_insync)
                    continue
                error = for_code(code)
                if not error.retriable or loop.time() > deadline:
                    raise StackError(
                        f"cannot create topic {name}: {error.__name__} {message or ''}"
                    )
                retry.append(name)
            if not retry:
                return names
            log.info("topics %s not created yet (retriable), retrying", retry)
            await asyncio.sleep(1.0)
    finally:
        await admin.close()


async def delete_prefixed_topics(settings: KafkaSettings) -> list[str]:
    """Delete every topic that starts with ``settings.topic_prefix`` (tests, benchmarks).

    Refuses an empty prefix: that would be every topic of the cluster.
    """
    if not settings.topic_prefix:
        raise StackError("refusing to delete topics without a topic prefix")
    admin = admin_client(settings)
    await admin.start()
    try:
        topics = [t for t in await admin.list_topics() if t.startswith(settings.topic_prefix)]
        if topics:
            await admin.delete_topics(topics)
        return topics
    finally:
        await admin.close()
