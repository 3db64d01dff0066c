"""Settings of the local stack and the ports derived from them (pure functions).

Every port comes from the settings the clients use, so ``AICHAT_KAFKA_BOOTSTRAP``,
``AICHAT_ELASTIC_URL`` and ``AICHAT_WEAVIATE_HTTP_PORT`` move the server too:

    kafka           broker = port of the first bootstrap entry, controller = broker + 1
    elasticsearch   http = port of elastic_url, transport = http + 100
    weaviate        http, grpc from the settings; gossip/data/raft/raft-rpc = http + 1000..4000
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field

from streams.config import ElasticSettings, KafkaSettings, WeaviateSettings

KAFKA_VERSION = "4.1.1"
ES_VERSION = "8.19.4"
WEAVIATE_VERSION = "1.35.2"
SERVICES: tuple[str, ...] = ("kafka", "elasticsearch", "weaviate")
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost"})

_HEAP = r"^[1-9][0-9]*[kKmMgG]$"


class StackSettings(KafkaSettings, WeaviateSettings, ElasticSettings):
    """What ``aichat stack`` needs: the services' addresses plus where binaries and data live."""

    cache_dir: Path = Field(
        default_factory=lambda: Path.home() / ".cache" / "aichat",
        description="downloads, unzipped Elasticsearch, Kafka jars, Go caches, weaviate binary",
    )
    stack_dir: Path = Field(
        default_factory=lambda: Path.home() / ".local" / "share" / "aichat" / "stack",
        description="one subdirectory per service: data/, logs/, pid file, rendered config",
    )
    es_heap: str = Field("512m", pattern=_HEAP, description="Elasticsearch -Xms/-Xmx")
    kafka_heap: str = Field("512m", pattern=_HEAP, description="Kafka -Xmx")
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
    k, e, w = kafka_ports(settings), elastic_ports(settings), weaviate_ports(settings)
    return {
        "kafka": (k.broker, k.controller),
        "elasticsearch": (e.http, e.transport),
        "weaviate": (w.http, w.grpc, w.gossip, w.data, w.raft, w.raft_rpc),
    }


def service_hosts(settings: StackSettings) -> dict[str, str]:
    return {
        "kafka": kafka_ports(settings).host,
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
