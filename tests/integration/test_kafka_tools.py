"""Kafka's own tools (infra/kafka/tools.py) against the real Kafka, on a topic and a group of
this test alone: create, produce, consume, a group's lag, an offset reset for a replay, the
offsets, the topic's configuration, the quorum, a dump of the topic's log segment, delete.

Read-only on everything else: the tools only describe the cluster's own state."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.config import StackSettings
from infra.kafka import tools
from infra.kafka.launcher import KafkaLauncher
from streams.config import WorkerSettings, load_settings

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def stack_settings(services: WorkerSettings) -> StackSettings:
    settings = load_settings(StackSettings)
    KafkaLauncher().provision(settings)  # libs/ (cached) and the tools
    return settings


def run_tool(settings: StackSettings, tool: str, *args: str, stdin: str | None = None,
          check: bool = True) -> str:
    result = subprocess.run(tools.command(settings, tool, args), input=stdin, capture_output=True,
                            text=True, timeout=120, check=False)
    if check:
        assert result.returncode == 0, f"{tool} {args}: {result.stdout}{result.stderr}"
    return result.stdout


@pytest.fixture
def topic(stack_settings: StackSettings) -> Iterator[str]:
    name = f"tools-test-{uuid.uuid4().hex[:10]}"
    run_tool(stack_settings, "topics", "--create", "--topic", name, "--partitions", "1")
    try:
        yield name
    finally:
        run_tool(stack_settings, "topics", "--delete", "--topic", name, check=False)


def _lag(described: str, topic: str) -> tuple[int, int]:
    """(current offset, lag) of partition 0 in ``kafka-consumer-groups --describe``."""
    header, *rows = [line.split() for line in described.splitlines() if line.strip()]
    row = next(r for r in rows if r[header.index("TOPIC")] == topic)
    return int(row[header.index("CURRENT-OFFSET")]), int(row[header.index("LAG")])


def test_every_tool_against_the_real_kafka(stack_settings: StackSettings, topic: str) -> None:
    settings = stack_settings
    assert topic in run_tool(settings, "topics", "--list").split()
    assert "PartitionCount: 1" in run_tool(settings, "kafka-topics.sh", "--describe", "--topic", topic)

    run_tool(settings, "console-producer", "--topic", topic, "--property", "parse.key=true",
          "--property", "key.separator=|", stdin="default/a|first\ndefault/b|second\n")
    group = f"{topic}-group"
    consumed = run_tool(settings, "console-consumer", "--topic", topic, "--group", group,
                     "--from-beginning", "--max-messages", "2", "--timeout-ms", "60000",
                     "--property", "print.key=true", "--property", "key.separator=|")
    assert consumed.splitlines() == ["default/a|first", "default/b|second"]

    try:
        assert _lag(run_tool(settings, "consumer-groups", "--describe", "--group", group), topic) == (2, 0)
        assert group in run_tool(settings, "consumer-groups", "--list").split()
        # a replay: the group's offsets back to the beginning (what `aichat rebuild` does)
        run_tool(settings, "consumer-groups", "--group", group, "--topic", topic, "--reset-offsets",
              "--to-earliest", "--execute")
        assert _lag(run_tool(settings, "consumer-groups", "--describe", "--group", group), topic) == (0, 2)
    finally:
        run_tool(settings, "consumer-groups", "--delete", "--group", group, check=False)

    assert run_tool(settings, "get-offsets", "--topic", topic).split() == [f"{topic}:0:2"]
    assert f"configs for topic {topic}" in run_tool(
        settings, "configs", "--describe", "--entity-type", "topics", "--entity-name", topic)
    assert "LeaderId:" in run_tool(settings, "metadata-quorum", "describe", "--status")

    segments = sorted(settings.stack_dir.glob(f"kafka*/data/{topic}-0/*.log"))
    assert segments, f"no log segment of {topic} under {settings.stack_dir} (a local broker?)"
    dumped = run_tool(settings, "dump-log", "--files", str(segments[0]), "--print-data-log")
    assert "key: default/a payload: first" in dumped
    assert "key: default/b payload: second" in dumped


def test_aichat_kafka_runs_a_tool_and_names_the_bin_dir(stack_settings: StackSettings) -> None:
    aichat = [sys.executable, "-m", "streams.cli", "kafka"]
    listed = subprocess.run([*aichat, "topics", "--list"], capture_output=True, text=True,
                            timeout=120, check=False, cwd=ROOT)
    assert listed.returncode == 0, listed.stderr
    assert stack_settings.topic("documents") in listed.stdout.split()  # the stack's own topics
    where = subprocess.run([*aichat, "--bin"], capture_output=True, text=True, timeout=120,
                           check=False, cwd=ROOT)
    assert where.returncode == 0, where.stderr
    folder = Path(where.stdout.strip())
    assert folder == tools.bin_dir(stack_settings)
    assert sorted(p.stem for p in folder.glob("kafka-*.sh")) == sorted(tools.TOOLS)
    unknown = subprocess.run([*aichat, "no-such-tool"], capture_output=True, text=True,
                             timeout=120, check=False, cwd=ROOT)
    assert unknown.returncode == 2 and "unknown Kafka tool" in unknown.stderr
