"""How ``aichat kafka TOOL`` builds a tool's command line (infra/kafka/tools.py); the tools
themselves run against the real Kafka in tests/integration/test_kafka_tools.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.config import KAFKA_VERSION, StackSettings
from infra.errors import StackError
from infra.kafka import tools


def settings(tmp_path: Path) -> StackSettings:
    return StackSettings(cache_dir=tmp_path, kafka_bootstrap="127.0.0.1:9092,127.0.0.1:9094")


@pytest.mark.parametrize("name", ["topics", "kafka-topics", "kafka-topics.sh"])
def test_a_tool_has_its_apache_name_or_a_short_one(name: str) -> None:
    assert tools.tool_name(name) == "kafka-topics"


def test_an_unknown_tool_is_refused_with_the_choices() -> None:
    with pytest.raises(StackError, match="consumer-groups"):
        tools.tool_name("kafka-server-start")


def test_the_configured_brokers_are_added_in_front_unless_given(tmp_path: Path) -> None:
    s = settings(tmp_path)
    script = str(tmp_path / f"kafka-{KAFKA_VERSION}" / "bin" / "kafka-metadata-quorum.sh")
    assert tools.command(s, "metadata-quorum", ["describe", "--status"]) == [
        script, "--bootstrap-server", "127.0.0.1:9092,127.0.0.1:9094", "describe", "--status"]
    given = ["--bootstrap-server=10.0.0.1:9092", "--list"]
    assert tools.command(s, "topics", given)[1:] == given
    assert tools.command(s, "topics", ["--help"])[1:] == ["--help"]
    # dump-log reads files, it talks to no broker
    assert tools.command(s, "dump-log", ["--files", "x.log"])[1:] == ["--files", "x.log"]


def test_a_script_runs_the_main_class_on_the_broker_jars_and_the_tools_jar(tmp_path: Path) -> None:
    text = tools.script_text(settings(tmp_path), "kafka-consumer-groups")
    home = tmp_path / f"kafka-{KAFKA_VERSION}"
    assert text.startswith("#!/bin/sh\n")
    assert f"'{home}/libs/*:{home}/tools-libs/*'" in text
    assert text.rstrip().endswith('org.apache.kafka.tools.consumer.group.ConsumerGroupCommand "$@"')


def test_install_needs_the_broker_jars_first(tmp_path: Path) -> None:
    with pytest.raises(StackError, match="aichat stack up --only kafka"):
        tools.install(settings(tmp_path))
