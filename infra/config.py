"""Settings of the local stack and the ports derived from them (pure functions).

Every port comes from the settings the clients use, so ``AICHAT_KAFKA_BOOTSTRAP``,
``AICHAT_ELASTIC_URL`` and ``AICHAT_WEAVIATE_HTTP_PORT`` move the server too:

    kafka           broker = port of the first bootstrap entry, controller = broker + 1;
                    with AICHAT_KAFKA_BROKERS=3, node i (1..3) takes broker + 2(i-1) and the
                    controller port after it: 9092/9093, 9094/9095, 9096/9097
    elasticsearch   http = port of elastic_url, transport = http + 100
    weaviate        http, grpc from the settings; gossip/data/raft/raft-rpc = http + 1000..4000
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field

from streams.config import ElasticSettings, KafkaSettings, WeaviateSettings
from streams.endpoints import LOOPBACK_HOSTS as LOOPBACK_HOSTS

KAFKA_VERSION = "4.1.1"
ES_VERSION = "8.19.4"
WEAVIATE_VERSION = "1.35.2"
SERVICES: tuple[str, ...] = ("kafka", "elasticsearch", "weaviate")

_HEAP = r"^[1-9][0-9]*[kKmMgG]$"
MAX_KAFKA_NODES = 5
_KAFKA_NODE = re.compile(r"^kafka-([1-9])$")


class StackSettings(KafkaSettings, WeaviateSettings, ElasticSettings):
    """What ``aichat stack`` needs: the services' addresses plus where binaries and data live."""

    cache_dir: Path = Field(
        default_factory=lambda: Path.home() / ".cache" / "aichat",
        description="downloads, unzipped Elasticsearch, Kafka jars, Go caches, weaviate binary",
    )
    # stack_dir comes from WeaviateSettings: its clients find the local stack's API key there
    es_heap: str = Field("512m", pattern=_HEAP, description="Elasticsearch -Xms/-Xmx")
    kafka_heap: str = Field("512m", pattern=_HEAP, description="Kafka -Xmx (of each node)")
    kafka_brokers: int = Field(
        1,
        ge=1,
        le=MAX_KAFKA_NODES,
        description="KRaft nodes (broker and controller each, one static quorum): 1 as ever, "
        "or 3 for replication factor 3 with min.insync.replicas 2 (aichat stack up --brokers 3)",
    )
    weaviate_bin: Path | None = Field(None, description="use this weaviate-server binary")
    java_home: Path | None = Field(
        None,
        validation_alias=AliasChoices("java_home", "AICHAT_JAVA_HOME", "JAVA_HOME"),
        description="a JDK 17+; default: JAVA_HOME, then the lowest JDK >= 17 in /usr/lib/jvm",
    )
    service_user: str = Field(
        "aichat",
        pattern=r"^[a-z_][a-z0-9_-]*$",
        description="unprivileged user that runs Elasticsearch when the stack is started as root",
    )
    up_timeout_s: float = Field(180.0, gt=0, description="readiness deadline per service")
    down_timeout_s: float = Field(30.0, gt=0, description="SIGTERM grace before SIGKILL")

    def service_dir(self, service: str) -> Path:
        return self.stack_dir / service


@dataclass(frozen=True)
class KafkaPorts:
    host: str
    broker: int
    controller: int
    node_id: int = 1


@dataclass(frozen=True)
class ElasticPorts:
    host: str
    http: int
    transport: int


@dataclass(frozen=True)
class WeaviatePorts:
    host: str
    http: int
    grpc: int
    gossip: int
    data: int
    raft: int
    raft_rpc: int


def _check_port(port: int, what: str) -> int:
    if not 1 <= port <= 65535:
        raise ValueError(f"{what}: derived port {port} is outside 1..65535")
    return port


def kafka_ports(settings: KafkaSettings) -> KafkaPorts:
    first = settings.kafka_bootstrap.split(",")[0].strip()
    host, sep, port = first.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"AICHAT_KAFKA_BOOTSTRAP: expected host:port, got {first!r}")
    broker = _check_port(int(port), "AICHAT_KAFKA_BOOTSTRAP")
    return KafkaPorts(host or "127.0.0.1", broker, _check_port(broker + 1, "kafka controller"))


