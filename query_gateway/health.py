"""Readiness checks: Kafka, Weaviate, Elasticsearch and the model workers, each named.

``GET /health/ready`` runs every check concurrently, each under
``readiness_timeout_s``; the body names each check with ``ok`` and a short
``detail``; the status is 503 when any check fails. A check is an async callable
returning a detail string, raising when the dependency is not usable.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from query_gateway.config import GatewaySettings
from query_gateway.errors import GatewayError
from query_gateway.transport import Transport

Check = Callable[[], Awaitable[str]]


class CheckFailed(Exception):
    """A dependency answered, but not with "ready"."""


def default_checks(
    settings: GatewaySettings, transport: Transport, http: httpx.AsyncClient
) -> dict[str, Check]:
    weaviate_url = (
        f"http://{settings.weaviate_host}:{settings.weaviate_http_port}/v1/.well-known/ready"
    )
    weaviate_headers = (
        {"Authorization": f"Bearer {settings.weaviate_api_key.get_secret_value()}"}
        if settings.weaviate_api_key
        else {}
    )
    elastic_url = settings.elastic_url.rstrip("/") + "/_cluster/health"
    elastic_headers = (
        {"Authorization": f"ApiKey {settings.elastic_api_key.get_secret_value()}"}
        if settings.elastic_api_key
        else {}
    )

    async def weaviate() -> str:
        response = await http.get(weaviate_url, headers=weaviate_headers)
        _expect_ok(response)
        return "ready"

    async def elasticsearch() -> str:
        response = await http.get(elastic_url, headers=elastic_headers)
        _expect_ok(response)
        status = response.json().get("status")
        if status not in ("green", "yellow"):
            raise CheckFailed(f"cluster status {status!r}")
        return f"cluster status {status}"

    async def model() -> str:
        urls = settings.worker_health_urls
        if not urls:
            return "no worker health URLs configured (not checked)"
        responses = await asyncio.gather(*(http.get(url) for url in urls), return_exceptions=True)
        failed = [
            f"{url}: {_describe(r)}"
            for url, r in zip(urls, responses, strict=True)
            if not (isinstance(r, httpx.Response) and r.status_code == 200)
        ]
        if failed:
            raise CheckFailed("; ".join(failed))
        return f"{len(urls)} worker(s) ready"

    return {
        "kafka": transport.check,
        "weaviate": weaviate,
        "elasticsearch": elasticsearch,
        "model": model,
    }


def _expect_ok(response: httpx.Response) -> None:
    if response.status_code != 200:
        raise CheckFailed(f"HTTP {response.status_code} from {response.request.url}")


def _describe(outcome: httpx.Response | BaseException) -> str:
    if isinstance(outcome, httpx.Response):
        return f"HTTP {outcome.status_code}"
    return _error_text(outcome)


def _error_text(exc: BaseException) -> str:
    text = str(exc)
    if isinstance(exc, (CheckFailed, GatewayError)) and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def run_checks(checks: dict[str, Check], timeout_s: float) -> tuple[bool, dict[str, Any]]:
    """Run all checks concurrently; ``(all_ok, {"name": {"ok", "detail", "ms"}})``."""

    async def one(check: Check) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            detail = await asyncio.wait_for(check(), timeout_s)
            ok = True
        except TimeoutError:
            ok, detail = False, f"no answer within {timeout_s:g}s"
        except Exception as exc:  # a failing check is a result, not an error of the endpoint
            ok, detail = False, _error_text(exc)
        return {"ok": ok, "detail": detail, "ms": round((time.perf_counter() - started) * 1000, 1)}

    results = await asyncio.gather(*(one(check) for check in checks.values()))
    named = dict(zip(checks, results, strict=True))
    return all(r["ok"] for r in results), named
