"""The local stack's catalogue: every service it knows, its launcher and ports, and the
checks a request to start or stop some of them must pass.

The three core services (``kafka``, ``elasticsearch``, ``weaviate``) and the optional ones
(``redis``; ``prometheus``, ``alertmanager``, ``alert-webhook``), each with its launcher
(infra/*/launcher.py). Kafka's nodes of a multi-node stack (``kafka-1`` …) are names of their
own; :func:`expand` turns ``kafka`` into the configured nodes, and :func:`found_kafka` finds
the nodes of a stack dir started with another node count. infra/stack.py brings them up
and down.
"""

from __future__ import annotations

from collections.abc import Sequence

from infra.config import (
    LOOPBACK_HOSTS,
    MAX_KAFKA_NODES,
    SERVICES,
    StackSettings,
    kafka_bootstrap_problem,
    kafka_node_id,
    kafka_node_names,
    port_conflicts,
    service_hosts,
    service_ports,
)
from infra.elk.launcher import ElasticLauncher
from infra.errors import StackError
from infra.kafka.launcher import KafkaLauncher
from infra.prometheus.launcher import ALERTING_LAUNCHERS
from infra.prometheus.settings import alerting_ports
from infra.redis.launcher import RedisLauncher
from infra.service import Launcher, service_paths
from infra.weaviate.launcher import WeaviateLauncher

_REDIS = RedisLauncher()
LAUNCHERS: dict[str, Launcher] = {
    "kafka": KafkaLauncher(),
    "elasticsearch": ElasticLauncher(),
    "weaviate": WeaviateLauncher(),
    "redis": _REDIS,
    **ALERTING_LAUNCHERS,  # prometheus, alertmanager, alert-webhook (infra/prometheus/)
}
#: started only when asked for by name
OPTIONAL_SERVICES: tuple[str, ...] = ("redis", *ALERTING_LAUNCHERS)
KNOWN_SERVICES: tuple[str, ...] = (*SERVICES, *OPTIONAL_SERVICES)
#: the names of the nodes of a multi-node Kafka, valid in ``services`` besides KNOWN_SERVICES
KAFKA_NODE_NAMES: tuple[str, ...] = tuple(f"kafka-{i}" for i in range(1, MAX_KAFKA_NODES + 1))
_NODE_LAUNCHERS: dict[str, Launcher] = {
    name: KafkaLauncher(i, clustered=True) for i, name in enumerate(KAFKA_NODE_NAMES, start=1)
}


def launcher(name: str) -> Launcher:
    return LAUNCHERS.get(name) or _NODE_LAUNCHERS[name]


def ports(settings: StackSettings) -> dict[str, tuple[int, ...]]:
    return {**service_ports(settings), "redis": _REDIS.ports(settings), **alerting_ports(settings)}


def found_kafka(settings: StackSettings, *, with_data: bool = False) -> list[str]:
    """Kafka services of this stack dir outside the configured ones that have a pid file
    (or, ``with_data``, any directory): a stack started with another node count."""
    configured = set(kafka_node_names(settings))
    found = []
    for name in ("kafka", *KAFKA_NODE_NAMES):
        paths = service_paths(settings, name)
        if name not in configured and (
            paths.pid_file.exists() or (with_data and paths.data.exists())
        ):
            found.append(name)
    return found


def settings_for(settings: StackSettings, name: str, found: Sequence[str]) -> StackSettings:
    """The settings a found node was started with: as many nodes as the highest one found."""
    if name not in found:
        return settings
    if name == "kafka":
        return settings.model_copy(update={"kafka_brokers": 1})
    nodes = max(kafka_node_id(n) or 1 for n in found if n != "kafka")
    return settings.model_copy(update={"kafka_brokers": max(nodes, settings.kafka_brokers)})


def expand(settings: StackSettings, services: Sequence[str]) -> list[str]:
    """``kafka`` → the configured nodes; other names as given (each once, in order)."""
    names: list[str] = []
    for name in services:
        for one in kafka_node_names(settings) if name == "kafka" else (name,):
            if one not in names:
                names.append(one)
    return names


def check_names(services: Sequence[str]) -> None:
    unknown = sorted(set(services) - set(KNOWN_SERVICES) - set(KAFKA_NODE_NAMES))
    if unknown:
        raise StackError(f"unknown service(s) {unknown}; choose from {list(KNOWN_SERVICES)}")


def check_nodes(settings: StackSettings, names: Sequence[str]) -> None:
    nodes = kafka_node_names(settings)
    strangers = [n for n in names if kafka_node_id(n) is not None and n not in nodes]
    if strangers:
        raise StackError(
            f"{', '.join(strangers)}: not a node of this stack, whose Kafka is "
            f"{', '.join(nodes)} (AICHAT_KAFKA_BROKERS={settings.kafka_brokers})"
        )


def check_settings(settings: StackSettings, services: Sequence[str]) -> None:
    for name, host in service_hosts(settings).items():
        if name in services and host not in LOOPBACK_HOSTS:
            raise StackError(
                f"{name}: host {host!r} is not local; the stack only runs on 127.0.0.1"
            )
    problems = port_conflicts(ports(settings))
    if problems:
        raise StackError("port clash: " + "; ".join(problems))
    problem = kafka_bootstrap_problem(settings)
    if problem and any(kafka_node_id(n) is not None for n in services):
        raise StackError(problem)
