"""A 3-broker KRaft cluster of the test's own, started and stopped by the stack's code.

It lives in its own stack dir on its own free ports, so it never touches the main stack
(9092) that other tests share: ``infra.stack.up``/``down`` with ``kafka_brokers=3`` start
and stop the nodes ``kafka-1`` … ``kafka-3`` (each its own process, pid file and ports);
:meth:`Cluster.kill9` SIGKILLs one node's process group by its pid file, and
:meth:`Cluster.restart` starts it again with ``stack.up(services=["kafka-N"])``.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from infra import stack
from infra.config import StackSettings, kafka_bootstrap_servers, kafka_node_names, service_ports
from infra.proc import group_members, port_is_free, read_pid, tail
from infra.service import ServiceStatus, service_paths

#: (replicas, in-sync replicas) of one partition
Replicas = tuple[tuple[int, ...], tuple[int, ...]]


def _free_base(avoid: set[int], span: int, tries: int = 200) -> int:
    """A port p such that p … p+span-1 are all free and none is a port of the main stack."""
    rng = random.Random()
    for _ in range(tries):
        base = rng.randrange(20_000, 30_000 - span, 2)
        ports = range(base, base + span)
        if not avoid.intersection(ports) and all(port_is_free("127.0.0.1", p) for p in ports):
            return base
    raise RuntimeError(f"no {span} consecutive free ports found in 20000-30000")


@dataclass
class Cluster:
    settings: StackSettings

    @classmethod
    def on_free_ports(cls, stack_dir: Path, brokers: int = 3) -> Cluster:
        main = StackSettings()  # the main stack's ports, from the environment: stay clear of them
        avoid = {p for ports in service_ports(main).values() for p in ports}
        base = _free_base(avoid, 2 * brokers)
        settings = StackSettings(
            stack_dir=stack_dir,
            kafka_bootstrap=f"127.0.0.1:{base}",
            kafka_brokers=brokers,
            kafka_heap="256m",
            up_timeout_s=180.0,
            down_timeout_s=20.0,
        )
        return cls(settings)

    @property
    def bootstrap(self) -> str:
        """Every node's broker: what the workers, gateway and test clients are given."""
        return kafka_bootstrap_servers(self.settings)

    @property
    def nodes(self) -> tuple[str, ...]:
        return kafka_node_names(self.settings)

    @staticmethod
    def node_of(broker_id: int) -> str:
        return f"kafka-{broker_id}"

    def up(self) -> list[ServiceStatus]:
        return stack.up(self.settings, services=["kafka"])

    def down(self) -> None:
        stack.down(self.settings, services=["kafka"])

    def status(self) -> list[ServiceStatus]:
        return [row for row in stack.status(self.settings) if row.name in self.nodes]

    def pid(self, node: str) -> int | None:
        return read_pid(service_paths(self.settings, node).pid_file)

    def kill9(self, node: str) -> None:
        """SIGKILL the node's whole process group (no controlled shutdown, no flush)."""
        pid = self.pid(node)
        assert pid is not None, f"{node} has no pid file"
        os.killpg(pid, signal.SIGKILL)
        deadline = time.monotonic() + 15
        while group_members(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not group_members(pid), f"{node} (pid {pid}) still runs after SIGKILL"

    def restart(self, node: str) -> ServiceStatus:
        """Start a (killed) node again the way ``aichat stack up`` does; returns when healthy."""
        (row,) = stack.up(self.settings, services=[node])
        return row

    def log_tails(self, lines: int = 15) -> str:
        return "\n".join(
            f"--- {node} ---\n" + "\n".join(tail(service_paths(self.settings, node).out_log, lines))
            for node in self.nodes
        )

    # -- what the cluster says ------------------------------------------------------------

    def _admin(self) -> AIOKafkaAdminClient:
        return AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, client_id="faults-test",
                                   request_timeout_ms=10_000)

    async def partitions(self, topics: list[str]) -> dict[tuple[str, int], Replicas]:
        """(replicas, ISR) of every partition of ``topics`` (full names)."""
        admin = self._admin()
        await admin.start()
        try:
            described = await admin.describe_topics(topics)
        finally:
            await admin.close()
        found: dict[tuple[str, int], Replicas] = {}
        for topic in described:
            if topic["error_code"] != 0:
                continue
            for p in topic["partitions"]:
                found[(topic["topic"], p["partition"])] = (
                    tuple(sorted(p["replicas"])), tuple(sorted(p["isr"])))
        return found

    async def leader(self, topic: str, partition: int = 0) -> int:
        admin = self._admin()
        await admin.start()
        try:
            (described,) = await admin.describe_topics([topic])
        finally:
            await admin.close()
        return int(next(p["leader"] for p in described["partitions"] if p["partition"] == partition))

    async def leader_moved_from(self, broker_id: int, topic: str, partition: int = 0,
                                timeout_s: float = 60.0) -> float:
        """Seconds until the partition has a leader other than ``broker_id`` (the cluster
        fenced the killed node and elected another replica)."""
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            try:
                if await self.leader(topic, partition) not in (broker_id, -1):
                    return time.monotonic() - started
            except Exception:  # noqa: BLE001 - the node asked may be the dead one: ask again
                pass
            await asyncio.sleep(0.2)
        raise AssertionError(f"{topic}-{partition} still led by {broker_id} after {timeout_s:.0f}s")

    async def topic_configs(self, topics: list[str], keys: list[str]) -> dict[str, dict[str, str]]:
        admin = self._admin()
        await admin.start()
        try:
            responses = await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, t, dict.fromkeys(keys)) for t in topics])
        finally:
            await admin.close()
        configs: dict[str, dict[str, str]] = {}
        for response in responses:
            for resource in response.to_object()["resources"]:
                assert resource["error_code"] == 0, resource
                configs[resource["resource_name"]] = {
                    e["config_names"]: e["config_value"] for e in resource["config_entries"]}
        return configs
