"""The ``aichat`` command: one entry point, one sub-command per job.

    aichat up                      the whole system on this machine (stack, workers, gateway)
    aichat stack up|down|status    the local Kafka, Elasticsearch and Weaviate
    aichat worker --role R         one Faust worker (roles: streams/agents/__init__.py)
    aichat gateway                 the websocket gateway
    aichat ingest PATH…            publish documents
    aichat ask "question"          ask over the websocket and print the streamed answer
    aichat rebuild                 drop the vector index and re-index it from documents
    aichat reindex start|status|switch|rollback|drop   a new collection behind the serving alias
    aichat backup create|list|restore   Weaviate + Elasticsearch copies and their Kafka offsets
    aichat experiments report NAME      an A/B test's variants compared (feedback, latency, answers)

Settings come from ``AICHAT_*`` environment variables and ``.env`` (streams/config.py);
logging is configured here, once, for the whole process.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from dotenv import load_dotenv

from streams.errors import ConfigError


def quiet_authlib_httpx_warning() -> None:
    """Ignore exactly authlib's "The httpx module is deprecated; please use httpx2 instead".

    weaviate-client (4.24.1, the newest) imports ``authlib.integrations.httpx_client``, whose
    import warns that authlib falls back to httpx because httpx2 is not installed. No import
    of ours triggers it and there is no non-deprecated path from here: weaviate-client builds
    its connections (and its OIDC sessions, authlib's clients) on httpx, so installing httpx2
    would mix the two libraries inside weaviate-client. Until weaviate-client moves, filter it.

    ``authlib.deprecate`` puts an ``always`` filter for its warning class in front of all
    others when it is first imported, which would override a filter set before that import
    (weaviate-client is imported later, by the sub-command): so import it first (1 ms) and
    put this filter in front of it.
    """
    from authlib.deprecate import AuthlibDeprecationWarning

    warnings.filterwarnings(
        "ignore",
        message=r"The httpx module is deprecated; please use httpx2 instead\.",
        category=AuthlibDeprecationWarning,
    )


def _worker(args: argparse.Namespace) -> int:
    from infra.generations import generation_settings
    from infra.provision import ensure_worker_topics, worker_setup
    from streams.config import WorkerSettings, load_settings
    from streams.worker import run

    overrides = {"worker_web_port": args.web_port} if args.web_port else {}
    # an ingest worker of an index generation writes that collection (aichat reindex)
    settings = generation_settings(load_settings(WorkerSettings, **overrides), args.role)
    # provisioning is the entry point's: topics now, the role's collections and index
    # templates as setup steps the worker runs before its clients start
    ensure_worker_topics(settings)
    return run(settings, args.role, setup=worker_setup(settings, args.role))


def _up(args: argparse.Namespace) -> int:
    from infra.up import run_up

    return run_up(args)


def build_parser() -> argparse.ArgumentParser:
    from infra import cli as infra_cli
    from infra import rebuild
    from infra.backup import cli as backup_cli
    from infra.elk import cli as elk_cli
    from infra.experiments import cli as experiments_cli
    from infra.reindex import cli as reindex_cli
    from ingest import cli as ingest_cli
    from query_gateway import cli as gateway_cli
    from streams.agents import ROLES

    parser = argparse.ArgumentParser(prog="aichat", description="AI-Chat streaming RAG")
    parser.add_argument("--log-level", default=None, help="override AICHAT_LOG_LEVEL")
    parser.add_argument(
        "--env-file",
        type=Path,
        default=None,
        help="read AICHAT_* settings from this file (e.g. .env.production); "
        "variables already set in the environment win",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="bring the whole system up here and keep it running")
    up.add_argument("--no-sample", action="store_true", help="do not ingest the sample corpus")
    up.add_argument("--keep-stack", action="store_true", help="leave Kafka/ES/Weaviate running on exit")
    up.set_defaults(func=_up)

    worker = sub.add_parser("worker", help="run one Faust worker role")
    worker.add_argument("--role", choices=sorted(ROLES), default="pipeline")
    worker.add_argument("--web-port", type=int, default=None, help="/metrics and /health port")
    worker.set_defaults(func=_worker)

    infra_cli.register(sub)
    rebuild.register(sub)
    reindex_cli.register(sub)
    backup_cli.register(sub)
    elk_cli.register(sub)
    experiments_cli.register(sub)
    ingest_cli.register(sub)
    gateway_cli.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from streams.config import ObservabilitySettings, load_settings, log_json
    from streams.ecs_logging import configure_logging

    quiet_authlib_httpx_warning()
    args = build_parser().parse_args(argv)
    if args.env_file is not None:
        if not args.env_file.is_file():
            sys.stderr.write(f"aichat: --env-file {args.env_file}: no such file\n")
            return 2
        # the entry point is the one place that may touch the process environment
        load_dotenv(args.env_file, override=False)
    try:
        obs = load_settings(ObservabilitySettings)
        service = f"aichat-{args.role}" if args.command == "worker" else f"aichat-{args.command}"
        configure_logging(
            args.log_level or obs.log_level,
            service_name=service,
            environment=obs.environment,
            json=log_json(obs),
        )
        if args.command in ("worker", "gateway"):  # long-running: logs also to Kafka → ES
            from streams.log_producer import LogShipSettings, ship_logs

            ship_logs(load_settings(LogShipSettings), service)
        return int(args.func(args) or 0)
    except ConfigError as exc:
        sys.stderr.write(f"aichat: {exc}\n")
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
