"""The ingest backlog as operators see it: the worker's readiness body, the gateway's detail."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any, cast

import httpx
from starlette.testclient import TestClient

from query_gateway.config import GatewaySettings
from query_gateway.health import default_checks
from query_gateway.transport import Transport
from streams.lag import Backlog
from streams.resources import AgentContext
from streams.worker import health_app


def ready_body(backlog: Backlog | None) -> tuple[int, dict[str, Any]]:
    ctx = SimpleNamespace(started=SimpleNamespace(is_set=lambda: True), embedder=None, sink=None)
    with TestClient(health_app(cast(AgentContext, ctx), "ingest", backlog)) as client:
        response = client.get("/health/ready")
    return response.status_code, response.json()


def test_a_busy_worker_is_ready_and_shows_its_backlog_per_topic() -> None:
    backlog = Backlog(prefix="t1.")
    assert ready_body(backlog)[1].get("backlog") is None  # nothing measured yet: nothing claimed
    backlog.update({("t1.documents", 0): 4000, ("t1.documents", 1): 140, ("t1.chunks", 0): 6140,
                    ("t1.embeddings", 0): 0}, {"t1.documents": 477.04})
    status, body = ready_body(backlog)
    assert (status, body["status"], body["busy"]) == (200, "ok", True)
    assert {k: v for k, v in body["backlog"].items() if k != "measured_s_ago"} == {
        "documents": 4140, "chunks": 6140, "embeddings": 0, "oldest_documents_s": 477.0}
    assert 0 <= body["backlog"]["measured_s_ago"] < 5


def test_an_idle_worker_is_not_busy() -> None:
    backlog = Backlog()
    backlog.update({("documents", 0): 0}, {})
    backlog.measured_at = time.time() - 12
    status, body = ready_body(backlog)
    assert (status, body["busy"], body["backlog"]["documents"]) == (200, False, 0)
    assert body["backlog"]["measured_s_ago"] >= 12


async def test_the_gateways_detailed_readiness_names_the_workers_backlog() -> None:
    bodies = {"w1": {"status": "ok", "busy": True, "backlog": {"queries": 3, "measured_s_ago": 1.0}},
              "w2": {"status": "ok", "busy": True, "backlog": {"queries": 5, "oldest_documents_s": 9.0}}}

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=bodies[request.url.host])

    settings = GatewaySettings(gateway_auth="disabled",
                               worker_health_urls=["http://w1:6066/health/ready", "http://w2:6066/health/ready"])
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        model = default_checks(settings, cast(Transport, SimpleNamespace(check=None)), http)["model"]
        assert await model() == "2 worker(s) ready; backlog queries 5"
        bodies["w1"] = bodies["w2"] = {"status": "ok"}  # workers that report no backlog
        assert await model() == "2 worker(s) ready"
