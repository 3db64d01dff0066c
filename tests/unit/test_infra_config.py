"""Rendering of the local stack's configs, port derivation and topic definitions (no processes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.config import (
    StackSettings,
    elastic_ports,
    kafka_ports,
    port_conflicts,
    service_ports,
    weaviate_ports,
)
from infra.elk.launcher import render_elasticsearch_yml
from infra.elk.templates import render_index_template, template_name
from infra.kafka.launcher import new_cluster_id, render_server_properties
from infra.kafka.topics import load_topic_specs, new_topics
from infra.service import ServiceStatus
from infra.system import find_java_home, java_major
from infra.weaviate.launcher import weaviate_argv, weaviate_env
from infra.weaviate.schema import render_collection
from streams.config import load_settings
from streams.errors import ConfigError

# the topics of ARCHITECTURE.md plus `indexed` (index acknowledgements, issue 3)
ARCHITECTURE_TOPICS = {"documents", "chunks", "embeddings", "indexed", "queries", "answers", "dlq", "logs", "conversations",
                       "feedback"}


def settings(**overrides: object) -> StackSettings:
    values: dict[str, object] = {
        "kafka_bootstrap": "127.0.0.1:9092",
        "elastic_url": "http://127.0.0.1:9200",
        "weaviate_host": "127.0.0.1",
        "weaviate_http_port": 8080,
        "weaviate_grpc_port": 50051,
        "topic_prefix": "",
        "topic_partitions": 4,
        "elastic_index_prefix": "aichat-events",
        "weaviate_collection": "Chunk",
    }
    values.update(overrides)
    return StackSettings(**values)  # type: ignore[arg-type]


def properties(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


def yml(text: str) -> dict[str, str]:
    pairs = (line.split(": ", 1) for line in text.splitlines() if line and not line.startswith("#"))
    return {key: value for key, value in pairs}


# ---- ports ------------------------------------------------------------------------------


def test_ports_derive_from_the_client_settings() -> None:
    s = settings(
        kafka_bootstrap="127.0.0.1:19092,127.0.0.1:29092",
        elastic_url="http://127.0.0.1:19200",
        weaviate_http_port=18080,
        weaviate_grpc_port=15051,
    )
    assert (kafka_ports(s).broker, kafka_ports(s).controller) == (19092, 19093)
    assert (elastic_ports(s).http, elastic_ports(s).transport) == (19200, 19300)
    w = weaviate_ports(s)
    assert (w.http, w.grpc, w.gossip, w.data, w.raft, w.raft_rpc) == (
        18080,
        15051,
        19080,
        20080,
        21080,
        22080,
    )


def test_default_ports_do_not_clash_and_a_clash_is_reported() -> None:
    assert service_ports(settings())["kafka"] == (9092, 9093)
    assert port_conflicts(service_ports(settings())) == []
    # weaviate gossip = http + 1000 = 9092 = the Kafka broker
    problems = port_conflicts(service_ports(settings(weaviate_http_port=8092)))
    assert problems == ["port 9092 is used by both kafka and weaviate"]


def test_two_stacks_on_adjacent_ports_do_not_share_a_port() -> None:
    first = set(p for ports in service_ports(settings()).values() for p in ports)
    second = settings(
        kafka_bootstrap="127.0.0.1:9094",
        elastic_url="http://127.0.0.1:9201",
        weaviate_http_port=8081,
        weaviate_grpc_port=50052,
    )
    assert first.isdisjoint(p for ports in service_ports(second).values() for p in ports)


def test_bad_bootstrap_is_rejected() -> None:
    with pytest.raises(ValueError, match="AICHAT_KAFKA_BOOTSTRAP"):
        kafka_ports(settings(kafka_bootstrap="localhost"))


# ---- settings ---------------------------------------------------------------------------


def test_stack_settings_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AICHAT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("AICHAT_STACK_DIR", str(tmp_path / "stack"))
    monkeypatch.setenv("AICHAT_WEAVIATE_BIN", "/opt/weaviate")
    monkeypatch.setenv("AICHAT_ES_HEAP", "1g")
    s = load_settings(StackSettings)
    assert s.cache_dir == tmp_path / "cache"
    assert s.service_dir("kafka") == tmp_path / "stack" / "kafka"
    assert s.weaviate_bin == Path("/opt/weaviate")
    assert s.es_heap == "1g"
    assert s.up_timeout_s == 180


def test_bad_heap_names_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AICHAT_KAFKA_HEAP", "lots")
    with pytest.raises(ConfigError, match="AICHAT_KAFKA_HEAP"):
        load_settings(StackSettings)


# ---- kafka ------------------------------------------------------------------------------


def test_server_properties_single_kraft_node(tmp_path: Path) -> None:
    text = render_server_properties(settings(kafka_bootstrap="127.0.0.1:19092"), tmp_path / "data")
    props = properties(text)
    assert "{{" not in text
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"
    assert props["log.dirs"] == str(tmp_path / "data")
    assert props["auto.create.topics.enable"] == "false"
    for key in (
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "share.coordinator.state.topic.replication.factor",
    ):
        assert props[key] == "1"


def test_unfilled_placeholder_fails(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unfilled"):
        render_server_properties(settings(), tmp_path, template="x={{nope}}\n")


def test_cluster_id_is_22_url_safe_chars() -> None:
    ids = {new_cluster_id() for _ in range(20)}
    assert len(ids) == 20
    assert all(len(i) == 22 and "=" not in i and "+" not in i and "/" not in i for i in ids)


def test_topics_file_covers_the_architecture() -> None:
    specs = {spec.name: spec for spec in load_topic_specs()}
    assert set(specs) == ARCHITECTURE_TOPICS
    compacted = {"documents", "conversations"}  # sources of truth, newest record per key
    assert all(specs[n].config["cleanup.policy"] == "compact" for n in compacted)
    assert all(
        specs[n].config["cleanup.policy"] == "delete" for n in ARCHITECTURE_TOPICS - compacted
    )
    assert all(isinstance(v, str) for spec in specs.values() for v in spec.config.values())


def test_new_topics_get_prefixes_and_default_partitions() -> None:
    topics = new_topics(
        settings(topic_prefix="staging.", topic_partitions=3), load_topic_specs(), "t1-"
    )
    assert {t.name for t in topics} == {f"t1-staging.{n}" for n in ARCHITECTURE_TOPICS}
    assert {t.num_partitions for t in topics} == {3}
    assert {t.replication_factor for t in topics} == {1}


# ---- elasticsearch ----------------------------------------------------------------------


def test_elasticsearch_yml(tmp_path: Path) -> None:
    conf = yml(
        render_elasticsearch_yml(
            settings(elastic_url="http://127.0.0.1:9201"), tmp_path / "d", tmp_path / "l"
        )
    )
    assert conf["http.port"] == "9201"
    assert conf["transport.port"] == "9301"
    assert conf["network.host"] == "127.0.0.1"
    assert conf["discovery.type"] == "single-node"
    assert conf["xpack.security.enabled"] == "false"
    assert (conf["path.data"], conf["path.logs"]) == (str(tmp_path / "d"), str(tmp_path / "l"))


def test_index_template_uses_the_prefix() -> None:
    s = settings(elastic_index_prefix="test-abc")
    body = render_index_template(s)
    assert body["index_patterns"] == ["test-abc-*"]
    assert template_name(s) == "test-abc"
    assert "{{" not in str(body)


# ---- weaviate ---------------------------------------------------------------------------


def test_weaviate_env_stays_on_loopback_and_derived_ports(tmp_path: Path) -> None:
    s = settings(weaviate_http_port=8081, weaviate_grpc_port=50052)
    env = weaviate_env(s, tmp_path / "data", tmp_path / "backups", api_key="k", cluster_password="p")
    assert env["PERSISTENCE_DATA_PATH"] == str(tmp_path / "data")
    assert env["BACKUP_FILESYSTEM_PATH"] == str(tmp_path / "backups")
    assert env["GRPC_PORT"] == "50052"
    assert env["CLUSTER_ADVERTISE_ADDR"] == env["CLUSTER_BIND_ADDR"] == "127.0.0.1"
    assert [
        env[k]
        for k in (
            "CLUSTER_GOSSIP_BIND_PORT",
            "CLUSTER_DATA_BIND_PORT",
            "RAFT_PORT",
            "RAFT_INTERNAL_RPC_PORT",
        )
    ] == [
        "9081",
        "10081",
        "11081",
        "12081",
    ]
    assert env["DEFAULT_VECTORIZER_MODULE"] == "none"
    assert env["ENABLE_MODULES"] == "backup-filesystem"
    assert weaviate_argv(s, Path("/bin/w")) == (
        "/bin/w",
        "--host",
        "127.0.0.1",
        "--port",
        "8081",
        "--scheme",
        "http",
    )


def test_collection_class_comes_from_settings() -> None:
    body = render_collection(settings(weaviate_collection="TestChunk"))
    assert body["class"] == "TestChunk"
    assert body["vectorizer"] == "none"
    assert "doc_id" in {p["name"] for p in body["properties"]}


# ---- small pieces -----------------------------------------------------------------------


def test_service_status_health() -> None:
    assert ServiceStatus("kafka", 1, (9092,), True, "").health == "up"
    assert ServiceStatus("kafka", 1, (9092,), False, "").health == "unhealthy"
    assert ServiceStatus("kafka", None, (9092,), False, "").health == "down"


def test_java_home_detection(tmp_path: Path) -> None:
    old, new = tmp_path / "jdk8", tmp_path / "jdk21"
    for home, version in ((old, "1.8.0_402"), (new, "21.0.2")):
        (home / "bin").mkdir(parents=True)
        (home / "bin" / "java").touch()
        (home / "release").write_text(f'IMPLEMENTOR="x"\nJAVA_VERSION="{version}"\n')
    assert java_major(old) == 8
    assert java_major(new) == 21
    assert find_java_home(new) == new
