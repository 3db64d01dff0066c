"""Readiness checks: Kafka, Weaviate, Elasticsearch and the model workers, each named.

:func:`run_checks` runs every check concurrently, each under ``readiness_timeout_s``,
and names each with ``ok``, a short ``detail`` and ``ms``. A check is an async
callable returning a detail string, raising when the dependency is not usable.

:class:`Readiness` holds the checks while the app runs and serves both endpoints:
the operator listener's ``/health/ready`` runs them every time and shows the
details; the public ``/health/ready`` (anyone can call it) says only ready or not,
from one shared run reused for ``readiness_cache_s``, so probing it cannot turn into
a flood of requests to Weaviate, Elasticsearch and the workers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import httpx

from query_gateway.config import GatewaySettings
from query_gateway.errors import GatewayError
from query_gateway.transport import Transport
from streams.endpoints import elastic_headers, elastic_url, weaviate_headers, weaviate_url

Check = Callable[[], Awaitable[str]]


class CheckFailed(Exception):
    """A dependency answered, but not with "ready"."""


def default_checks(
    settings: GatewaySettings, transport: Transport, http: httpx.AsyncClient
) -> dict[str, Check]:
    ready_url = weaviate_url(settings) + "/v1/.well-known/ready"
    health_url = elastic_url(settings) + "/_cluster/health"
    weaviate_auth, elastic_auth = weaviate_headers(settings), elastic_headers(settings)

    async def weaviate() -> str:
        response = await http.get(ready_url, headers=weaviate_auth)
        _expect_ok(response)
        return "ready"

    async def elasticsearch() -> str:
        response = await http.get(health_url, headers=elastic_auth)
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
        return f"{len(urls)} worker(s) ready" + _backlog_note(
            [r for r in responses if isinstance(r, httpx.Response)])

    return {
        "kafka": transport.check,
        "weaviate": weaviate,
        "elasticsearch": elasticsearch,
        "model": model,
    }


def _backlog_note(responses: list[httpx.Response]) -> str:
    """``"; backlog queries 3"``: what the workers' readiness bodies report still to process
    (a busy worker is ready; the largest report per topic, since replicas share a group)."""
    owed: dict[str, int] = {}
    for response in responses:
        try:
            backlog = response.json().get("backlog") or {}
        except ValueError:
            continue
        for topic, value in backlog.items():
            if isinstance(value, int) and not topic.endswith("_s"):
                owed[topic] = max(owed.get(topic, 0), value)
    if not owed:
        return ""
    return "; backlog " + ", ".join(f"{topic} {n}" for topic, n in sorted(owed.items()))


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


class Readiness:
    """The named checks, set by the lifespan while the app runs (None before and after)."""

    def __init__(
        self, timeout_s: float, cache_s: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.checks: Mapping[str, Check] | None = None
        self._timeout_s = timeout_s
        self._cache_s = cache_s
        self._clock = clock
        self._last: tuple[float, bool] | None = None
        self._running: asyncio.Task[bool] | None = None

    async def detailed(self) -> tuple[bool, dict[str, Any]]:
        """A fresh run: ``(all_ok, {"name": {"ok", "detail", "ms"}})``; not ok while stopped."""
        if self.checks is None:
            return False, {}
        return await run_checks(dict(self.checks), self._timeout_s)

    async def ready(self) -> bool:
        """All checks pass: the last result when younger than ``cache_s``, else one run
        shared by every caller waiting for it."""
        if self.checks is None:
            return False
        if self._last is not None and self._clock() - self._last[0] < self._cache_s:
            return self._last[1]
        if self._running is None:
            self._running = asyncio.create_task(self._run(), name="readiness")
        # shielded: a probe that hangs up does not cancel the others' run
        return await asyncio.shield(self._running)

    async def _run(self) -> bool:
        try:
            ok, _ = await self.detailed()
            self._last = (self._clock(), ok)
            return ok
        finally:
            self._running = None
