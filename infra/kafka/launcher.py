"""Kafka from Maven Central jars: ``mvn dependency:copy-dependencies``, KRaft format, ``kafka.Kafka``.

One launcher per node. The single-node stack is the service ``kafka``, as it always was; with
``AICHAT_KAFKA_BROKERS=3`` the services ``kafka-1`` … ``kafka-3`` are three processes in one
static quorum, each with its own directory, pid file and ports, their storage formatted with
the same cluster id (derived from the stack directory and the node count, so every node
computes it alone and a node formatted for another cluster is refused).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import shutil
import uuid
from pathlib import Path

from aiokafka.errors import KafkaError

from infra.config import (
    KAFKA_VERSION,
    StackSettings,
    kafka_bootstrap_servers,
    kafka_node_ports,
)
from infra.errors import StackError
from infra.kafka import tools
from infra.kafka.topics import (
    ensure_topics,
    kafka_node_probe,
    kafka_probe,
    load_replication_policy,
    wait_for_brokers,
)
from infra.service import LaunchSpec, ServicePaths, base_env
from infra.system import file_lock, find_java_home, run_step

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
POM = HERE / "pom.xml"
PROPERTIES_TEMPLATE = HERE / "server.properties"
LOG4J2 = HERE / "log4j2.yaml"


def libs_dir(settings: StackSettings) -> Path:
    return settings.cache_dir / f"kafka-{KAFKA_VERSION}" / "libs"


def render_server_properties(
    settings: StackSettings, data_dir: Path, template: str | None = None, *, node_id: int = 1
) -> str:
    """``server.properties`` of KRaft node ``node_id`` of ``settings.kafka_brokers`` (pure)."""
    nodes = kafka_node_ports(settings)
    if not 1 <= node_id <= len(nodes):
        raise ValueError(f"node {node_id} is not one of the {len(nodes)} Kafka nodes")
    ports = nodes[node_id - 1]
    replication = load_replication_policy().for_brokers(len(nodes))
    values = {
        "node_id": str(node_id),
        "voters": ",".join(f"{n.node_id}@127.0.0.1:{n.controller}" for n in nodes),
        "host": "127.0.0.1",
        "port": str(ports.broker),
        "controller_port": str(ports.controller),
        "data_dir": str(data_dir),
        "partitions": str(settings.topic_partitions),
        "replication_factor": str(replication.factor),
        "min_insync_replicas": str(replication.min_insync),
    }
    text = PROPERTIES_TEMPLATE.read_text(encoding="utf-8") if template is None else template
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    if "{{" in text:
        raise ValueError(
            f"unfilled placeholder in server.properties: {text[text.index('{{') :][:40]}"
        )
    return text


def new_cluster_id() -> str:
    """22 characters of URL-safe base64 of a random UUID, as ``kafka-storage random-uuid``."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode("ascii").rstrip("=")


def cluster_id_for(settings: StackSettings) -> str:
    """The id every node of a multi-node stack is formatted with: the same for all of them,
    another one for another stack directory or another number of nodes."""
    seed = f"aichat-stack:{settings.stack_dir.resolve()}:nodes={settings.kafka_brokers}"
    raw = uuid.uuid5(uuid.NAMESPACE_URL, seed).bytes
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def formatted_cluster_id(data_dir: Path) -> str | None:
    """``cluster.id`` of a formatted storage directory (None: not formatted; "" if unreadable)."""
    try:
        text = (data_dir / "meta.properties").read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() == "cluster.id":
            return value.strip()
    return ""


