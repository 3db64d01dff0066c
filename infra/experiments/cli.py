"""``aichat experiments report NAME [--control V] [--json]``: the comparison of an experiment's
variants from the question summaries in Elasticsearch (infra/experiments/report.py)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from elastic_transport import ConnectionError as EsConnectionError
from elastic_transport import ConnectionTimeout

from infra.experiments.report import build_report, fetch_summaries, render
from streams.config import ElasticSettings, load_settings
from streams.errors import ConfigError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("experiments", help="server-side A/B tests: reports")
    commands = parser.add_subparsers(dest="experiments_command", required=True)
    report = commands.add_parser(
        "report", help="per variant: questions, first-token p50/p95, no-answer rate, feedback "
        "rate and positive share with 95%% intervals, and the significant differences")
    report.add_argument("name", help="the experiment's name (AICHAT_EXPERIMENTS_FILE)")
    report.add_argument("--control", default=None,
                        help="the variant the others are compared with (default: 'default' or the first)")
    report.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(ElasticSettings)
        summaries = asyncio.run(fetch_summaries(settings, args.name))
        report = build_report(args.name, summaries, control=args.control)
    except (ConfigError, ValueError) as exc:
        print(f"aichat experiments: {exc}", file=sys.stderr)
        return 2
    except (EsConnectionError, ConnectionTimeout) as exc:
        print(f"aichat experiments: Elasticsearch unreachable: {exc}", file=sys.stderr)
        return 1
    if not report["variants"]:
        print(f"aichat experiments: no question of experiment {args.name!r} in Elasticsearch",
              file=sys.stderr)
        return 1
    print(json.dumps(report, indent=2, ensure_ascii=False) if args.json else render(report))
    return 0
