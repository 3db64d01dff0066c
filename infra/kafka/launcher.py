"""Kafka from Maven Central jars: ``mvn dependency:copy-dependencies``, KRaft format, ``kafka.Kafka``."""

from __future__ import annotations

import asyncio
import base64
import logging
import shutil
import uuid
from pathlib import Path

from aiokafka.errors import KafkaError

from infra.config import KAFKA_VERSION, StackSettings, kafka_ports
from infra.errors import StackError
from infra.kafka.topics import ensure_topics, kafka_probe
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
    settings: StackSettings, data_dir: Path, template: str | None = None
) -> str:
    """``server.properties`` for a single KRaft node on the settings' ports (pure)."""
    ports = kafka_ports(settings)
    values = {
        "host": "127.0.0.1",
        "port": str(ports.broker),
        "controller_port": str(ports.controller),
        "data_dir": str(data_dir),
        "partitions": str(settings.topic_partitions),
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


class KafkaLauncher:
    name = "kafka"

    def marker(self, settings: StackSettings) -> str:
        return "kafka.Kafka"

    def provision(self, settings: StackSettings) -> None:
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

    def prepare(self, settings: StackSettings, paths: ServicePaths) -> LaunchSpec:
        java = find_java_home(settings.java_home) / "bin" / "java"
        properties = paths.config / "server.properties"
        properties.write_text(render_server_properties(settings, paths.data), encoding="utf-8")
        classpath = f"{libs_dir(settings)}/*"
        env = base_env(paths.root)
        if not (paths.data / "meta.properties").exists():
            cluster_id = new_cluster_id()
            log.info(
                "kafka: formatting KRaft storage in %s (cluster id %s)", paths.data, cluster_id
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
                what="kafka: format storage",
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
        return asyncio.run(kafka_probe(settings))

    def initialise(self, settings: StackSettings) -> str:
        try:
            names = asyncio.run(ensure_topics(settings))
        except KafkaError as exc:
            raise StackError(f"creating topics failed: {type(exc).__name__}: {exc}") from exc
        return f"{len(names)} topics"