class KafkaLauncher:
    """Node ``node_id``: ``kafka`` alone, or ``kafka-<node_id>`` of a multi-node stack."""

    def __init__(self, node_id: int = 1, *, clustered: bool = False) -> None:
        self.node_id = node_id
        self.clustered = clustered
        self.name = f"kafka-{node_id}" if clustered else "kafka"

    def marker(self, settings: StackSettings) -> str:
        if not self.clustered:
            return "kafka.Kafka"
        # three nodes run the same class: their config file tells them apart
        return f"kafka.Kafka {settings.service_dir(self.name) / 'config' / 'server.properties'}"

    def provision(self, settings: StackSettings) -> None:
        self._provision_libs(settings)
        try:  # the operators' bin/kafka-*.sh (infra/kafka/tools.py); the broker runs without
            tools.install(settings)
        except StackError as exc:
            log.warning("%s: Kafka's command-line tools not installed: %s", self.name, exc)

    def _provision_libs(self, settings: StackSettings) -> None:
        libs = libs_dir(settings)
        jar = libs / f"kafka_2.13-{KAFKA_VERSION}.jar"
        if jar.exists():
            return
        with file_lock(settings.cache_dir / "locks" / "kafka.lock"):
            if jar.exists():
                return
            log.info(
                "kafka: fetching Kafka %s jars from Maven Central into %s", KAFKA_VERSION, libs
            )
            partial = libs.with_name("libs.partial")
            shutil.rmtree(partial, ignore_errors=True)
            run_step(
                [
                    "mvn",
                    "-B",
                    "-q",
                    "-f",
                    str(POM),
                    "dependency:copy-dependencies",
                    "-DincludeScope=runtime",
                    f"-Dkafka.version={KAFKA_VERSION}",
                    f"-DoutputDirectory={partial}",
                ],
                what="kafka: mvn dependency:copy-dependencies",
            )
            shutil.rmtree(libs, ignore_errors=True)
            partial.rename(libs)

    def _check_clustered(self, settings: StackSettings) -> None:
        if self.clustered and not 1 <= self.node_id <= settings.kafka_brokers:
            raise StackError(
                f"{self.name}: the stack has {settings.kafka_brokers} Kafka node(s) "
                "(AICHAT_KAFKA_BROKERS)"
            )

    def prepare(self, settings: StackSettings, paths: ServicePaths) -> LaunchSpec:
        self._check_clustered(settings)
        java = find_java_home(settings.java_home) / "bin" / "java"
        properties = paths.config / "server.properties"
        properties.write_text(
            render_server_properties(settings, paths.data, node_id=self.node_id),
            encoding="utf-8",
        )
        classpath = f"{libs_dir(settings)}/*"
        env = base_env(paths.root)
        formatted = formatted_cluster_id(paths.data)
        if self.clustered and formatted is not None and formatted != cluster_id_for(settings):
            raise StackError(
                f"{self.name}: {paths.data} was formatted for another cluster (id {formatted}, "
                f"expected {cluster_id_for(settings)} for {settings.kafka_brokers} nodes in "
                f"{settings.stack_dir}); `aichat stack up --wipe` deletes it"
            )
        if formatted is None:
            cluster_id = cluster_id_for(settings) if self.clustered else new_cluster_id()
            log.info(
                "%s: formatting KRaft storage in %s (cluster id %s)",
                self.name, paths.data, cluster_id,
            )
            run_step(
                [
                    str(java),
                    "-cp",
                    classpath,
                    f"-Dlog4j2.configurationFile={LOG4J2}",
                    f"-Dkafka.logs.dir={paths.logs}",
                    "kafka.tools.StorageTool",
                    "format",
                    # one token: an id may start with "-", which would read as an option
                    f"--cluster-id={cluster_id}",
                    f"--config={properties}",
                ],
                what=f"{self.name}: format storage",
                env=env,
                log_path=paths.out_log,
            )
        argv = (
            str(java),
            f"-Xmx{settings.kafka_heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:+ExplicitGCInvokesConcurrent",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={LOG4J2}",
            f"-Dkafka.logs.dir={paths.logs}",
            "-cp",
            classpath,
            "kafka.Kafka",
            str(properties),
        )
        return LaunchSpec(argv=argv, env=env, cwd=paths.root)

    def probe(self, settings: StackSettings) -> tuple[bool, str]:
        if not self.clustered:
            return asyncio.run(kafka_probe(settings))
        if not 1 <= self.node_id <= settings.kafka_brokers:
            return False, f"not a node of this {settings.kafka_brokers}-node stack"
        ports = kafka_node_ports(settings)[self.node_id - 1]
        return asyncio.run(kafka_node_probe(ports.host, ports.broker, self.node_id))

    def initialise(self, settings: StackSettings) -> str:
        """Topics (once, by the first node, when the whole cluster is there)."""
        if self.clustered and self.node_id != 1:
            return f"node {self.node_id} of {settings.kafka_brokers}"
        brokers = settings.kafka_brokers
        clients = (
            settings.model_copy(update={"kafka_bootstrap": kafka_bootstrap_servers(settings)})
            if self.clustered
            else settings
        )
        try:
            if self.clustered:
                asyncio.run(wait_for_brokers(clients, brokers, settings.up_timeout_s))
            names = asyncio.run(ensure_topics(clients, brokers=brokers))
        except KafkaError as exc:
            raise StackError(f"creating topics failed: {type(exc).__name__}: {exc}") from exc
        if not self.clustered:
            return f"{len(names)} topics"
        replication = load_replication_policy().for_brokers(brokers)
        return (
            f"{len(names)} topics (replication factor {replication.factor}, "
            f"min.insync.replicas {replication.min_insync}); clients: {clients.kafka_bootstrap}"
        )
