"""A multi-node Kafka in the local stack: node ports, server.properties of each node, the
replication that follows the node count, the shared cluster id (no processes)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from infra import cli, stack
from infra.config import (
    StackSettings,
    kafka_bootstrap_problem,
    kafka_bootstrap_servers,
    kafka_node_id,
    kafka_node_names,
    kafka_node_ports,
    port_conflicts,
    service_ports,
)
from infra.errors import StackError
from infra.kafka.launcher import (
    KafkaLauncher,
    cluster_id_for,
    formatted_cluster_id,
    render_server_properties,
)
from infra.kafka.topics import (
    SINGLE_REPLICA,
    Replication,
    ReplicationPolicy,
    load_replication_policy,
    load_topic_specs,
    new_topics,
)
from infra.service import ServiceStatus
from streams.config import load_settings
from streams.errors import ConfigError


def settings(**overrides: Any) -> StackSettings:
    values: dict[str, Any] = {
        "kafka_bootstrap": "127.0.0.1:9092",
        "elastic_url": "http://127.0.0.1:9200",
        "weaviate_http_port": 8080,
        "weaviate_grpc_port": 50051,
        "topic_prefix": "",
        "topic_partitions": 4,
        "kafka_brokers": 1,
    }
    values.update(overrides)
    return StackSettings(**values)


def properties(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


# ---- nodes and ports --------------------------------------------------------------------


def test_one_broker_is_the_kafka_service_as_before() -> None:
    s = settings()
    assert kafka_node_names(s) == ("kafka",)
    assert kafka_bootstrap_servers(s) == "127.0.0.1:9092"
    assert service_ports(s)["kafka"] == (9092, 9093)
    assert not any(name.startswith("kafka-") for name in service_ports(s))


def test_three_nodes_take_the_ports_after_the_first_broker() -> None:
    s = settings(kafka_brokers=3)
    assert kafka_node_names(s) == ("kafka-1", "kafka-2", "kafka-3")
    assert [(p.node_id, p.broker, p.controller) for p in kafka_node_ports(s)] == [
        (1, 9092, 9093),
        (2, 9094, 9095),
        (3, 9096, 9097),
    ]
    assert kafka_bootstrap_servers(s) == "127.0.0.1:9092,127.0.0.1:9094,127.0.0.1:9096"
    ports = service_ports(s)
    assert "kafka" not in ports
    assert [ports[n] for n in kafka_node_names(s)] == [(9092, 9093), (9094, 9095), (9096, 9097)]
    assert port_conflicts(ports) == []


def test_a_clash_with_the_second_node_is_reported() -> None:
    # weaviate gossip = http + 1000 = 9094 = the broker port of node 2
    problems = port_conflicts(service_ports(settings(kafka_brokers=3, weaviate_http_port=8094)))
    assert problems == ["port 9094 is used by both kafka-2 and weaviate"]
    # the same Weaviate beside a single node clashes with nothing
    assert port_conflicts(service_ports(settings(weaviate_http_port=8094))) == []


def test_a_node_port_past_65535_is_refused() -> None:
    with pytest.raises(ValueError, match="kafka node 3"):
        kafka_node_ports(settings(kafka_bootstrap="127.0.0.1:65531", kafka_brokers=3))


def test_node_names_map_to_ids() -> None:
    assert [kafka_node_id(n) for n in ("kafka", "kafka-1", "kafka-3", "weaviate", "kafka-x")] == [
        1, 1, 3, None, None
    ]


def test_brokers_come_from_the_environment_and_a_bad_count_names_the_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AICHAT_KAFKA_BROKERS", "3")
    assert load_settings(StackSettings).kafka_brokers == 3
    monkeypatch.setenv("AICHAT_KAFKA_BROKERS", "0")
    with pytest.raises(ConfigError, match="AICHAT_KAFKA_BROKERS"):
        load_settings(StackSettings)


def test_bootstrap_names_the_first_node_or_all_of_them() -> None:
    assert kafka_bootstrap_problem(settings(kafka_brokers=3)) is None
    full = "127.0.0.1:9092,127.0.0.1:9094,127.0.0.1:9096"
    assert kafka_bootstrap_problem(settings(kafka_brokers=3, kafka_bootstrap=full)) is None
    # the first entry is node 1, whose port the others derive from: another order is a mistake
    shuffled = "127.0.0.1:9094,127.0.0.1:9092,127.0.0.1:9096"
    assert "9098" in str(kafka_bootstrap_problem(settings(kafka_brokers=3, kafka_bootstrap=shuffled)))
    problem = kafka_bootstrap_problem(
        settings(kafka_brokers=3, kafka_bootstrap="127.0.0.1:9092,127.0.0.1:9999")
    )
    assert problem is not None and "127.0.0.1:9096" in problem
    # a single node ignores further entries, as it always did
    assert kafka_bootstrap_problem(settings(kafka_bootstrap="127.0.0.1:9092,10.0.0.1:9092")) is None


# ---- replication --------------------------------------------------------------------------


def test_replication_follows_the_number_of_brokers() -> None:
    policy = load_replication_policy()
    assert policy == ReplicationPolicy(max_factor=3, min_insync_replicas=2)
    assert [policy.for_brokers(n) for n in (1, 2, 3, 5)] == [
        Replication(1, 1),
        Replication(2, 1),
        Replication(3, 2),
        Replication(3, 2),
    ]
    with pytest.raises(ValueError):
        policy.for_brokers(0)


def test_new_topics_on_three_brokers_get_three_replicas_and_two_in_sync() -> None:
    topics = new_topics(settings(), load_topic_specs(), replication=Replication(3, 2))
    assert {t.replication_factor for t in topics} == {3}
    assert {t.topic_configs["min.insync.replicas"] for t in topics} == {"2"}
    documents = next(t for t in topics if t.name == "documents")
    assert documents.topic_configs["cleanup.policy"] == "compact"


def test_new_topics_on_one_broker_are_as_before() -> None:
    topics = new_topics(settings(), load_topic_specs(), replication=SINGLE_REPLICA)
    assert {t.replication_factor for t in topics} == {1}
    assert not any("min.insync.replicas" in t.topic_configs for t in topics)
    assert new_topics(settings(), load_topic_specs())[0].replication_factor == 1


# ---- server.properties ----------------------------------------------------------------------


def test_single_node_properties_keep_one_replica(tmp_path: Path) -> None:
    props = properties(render_server_properties(settings(), tmp_path))
    assert props["node.id"] == "1"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:9093"
    for key in (
        "default.replication.factor",
        "min.insync.replicas",
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr",
        "share.coordinator.state.topic.replication.factor",
        "share.coordinator.state.topic.min.isr",
    ):
        assert props[key] == "1", key


def test_each_node_of_three_has_its_id_ports_and_the_whole_quorum(tmp_path: Path) -> None:
    s = settings(kafka_brokers=3, kafka_bootstrap="127.0.0.1:19092")
    rendered = [
        properties(render_server_properties(s, tmp_path / f"n{i}", node_id=i)) for i in (1, 2, 3)
    ]
    voters = "1@127.0.0.1:19093,2@127.0.0.1:19095,3@127.0.0.1:19097"
    assert {p["controller.quorum.voters"] for p in rendered} == {voters}
    assert [p["node.id"] for p in rendered] == ["1", "2", "3"]
    second = rendered[1]
    assert second["listeners"] == "PLAINTEXT://127.0.0.1:19094,CONTROLLER://127.0.0.1:19095"
    assert second["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19094"
    assert second["log.dirs"] == str(tmp_path / "n2")
    assert second["process.roles"] == "broker,controller"
    for key in ("offsets.topic.replication.factor", "transaction.state.log.replication.factor",
                "share.coordinator.state.topic.replication.factor", "default.replication.factor"):
        assert second[key] == "3", key
    for key in ("min.insync.replicas", "transaction.state.log.min.isr",
                "share.coordinator.state.topic.min.isr"):
        assert second[key] == "2", key
    assert second["unclean.leader.election.enable"] == "false"


def test_a_node_outside_the_cluster_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="node 4"):
        render_server_properties(settings(kafka_brokers=3), tmp_path, node_id=4)


# ---- cluster id and launchers ----------------------------------------------------------------


def test_every_node_computes_the_same_cluster_id(tmp_path: Path) -> None:
    s = settings(kafka_brokers=3, stack_dir=tmp_path / "a")
    same = cluster_id_for(settings(kafka_brokers=3, stack_dir=tmp_path / "a"))
    assert cluster_id_for(s) == same
    assert len(same) == 22 and not set(same) & set("=+/")
    assert cluster_id_for(settings(kafka_brokers=3, stack_dir=tmp_path / "b")) != same
    assert cluster_id_for(settings(kafka_brokers=5, stack_dir=tmp_path / "a")) != same


def test_formatted_cluster_id_reads_meta_properties(tmp_path: Path) -> None:
    assert formatted_cluster_id(tmp_path) is None
    (tmp_path / "meta.properties").write_text(
        "#\nnode.id=2\ndirectory.id=x\nversion=1\ncluster.id=AbCdEfGhIjKlMnOpQrStUv\n"
    )
    assert formatted_cluster_id(tmp_path) == "AbCdEfGhIjKlMnOpQrStUv"


def test_a_node_formatted_for_another_cluster_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = settings(kafka_brokers=3, stack_dir=tmp_path)
    paths = stack.service_paths(s, "kafka-2")
    paths.create()
    (paths.data / "meta.properties").write_text("cluster.id=AbCdEfGhIjKlMnOpQrStUv\n")
    monkeypatch.setattr("infra.kafka.launcher.find_java_home", lambda _: tmp_path)
    with pytest.raises(StackError, match="formatted for another cluster"):
        KafkaLauncher(2, clustered=True).prepare(s, paths)


def test_node_launchers_tell_their_processes_apart(tmp_path: Path) -> None:
    s = settings(kafka_brokers=3, stack_dir=tmp_path)
    assert KafkaLauncher().name == "kafka" and KafkaLauncher().marker(s) == "kafka.Kafka"
    second = KafkaLauncher(2, clustered=True)
    assert second.name == "kafka-2"
    assert second.marker(s) == f"kafka.Kafka {tmp_path / 'kafka-2' / 'config' / 'server.properties'}"
    assert KafkaLauncher(3, clustered=True).marker(s) != second.marker(s)


# ---- the stack's handling of node names --------------------------------------------------------


def test_up_refuses_a_node_the_stack_does_not_have(tmp_path: Path) -> None:
    with pytest.raises(StackError, match="kafka-2: not a node of this stack"):
        stack.up(settings(stack_dir=tmp_path), services=["kafka-2"])
    with pytest.raises(StackError, match="unknown service"):
        stack.up(settings(stack_dir=tmp_path, kafka_brokers=3), services=["kafka-9"])


def test_down_stops_the_nodes_of_another_node_count(tmp_path: Path) -> None:
    """A cluster started with --brokers 3 is found by its pid files by a 1-node config."""
    cluster = settings(stack_dir=tmp_path, kafka_brokers=3)
    for name in kafka_node_names(cluster):
        paths = stack.service_paths(cluster, name)
        paths.create()
        paths.pid_file.write_text("999999999\n")  # no such process: a stale pid file
    stack.down(settings(stack_dir=tmp_path), services=["kafka"])
    assert not any((tmp_path / n / f"{n}.pid").exists() for n in kafka_node_names(cluster))


def test_cli_up_brokers_sets_the_node_count_and_prints_the_bootstrap(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: list[StackSettings] = []

    def fake_up(s: StackSettings, **_: object) -> list[ServiceStatus]:
        seen.append(s)
        return [ServiceStatus(n, 1, (p.broker, p.controller), True, "ok")
                for n, p in zip(kafka_node_names(s), kafka_node_ports(s), strict=True)]

    monkeypatch.setattr(cli.stack, "up", fake_up)
    monkeypatch.setenv("AICHAT_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command"))
    assert cli.run(parser.parse_args(["stack", "up", "--brokers", "3"])) == 0
    assert seen[0].kafka_brokers == 3
    out = capsys.readouterr().out
    assert "kafka-3" in out
    assert "AICHAT_KAFKA_BOOTSTRAP=127.0.0.1:9092,127.0.0.1:9094,127.0.0.1:9096" in out
