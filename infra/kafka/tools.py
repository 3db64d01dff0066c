"""Kafka's own command-line tools for operators, from the same Maven Central artifacts as the broker.

The local stack's Kafka is ``<cache>/kafka-<KAFKA_VERSION>/libs/`` (the broker's runtime jars,
``infra/kafka/launcher.py``), not Apache's tarball, so it had no ``bin/``. This module adds
the tools an operator expects, each a main class of those jars or of
``org.apache.kafka:kafka-tools:<KAFKA_VERSION>`` (fetched alone into ``tools-libs/``: the
broker's jars already hold everything it needs):

    <cache>/kafka-<version>/bin/kafka-topics.sh, kafka-console-producer.sh, …   (TOOLS)

Each script is ``exec java -cp "libs/*:tools-libs/*" <main class> "$@"`` with a small heap
and warnings-only logging, so it behaves as Apache's. ``aichat stack up`` writes them when
it provisions Kafka (a failure there is a warning: the broker does not need them);
``aichat kafka TOOL ARGS…`` runs one (``aichat kafka topics --list``), adding
``--bootstrap-server`` from ``AICHAT_KAFKA_BOOTSTRAP`` when the tool takes one and none is
given; ``aichat kafka --bin`` prints the directory, for ``PATH``.

Mind the console producer: it drops a record over its 1 MiB ``max.request.size`` default and
still exits 0 (``--producer-property max.request.size=…`` for larger documents).
"""

from __future__ import annotations

import argparse
import logging
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from infra.config import KAFKA_VERSION, StackSettings
from infra.errors import StackError
from infra.system import file_lock, find_java_home, run_step

log = logging.getLogger(__name__)

#: script name → main class, and whether it talks to brokers (``--bootstrap-server``)
TOOLS: dict[str, tuple[str, bool]] = {
    "kafka-topics": ("org.apache.kafka.tools.TopicCommand", True),
    "kafka-console-producer": ("org.apache.kafka.tools.ConsoleProducer", True),
    "kafka-console-consumer": ("org.apache.kafka.tools.consumer.ConsoleConsumer", True),
    "kafka-consumer-groups": ("org.apache.kafka.tools.consumer.group.ConsumerGroupCommand", True),
    "kafka-dump-log": ("kafka.tools.DumpLogSegments", False),
    "kafka-get-offsets": ("org.apache.kafka.tools.GetOffsetShell", True),
    "kafka-configs": ("kafka.admin.ConfigCommand", True),
    "kafka-metadata-quorum": ("org.apache.kafka.tools.MetadataQuorumCommand", True),
}
TOOLS_ARTIFACT = f"org.apache.kafka:kafka-tools:{KAFKA_VERSION}"
TOOLS_HEAP = "256m"
LOG4J2_TOOLS = """\
# Kafka's command-line tools (infra/kafka/tools.py): warnings and errors to stderr only
Configuration:
  Appenders:
    Console:
      name: STDERR
      target: SYSTEM_ERR
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: WARN
      AppenderRef:
        - ref: STDERR
"""


def kafka_home(settings: StackSettings) -> Path:
    return settings.cache_dir / f"kafka-{KAFKA_VERSION}"


def bin_dir(settings: StackSettings) -> Path:
    return kafka_home(settings) / "bin"


def tool_name(name: str) -> str:
    """``topics``, ``kafka-topics`` and ``kafka-topics.sh`` are one tool: ``kafka-topics``."""
    base = name.removesuffix(".sh")
    base = base if base.startswith("kafka-") else f"kafka-{base}"
    if base not in TOOLS:
        raise StackError(f"unknown Kafka tool {name!r}; choose from "
                         + ", ".join(t.removeprefix("kafka-") for t in TOOLS))
    return base


def java_argv(settings: StackSettings, tool: str) -> list[str]:
    """``java … <main class>`` of ``tool`` (arguments go after it)."""
    home = kafka_home(settings)
    java = find_java_home(settings.java_home) / "bin" / "java"
    return [str(java), f"-Xmx{TOOLS_HEAP}", "-XX:+UseSerialGC", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={home / 'config' / 'tools-log4j2.yaml'}",
            "-cp", f"{home / 'libs'}/*:{home / 'tools-libs'}/*", TOOLS[tool][0]]


