"""Topic definitions (``topics.toml``) and their idempotent creation with aiokafka's admin client.

Usable alone (tests call :func:`ensure_topics` with their own prefix): existing topics
are left as they are, missing ones are created with the partitions and configs of
the file.
"""

from __future__ import annotations

import asyncio
import logging
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import for_code

from infra.errors import StackError
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
    settings: KafkaSettings, specs: list[TopicSpec], extra_prefix: str | None = None
) -> list[NewTopic]:
    """The topics to create: names prefixed, partitions defaulting to the setting, RF 1."""
    prefix = extra_prefix or ""
    return [
        NewTopic(
            name=prefix + settings.topic(spec.name),
            num_partitions=spec.partitions or settings.topic_partitions,
            replication_factor=1,
            topic_configs=dict(spec.config),
        )
        for spec in specs
    ]


def admin_client(settings: KafkaSettings, request_timeout_ms: int = 10_000) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap,
        client_id="aichat-stack",
        request_timeout_ms=request_timeout_ms,
    )


async def kafka_probe(settings: KafkaSettings, timeout_s: float = 3.0) -> tuple[bool, str]:
    """(healthy, detail): the broker answers metadata and lists at least one broker."""
    admin = admin_client(settings, request_timeout_ms=int(timeout_s * 1000))
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
        cluster = await asyncio.wait_for(admin.describe_cluster(), timeout_s)
    except Exception as exc:  # noqa: BLE001 - any failure means "not healthy", reported as detail
        text = str(exc) or f"no answer within {timeout_s:.0f}s"
        return False, text if type(exc).__name__ in text else f"{type(exc).__name__}: {text}"
    finally:
        await admin.close()
    brokers = cluster.get("brokers", [])
    if not brokers:
        return False, "no broker registered yet"
    return True, f"{len(brokers)} broker(s), controller {cluster.get('controller_id')}"


async def ensure_topics(
    settings: KafkaSettings,
    *,
    extra_prefix: str | None = None,
    deadline_s: float = 60.0,
) -> list[str]:
    """Create the missing topics of ``topics.toml``; return every full topic name (in file order)."""
    wanted = new_topics(settings, load_topic_specs(), extra_prefix)
    names = [t.name for t in wanted]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + deadline_s
    admin = admin_client(settings)
    await admin.start()
    try:
        while True:
            existing = set(await admin.list_topics())
            missing = [t for t in wanted if t.name not in existing]
            if not missing:
                return names
            response = await admin.create_topics(missing)
            retry = []
            for name, code, message in (e[:3] for e in response.topic_errors):
                if code in (0, _ALREADY_EXISTS):
                    if code == 0:
                        log.info("created topic %s", name)
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