def kafka_node_names(settings: StackSettings) -> tuple[str, ...]:
    """The stack's Kafka services: ``kafka`` alone (as ever), or ``kafka-1`` … ``kafka-N``."""
    if settings.kafka_brokers == 1:
        return ("kafka",)
    return tuple(f"kafka-{i}" for i in range(1, settings.kafka_brokers + 1))


def kafka_node_id(name: str) -> int | None:
    """1 for ``kafka``, N for ``kafka-N``, None for any other service."""
    if name == "kafka":
        return 1
    match = _KAFKA_NODE.match(name)
    return int(match.group(1)) if match else None


def kafka_node_ports(settings: StackSettings) -> list[KafkaPorts]:
    """Every node's ports: node i binds broker + 2(i-1) and the controller port after it."""
    first = kafka_ports(settings)
    nodes = []
    for node_id in range(1, settings.kafka_brokers + 1):
        broker = _check_port(first.broker + 2 * (node_id - 1), f"kafka node {node_id} broker")
        controller = _check_port(broker + 1, f"kafka node {node_id} controller")
        nodes.append(KafkaPorts(first.host, broker, controller, node_id))
    return nodes


def kafka_bootstrap_servers(settings: StackSettings) -> str:
    """What clients of this stack put in ``AICHAT_KAFKA_BOOTSTRAP``: every node's broker,
    so a client started while one node is down still finds the cluster."""
    return ",".join(f"{p.host}:{p.broker}" for p in kafka_node_ports(settings))


def elastic_ports(settings: ElasticSettings) -> ElasticPorts:
    url = urlsplit(settings.elastic_url)
    http = url.port or (443 if url.scheme == "https" else 9200)
    return ElasticPorts(url.hostname or "127.0.0.1", http, _check_port(http + 100, "es transport"))


def weaviate_ports(settings: WeaviateSettings) -> WeaviatePorts:
    http = settings.weaviate_http_port
    return WeaviatePorts(
        host=settings.weaviate_host,
        http=http,
        grpc=settings.weaviate_grpc_port,
        gossip=_check_port(http + 1000, "weaviate gossip"),
        data=_check_port(http + 2000, "weaviate data"),
        raft=_check_port(http + 3000, "weaviate raft"),
        raft_rpc=_check_port(http + 4000, "weaviate raft rpc"),
    )


def service_ports(settings: StackSettings) -> dict[str, tuple[int, ...]]:
    """Every port each service binds, the first one being the one clients use."""
    e, w = elastic_ports(settings), weaviate_ports(settings)
    nodes = zip(kafka_node_names(settings), kafka_node_ports(settings), strict=True)
    return {
        **{name: (k.broker, k.controller) for name, k in nodes},
        "elasticsearch": (e.http, e.transport),
        "weaviate": (w.http, w.grpc, w.gossip, w.data, w.raft, w.raft_rpc),
    }


def service_hosts(settings: StackSettings) -> dict[str, str]:
    host = kafka_ports(settings).host
    return {
        **{name: host for name in kafka_node_names(settings)},
        "elasticsearch": elastic_ports(settings).host,
        "weaviate": settings.weaviate_host,
    }


def port_conflicts(ports: dict[str, tuple[int, ...]]) -> list[str]:
    """Human-readable clashes between the ports of different (or the same) services."""
    owner: dict[int, str] = {}
    problems = []
    for service, numbers in ports.items():
        for port in numbers:
            if port in owner:
                problems.append(f"port {port} is used by both {owner[port]} and {service}")
            else:
                owner[port] = service
    return problems


def kafka_bootstrap_problem(settings: StackSettings) -> str | None:
    """A bootstrap list that names other brokers than the cluster's nodes (None: fine).

    A single entry is always fine (the first node's address, from which the ports derive);
    a 1-node stack ignores any further entries, as it always has.
    """
    listed = [entry.strip() for entry in settings.kafka_bootstrap.split(",") if entry.strip()]
    if settings.kafka_brokers == 1 or len(listed) == 1:
        return None
    nodes = kafka_bootstrap_servers(settings).split(",")
    if sorted(listed) != sorted(nodes):
        return (
            f"AICHAT_KAFKA_BOOTSTRAP lists {','.join(listed)} but the {settings.kafka_brokers} "
            f"nodes listen on {','.join(nodes)}: give the first node only, or all of them"
        )
    return None