def script_text(settings: StackSettings, tool: str) -> str:
    command = " ".join(shlex.quote(part) for part in java_argv(settings, tool))
    return (f"#!/bin/sh\n# {tool}.sh of Kafka {KAFKA_VERSION}, from its Maven Central jars "
            f"(written by infra/kafka/tools.py)\nexec {command} \"$@\"\n")


def install(settings: StackSettings) -> Path:
    """Fetch the tools jar (once) and write the scripts; the bin directory. Needs ``libs/``."""
    home = kafka_home(settings)
    if not (home / "libs").is_dir():
        raise StackError(f"{home / 'libs'} is missing: `aichat stack up --only kafka` fetches it")
    libs = home / "tools-libs"
    jar = libs / f"kafka-tools-{KAFKA_VERSION}.jar"
    with file_lock(settings.cache_dir / "locks" / "kafka-tools.lock"):
        if not jar.exists():
            log.info("kafka: fetching %s from Maven Central into %s", TOOLS_ARTIFACT, libs)
            partial = libs.with_name("tools-libs.partial")
            shutil.rmtree(partial, ignore_errors=True)
            run_step(["mvn", "-B", "-q", "dependency:copy", f"-Dartifact={TOOLS_ARTIFACT}",
                      f"-DoutputDirectory={partial}"], what="kafka: fetch the tools jar")
            shutil.rmtree(libs, ignore_errors=True)
            partial.rename(libs)
        (home / "config").mkdir(exist_ok=True)
        (home / "config" / "tools-log4j2.yaml").write_text(LOG4J2_TOOLS, encoding="utf-8")
        folder = bin_dir(settings)
        folder.mkdir(exist_ok=True)
        for tool in TOOLS:
            script = folder / f"{tool}.sh"
            tmp = script.with_suffix(".tmp")
            tmp.write_text(script_text(settings, tool), encoding="utf-8")
            tmp.chmod(0o755)
            tmp.replace(script)
    return bin_dir(settings)


def command(settings: StackSettings, tool: str, args: Sequence[str]) -> list[str]:
    """The script and its arguments, ``--bootstrap-server`` added when the tool needs one."""
    name = tool_name(tool)
    script = str(bin_dir(settings) / f"{name}.sh")
    wants_broker = TOOLS[name][1]
    given = any(a == "--bootstrap-server" or a.startswith("--bootstrap-server=")
                or a in ("--bootstrap-controller", "--command-config", "--help", "--version")
                for a in args)
    if wants_broker and not given:  # first: metadata-quorum takes it before its subcommand
        return [script, "--bootstrap-server", settings.kafka_bootstrap, *args]
    return [script, *args]


def run(settings: StackSettings, tool: str, args: Sequence[str]) -> int:
    """Run a tool in the foreground (stdin, stdout, stderr are ours); its exit code."""
    from infra.kafka.launcher import KafkaLauncher  # imports this module

    KafkaLauncher().provision(settings)  # libs/ when missing, then the tools
    if not (bin_dir(settings) / f"{tool_name(tool)}.sh").exists():
        install(settings)
    return subprocess.call(command(settings, tool, args))  # noqa: S603 - our own script


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "kafka", help="Kafka's own tools (topics, console-producer, console-consumer, "
        "consumer-groups, dump-log, …) against the configured brokers",
        description="Runs bin/kafka-TOOL.sh of the local stack's Kafka with ARGS; adds "
        "--bootstrap-server $AICHAT_KAFKA_BOOTSTRAP unless given. Tools: "
        + ", ".join(t.removeprefix("kafka-") for t in TOOLS))
    parser.add_argument("--bin", action="store_true", help="install, print the bin directory")
    parser.add_argument("tool", nargs="?", help="e.g. topics, consumer-groups, dump-log")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="the tool's own arguments")
    parser.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    from streams.config import load_settings

    try:
        settings = load_settings(StackSettings)
        if args.bin or not args.tool:
            from infra.kafka.launcher import KafkaLauncher

            KafkaLauncher().provision(settings)
            folder = install(settings)
            listing = f"{folder}" if args.bin else f"tools: {', '.join(TOOLS)}\nin {folder}"
            sys.stdout.write(listing + "\n")
            return 0
        return run(settings, args.tool, args.args)
    except StackError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        return 130

