"""The Starlette app: websocket ``/ws``, health, metrics, the chat page.

    create_app(settings, transport=None, checks=None, http_transport=None) -> Starlette

The lifespan opens the HTTP client of the readiness checks and starts the
transport (Kafka producer + answer router positioned on the reply partition)
before the server accepts a connection, and stops both on the way out. Tests
swap Kafka for an in-process double through ``transport`` and the readiness
probes through ``checks`` or ``http_transport`` (an ``httpx.MockTransport``):
no patching.

Unhandled errors of HTTP routes are logged with an ``error_id`` and answered
``500 {"error": "internal", "error_id": …}``, nothing more.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypedDict

import httpx
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from query_gateway.auth import authenticate
from query_gateway.config import GatewaySettings
from query_gateway.connection import Connection, Hub
from query_gateway.health import Check, default_checks, run_checks
from query_gateway.transport import KafkaTransport, Transport

logger = logging.getLogger(__name__)

INDEX_HTML = Path(__file__).parent / "static" / "index.html"


class GatewayState(TypedDict):
    hub: Hub
    checks: Mapping[str, Check]


def create_app(
    settings: GatewaySettings,
    *,
    transport: Transport | None = None,
    checks: Mapping[str, Check] | None = None,
    http_transport: httpx.AsyncBaseTransport | None = None,
) -> Starlette:
    """The gateway app; ``transport`` defaults to :class:`KafkaTransport` from ``settings``."""
    hub = Hub(settings, transport if transport is not None else KafkaTransport(settings))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[GatewayState]:
        async with httpx.AsyncClient(
            transport=http_transport, timeout=settings.readiness_timeout_s
        ) as http:
            await hub.transport.start()
            try:
                yield {
                    "hub": hub,
                    "checks": checks
                    if checks is not None
                    else default_checks(settings, hub.transport, http),
                }
            finally:
                await hub.transport.stop()

    app = Starlette(
        routes=[
            WebSocketRoute("/ws", _websocket),
            Route("/health/live", _live),
            Route("/health/ready", _ready),
            Route("/metrics", _metrics),
            Route("/", _index),
        ],
        middleware=[Middleware(ErrorIdMiddleware)],
        lifespan=lifespan,
        max_body_size=64 * 1024,
    )
    app.state.hub = hub  # the server drains it on shutdown
    return app


async def _websocket(websocket: WebSocket) -> None:
    hub: Hub = websocket.state.hub
    await Connection(websocket, hub, authenticate(websocket)).serve()


async def _live(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def _ready(request: Request) -> Response:
    hub: Hub = request.state.hub
    ok, results = await run_checks(dict(request.state.checks), hub.settings.readiness_timeout_s)
    if hub.draining:
        ok = False
    body = {"status": "ready" if ok else "not_ready", "draining": hub.draining, "checks": results}
    return JSONResponse(body, status_code=200 if ok else 503)


async def _metrics(request: Request) -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


async def _index(request: Request) -> Response:
    return FileResponse(INDEX_HTML, media_type="text/html; charset=utf-8")


class ErrorIdMiddleware:
    """Log an unhandled HTTP error with an ``error_id``; answer 500 with that id only."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_tracking(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, send_tracking)
        except Exception:
            error_id = str(uuid.uuid4())
            logger.exception(
                "unhandled error in %s %s (error_id %s)",
                scope.get("method"),
                scope.get("path"),
                error_id,
                extra={"error_id": error_id},
            )
            if started:  # too late for a clean 500; the server closes the response
                return
            response = JSONResponse({"error": "internal", "error_id": error_id}, status_code=500)
            await response(scope, receive, send)
