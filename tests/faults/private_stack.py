"""A whole stack of one test's (or benchmark's) own: Kafka, Elasticsearch and Weaviate.

For scenarios that destroy things (Weaviate's data directory, a restore that overwrites
collections and resets consumer groups), the main stack that other tests share is off
limits. :class:`PrivateStack` starts the three services with the stack's own code
(``infra.stack.up``) in a stack dir of its own on free ports clear of the main stack's,
and stops them at the end (``infra.stack.down``); :meth:`PrivateStack.env` is what the
workers, the gateway and the ``aichat`` commands of the scenario are given;
:meth:`PrivateStack.destroy_weaviate` kills Weaviate (SIGKILL of its process group) and
deletes its data directory, leaving its backups (``<stack_dir>/weaviate/backups``).

:func:`system_on` builds a :class:`tests.support.RunningSystem` on it (isolated names, the
stack's addresses), :func:`start_again` starts its stopped processes again, and
:func:`publish` sends document events and waits for every ack.
"""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from infra import catalogue, stack
from infra.config import SERVICES, StackSettings, service_ports
from infra.proc import port_is_free, tail
from infra.service import ServiceStatus, service_paths
from infra.up import wait_ready
from ingest.sdk import DocumentPublisher
from schemas.events import DocumentEvent
from streams.config import KafkaSettings
from tests.faults.cluster import Cluster
from tests.support import RunningSystem, isolated_env


def _free_ports(avoid: set[int], offsets: Sequence[int], rng: random.Random, tries: int = 500) -> int:
    """A port p in 20000-30000 such that p + each offset is free and not in ``avoid``."""
    for _ in range(tries):
        base = rng.randrange(20_000, 30_000)
        ports = {base + o for o in offsets}
        if not ports & avoid and all(p <= 65_535 and port_is_free("127.0.0.1", p) for p in ports):
            avoid.update(ports)
            return base
    raise RuntimeError(f"no free ports at offsets {list(offsets)} in 20000-30000")


@dataclass
class PrivateStack:
    settings: StackSettings

    @classmethod
    def on_free_ports(cls, stack_dir: Path, *, es_heap: str = "384m", kafka_heap: str = "256m") -> PrivateStack:
        main = StackSettings()  # the main stack's ports, from the environment: stay clear of them
        avoid = {p for ports in service_ports(main).values() for p in ports}
        rng = random.Random()
        kafka = _free_ports(avoid, (0, 1), rng)
        elastic = _free_ports(avoid, (0, 100), rng)
        weaviate = _free_ports(avoid, (0, 1000, 2000, 3000, 4000), rng)
        grpc = _free_ports(avoid, (0,), rng)
        return cls(StackSettings(
            stack_dir=stack_dir, kafka_bootstrap=f"127.0.0.1:{kafka}",
            elastic_url=f"http://127.0.0.1:{elastic}", weaviate_http_port=weaviate,
            weaviate_grpc_port=grpc, es_heap=es_heap, kafka_heap=kafka_heap,
            up_timeout_s=180.0, down_timeout_s=20.0))

    def env(self) -> dict[str, str]:
        s = self.settings
        return {"AICHAT_KAFKA_BOOTSTRAP": s.kafka_bootstrap, "AICHAT_ELASTIC_URL": s.elastic_url,
                "AICHAT_WEAVIATE_HTTP_PORT": str(s.weaviate_http_port),
                "AICHAT_WEAVIATE_GRPC_PORT": str(s.weaviate_grpc_port),
                "AICHAT_STACK_DIR": str(s.stack_dir)}

    def up(self, services: Sequence[str] = SERVICES) -> list[ServiceStatus]:
        return stack.up(self.settings, services=services)

    def down(self) -> None:
        stack.down(self.settings)

    def probe(self, service: str) -> tuple[bool, str]:
        return catalogue.LAUNCHERS[service].probe(self.settings)

    def kill9(self, service: str) -> None:
        """SIGKILL the service's process group (no shutdown, no flush) and wait until it is gone."""
        Cluster(self.settings).kill9(service)  # the fault suite's kill, by the service's pid file
        service_paths(self.settings, service).pid_file.unlink(missing_ok=True)

    def destroy_weaviate(self) -> Path:
        """Kill Weaviate and delete its data directory (its backups stay); returns the directory."""
        data = service_paths(self.settings, "weaviate").data
        self.kill9("weaviate")
        shutil.rmtree(data)
        return data

    def log_tails(self, lines: int = 15) -> str:
        return "\n".join(f"--- {name} ---\n" + "\n".join(tail(service_paths(self.settings, name).out_log, lines))
                         for name in SERVICES)


def system_on(private: PrivateStack, unique: str, tmp: Path, **env: str) -> RunningSystem:
    """Workers and gateway of a test system (isolated names) on the private stack."""
    logs = tmp / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    return RunningSystem({**isolated_env(unique, tmp), **private.env(), "AICHAT_LOG_LEVEL": "WARNING",
                          **env}, logs)


def start_again(system: RunningSystem, timeout_s: float = 180.0) -> None:
    """Start the system's stopped processes again (same ports, logs appended); wait until ready."""
    env = {**os.environ, **system.env}
    for child in system.children:
        child.start(env=env)
    for child in system.children:
        wait_ready(child, timeout_s=timeout_s)


async def publish(settings: KafkaSettings, events: Iterable[DocumentEvent]) -> list[DocumentEvent]:
    """Send the events in order; every one acknowledged by the broker, or an exception."""
    sent = []
    async with DocumentPublisher(settings) as publisher:
        async for delivery in publisher.publish_many(events):
            if delivery.error is not None:
                raise delivery.error
            sent.append(delivery.event)
    return sent
