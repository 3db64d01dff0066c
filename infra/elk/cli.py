"""``aichat elk import-kibana | put-production``: Kibana saved objects and production ES definitions.

    aichat elk import-kibana --url http://kibana:5601 [--space ID]
        builds the data views, saved searches, visualizations and the dashboard for
        AICHAT_ELASTIC_INDEX_PREFIX and imports them with Kibana's saved objects API
        (overwriting earlier versions); auth: AICHAT_KIBANA_API_KEY (or _FILE), or
        AICHAT_KIBANA_USERNAME + AICHAT_KIBANA_PASSWORD.
    aichat elk put-production [--url https://es:9200]
        PUTs the ILM policies, the lifecycle-managed index templates and the data-stream
        template of infra/elk/production/ (see infra/elk/OBSERVABILITY.md).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import SecretStr

from infra.elk.kibana import build_objects, to_ndjson
from infra.elk.templates import production_requests, put_all
from infra.errors import StackError
from streams.config import ElasticSettings, load_settings
from streams.endpoints import api_key_headers
from streams.errors import ConfigError


class KibanaSettings(ElasticSettings):
    kibana_url: str = "http://127.0.0.1:5601"
    kibana_api_key: SecretStr | None = None
    kibana_username: str | None = None
    kibana_password: SecretStr | None = None


@dataclass(frozen=True)
class ImportResult:
    success: bool
    count: int
    errors: list[dict[str, Any]]


def kibana_headers(settings: KibanaSettings) -> dict[str, str]:
    return {"kbn-xsrf": "aichat", **api_key_headers(settings.kibana_api_key)}


def import_saved_objects(
    settings: KibanaSettings,
    *,
    url: str | None = None,
    space: str | None = None,
    transport: httpx.BaseTransport | None = None,
    timeout_s: float = 60.0,
) -> ImportResult:
    """``POST /api/saved_objects/_import?overwrite=true`` with the objects for the configured prefix."""
    base = (url or settings.kibana_url).rstrip("/")
    if space and space != "default":
        base = f"{base}/s/{space}"
    ndjson = to_ndjson(build_objects(settings.elastic_index_prefix)).encode()
    auth = None
    if settings.kibana_username and settings.kibana_password is not None:
        auth = httpx.BasicAuth(settings.kibana_username, settings.kibana_password.get_secret_value())
    try:
        with httpx.Client(timeout=timeout_s, transport=transport, auth=auth) as http:
            response = http.post(
                f"{base}/api/saved_objects/_import",
                params={"overwrite": "true"},
                headers=kibana_headers(settings),
                files={"file": ("aichat.ndjson", ndjson, "application/ndjson")},
            )
    except httpx.HTTPError as exc:
        raise StackError(f"Kibana at {base} unreachable: {exc}") from exc
    if response.status_code != 200:
        raise StackError(f"Kibana import refused: HTTP {response.status_code} {response.text[:500]}")
    body = response.json()
    return ImportResult(bool(body.get("success")), int(body.get("successCount", 0)),
                        list(body.get("errors") or []))


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("elk", help="Kibana saved objects, production Elasticsearch setup")
    commands = parser.add_subparsers(dest="elk_command", required=True)
    kibana = commands.add_parser("import-kibana", help="import data views, searches and the dashboard")
    kibana.add_argument("--url", help="Kibana base URL (AICHAT_KIBANA_URL, default http://127.0.0.1:5601)")
    kibana.add_argument("--space", help="Kibana space id (default: the default space)")
    prod = commands.add_parser("put-production",
                               help="PUT ILM policies, lifecycle templates and the data-stream template")
    prod.add_argument("--url", help="Elasticsearch URL (default AICHAT_ELASTIC_URL)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(KibanaSettings)
        if args.elk_command == "import-kibana":
            result = import_saved_objects(settings, url=args.url, space=args.space)
            print(f"imported {result.count} saved objects into {args.url or settings.kibana_url}")
            for error in result.errors:
                print(f"  {error.get('type')}/{error.get('id')}: {error.get('error')}", file=sys.stderr)
            return 0 if result.success else 1
        target = settings.model_copy(update={"elastic_url": args.url}) if args.url else settings
        for path in put_all(target, production_requests(target)):
            print(f"PUT {path}: acknowledged")
        return 0
    except (StackError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
