"""``aichat stack up | down | status | init``: the local Kafka + Elasticsearch + Weaviate stack
(``--alerting``: Prometheus + Alertmanager too); ``aichat kafka TOOL``: Kafka's own tools.

The lead's console script calls :func:`register` and :func:`run`; ``python -m infra.cli
stack up`` works on its own too.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence

from infra import catalogue, stack
from infra.config import SERVICES, kafka_bootstrap_servers
from infra.errors import ServiceFailedToStart, StackError
from infra.kafka import tools as kafka_tools
from infra.prometheus.settings import ALERTING_SERVICES, AlertingSettings
from infra.service import ServiceStatus
from streams.config import load_settings
from streams.errors import ConfigError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "stack", help="local Kafka, Elasticsearch and Weaviate (no Docker)"
    )
    commands = parser.add_subparsers(dest="stack_command", required=True)
    up = commands.add_parser("up", help="install what is missing, start what is not running")
    up.add_argument(
        "--wipe", action="store_true", help="stop and delete the data directories first"
    )
    up.add_argument(
        "--only",
        nargs="+",
        choices=(*SERVICES, *catalogue.OPTIONAL_SERVICES, *catalogue.KAFKA_NODE_NAMES),
        metavar="SERVICE",
        help=f"start only these ({', '.join(SERVICES)}; optional: "
        f"{', '.join(catalogue.OPTIONAL_SERVICES)}; or one Kafka node, kafka-2)",
    )
    up.add_argument(
        "--brokers",
        type=int,
        metavar="N",
        help="Kafka nodes (default AICHAT_KAFKA_BROKERS, 1); 3: a KRaft cluster with "
        "replication factor 3 and min.insync.replicas 2",
    )
    up.add_argument(
        "--alerting",
        action="store_true",
        help="also Prometheus, Alertmanager and the alert webhook (infra/prometheus/launcher.py)",
    )
    down = commands.add_parser("down", help="stop every service (SIGTERM, then SIGKILL)")
    down.add_argument("--wipe", action="store_true", help="also delete the data directories")
    commands.add_parser("status", help="table of services; exit 0 only if all are up")
    commands.add_parser(
        "init", help="create topics, index template and collection on running services"
    )
    parser.set_defaults(func=run)
    kafka_tools.register(subparsers)  # aichat kafka TOOL …: Kafka's own tools


def _table(rows: Sequence[ServiceStatus]) -> str:
    lines = [("SERVICE", "PID", "PORTS", "HEALTH", "DETAIL")]
    for row in rows:
        ports = ",".join(str(p) for p in row.ports)
        lines.append((row.name, str(row.pid or "-"), ports, row.health, row.detail))
    widths = [max(len(line[i]) for line in lines) for i in range(4)]
    return "\n".join(
        "  ".join(cell.ljust(widths[i]) if i < 4 else cell for i, cell in enumerate(line))
        for line in lines
    )


def run(args: argparse.Namespace) -> int:
    try:
        brokers = getattr(args, "brokers", None)
        overrides = {} if brokers is None else {"kafka_brokers": brokers}
        # the stack settings and the alerting services' (ports, scrape targets)
        settings = load_settings(AlertingSettings, **overrides)
        if args.stack_command == "up":
            started = time.monotonic()
            services = [*(args.only or SERVICES), *(ALERTING_SERVICES if args.alerting else ())]
            rows = stack.up(settings, wipe=args.wipe, services=services)
            print(_table(rows))
            print(f"stack up in {time.monotonic() - started:.1f}s")
            if settings.kafka_brokers > 1:
                print(
                    f"clients: AICHAT_KAFKA_BOOTSTRAP={kafka_bootstrap_servers(settings)} "
                    f"(status and down: AICHAT_KAFKA_BROKERS={settings.kafka_brokers})"
                )
            return 0
        if args.stack_command == "down":
            stack.down(settings, wipe=args.wipe)
            print("stack down" + (" (data wiped)" if args.wipe else ""))
            return 0
        if args.stack_command == "init":
            for line in stack.init(settings):
                print(line)
            return 0
        rows = stack.status(settings)
        print(_table(rows))
        return 0 if all(row.healthy for row in rows) else 1
    except ServiceFailedToStart as exc:
        print(f"error: {exc}", file=sys.stderr)
        if exc.log_tail:
            print(f"--- last {len(exc.log_tail)} lines of {exc.log_path} ---", file=sys.stderr)
            print("\n".join(exc.log_tail), file=sys.stderr)
        return 1
    except (StackError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.cli")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    if not args.verbose:
        # aiokafka's refused connections while a probe asks are demoted there
        # (infra/kafka/probing.py); its other warnings and errors are real and stay visible
        for noisy in ("httpx", "httpcore", "aiokafka"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
