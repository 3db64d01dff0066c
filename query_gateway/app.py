"""The Starlette app: websocket ``/ws``, health, metrics, the chat page.

    create_app(settings, transport=None, checks=None, http_transport=None,
               limiter=None, authenticator=None) -> Starlette

The websocket upgrade is refused before it opens, with an HTTP status and a JSON
body ``{"error", "code", "message", "error_id"}``, when the browser Origin is not
allowed (403) or the token is missing, invalid or expired (401); each refusal
counts in ``aichat_gateway_auth_refused_total{reason}``.

The lifespan opens the HTTP client of the readiness checks, the rate limiter
(Redis when configured) and the transport (Kafka producer + answer router
positioned on the reply partition) before the server accepts a connection, and
closes them on the way out. Tests swap Kafka for an in-process double through
``transport`` and the readiness probes through ``checks`` or ``http_transport``
(an ``httpx.MockTransport``): no patching.

Unhandled errors of HTTP routes are logged with an ``error_id`` and answered
``500 {"error": "internal", "error_id": …}``, nothing more.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from contextvars import ContextVar
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

from query_gateway.auth import Authenticator, build_authenticator, check_origin
from query_gateway.config import GatewaySettings
from query_gateway.connection import Connection, Hub
from query_gateway.errors import HandshakeRefused, Unauthorized
from query_gateway.health import Check, default_checks, run_checks
from query_gateway.metrics import AUTH_REFUSED
from query_gateway.ratelimit import RateLimiter, build_rate_limiter
from query_gateway.transport import KafkaTransport, Transport

logger = logging.getLogger(__name__)

INDEX_HTML = Path(__file__).parent / "static" / "index.html"

#: set in the task of a refused upgrade: uvicorn then logs "ASGI callable returned
#: without completing handshake" at ERROR, which the server's log filter drops
REFUSED_UPGRADE: ContextVar[bool] = ContextVar("refused_upgrade", default=False)


PAGE_HEADERS = {
    # the page may carry ?token=: never send it on as a Referer, never cache it
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; "
    "style-src 'unsafe-inline'; connect-src 'self' ws: wss:; frame-ancestors 'none'",
}


class GatewayState(TypedDict):
    hub: Hub
    auth: Authenticator
    checks: Mapping[str, Check]


def create_app(
    settings: GatewaySettings,
    *,
    transport: Transport | None = None,
    checks: Mapping[str, Check] | None = None,
    http_transport: httpx.AsyncBaseTransport | None = None,
    limiter: RateLimiter | None = None,
    authenticator: Authenticator | None = None,
) -> Starlette:
    """The gateway app; ``transport`` defaults to :class:`KafkaTransport` from ``settings``.

    Raises :class:`~streams.errors.ConfigError` when authentication is on without a key."""
    auth = authenticator if authenticator is not None else build_authenticator(settings)
    hub = Hub(
        settings,
        transport if transport is not None else KafkaTransport(settings),
        limiter if limiter is not None else build_rate_limiter(settings),
    )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[GatewayState]:
        async with httpx.AsyncClient(
            transport=http_transport, timeout=settings.readiness_timeout_s
        ) as http:
            await hub.limiter.start()
            try:
                await hub.transport.start()
                try:
                    named = (
                        dict(checks)
                        if checks is not None
                        else default_checks(settings, hub.transport, http)
                    )
                    if checks is None and settings.redis_url is not None:
                        named["redis"] = hub.limiter.check
                    yield {"hub": hub, "auth": auth, "checks": named}
                finally:
                    await hub.aclose(settings.produce_timeout_s)
                    await hub.transport.stop()
            finally:
                await hub.limiter.aclose()

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
    auth: Authenticator = websocket.state.auth
    try:
        check_origin(websocket, hub.settings.gateway_allowed_origins)
        principal = auth.authenticate(websocket)
    except HandshakeRefused as exc:
        await _refuse(websocket, exc)
        return
    await Connection(websocket, hub, principal).serve()


async def _refuse(websocket: WebSocket, exc: HandshakeRefused) -> None:
    """Answer the upgrade with ``exc.status`` and a JSON body (close 1008 where the
    server cannot send an HTTP response to a websocket request)."""
    AUTH_REFUSED.labels(reason=exc.reason).inc()
    REFUSED_UPGRADE.set(True)
    error_id = str(uuid.uuid4())
    client = websocket.client.host if websocket.client else "?"
    logger.info(
        "websocket from %s refused (%s/%s, error_id %s): %s",
        client,
        exc.code,
        exc.reason,
        error_id,
        exc.message,
        extra={"error_id": error_id},
    )
    body = {
        "error": "unauthorized" if exc.status == 401 else "forbidden",
        "code": exc.code,
        "message": exc.message,
        "error_id": error_id,
    }
    headers = {"Cache-Control": "no-store"}
    if isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = f'Bearer realm="aichat", error="{exc.code}"'
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(
            JSONResponse(body, status_code=exc.status, headers=headers)
        )
    else:
        await websocket.close(1008, exc.code)


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
    return FileResponse(INDEX_HTML, media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)


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
