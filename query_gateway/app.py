"""The Starlette apps: the public one (websocket ``/ws``, liveness, ready-or-not, the
chat page) and the operator one (``/metrics``, the detailed readiness).

    create_app(settings, transport=None, checks=None, http_transport=None,
               limiter=None, authenticator=None) -> Starlette
    app.state.operator                                   the operator app (same hub, same checks)

The websocket upgrade is refused before it opens, with an HTTP status and a JSON
body ``{"error", "code", "message", "error_id"}``, when the browser Origin is not
allowed (403), the token is missing, invalid or expired (401), or a connection cap
is reached (429 ``too_many_connections`` for the user or the client address, 503
``gateway_busy`` for the replica). Auth refusals count in
``aichat_gateway_auth_refused_total{reason}``, cap refusals in
``aichat_gateway_connections_refused_total{limit}``; their log lines are rate-limited
per client address and reason (:class:`~query_gateway.refusals.RefusalLog`).

The public ``/health/ready`` answers ``{"status": "ready"}`` (200) or
``{"status": "not_ready"}`` (503) and nothing more. The operator app, served on its
own listener (:mod:`query_gateway.server`), names every check and serves ``/metrics``.

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

from query_gateway.admission import client_key
from query_gateway.auth import Authenticator, build_authenticator, check_origin
from query_gateway.config import GatewaySettings
from query_gateway.connection import Connection
from query_gateway.errors import HandshakeRefused, TooManyConnections, Unauthorized
from query_gateway.health import Check, Readiness, default_checks
from query_gateway.history import History
from query_gateway.hub import Hub
from query_gateway.metrics import AUTH_REFUSED
from query_gateway.ratelimit import RateLimiter, build_rate_limiter
from query_gateway.refusals import MESSAGE_CHARS, excerpt
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


#: the ``error`` word of a refused upgrade's body, by HTTP status
_STATUS_WORDS = {401: "unauthorized", 403: "forbidden", 429: "too_many_requests", 503: "unavailable"}
NO_STORE = {"Cache-Control": "no-store"}


class GatewayState(TypedDict):
    hub: Hub
    auth: Authenticator
    readiness: Readiness


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
    if transport is None:  # Kafka: conversations are read from it too
        hub.history = History(settings)
    readiness = Readiness(settings.readiness_timeout_s, settings.readiness_cache_s)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[GatewayState]:
        async with httpx.AsyncClient(
            transport=http_transport, timeout=settings.readiness_timeout_s
        ) as http:
            await hub.limiter.start()
            try:
                await hub.transport.start()
                try:
                    if hub.history is not None:
                        await hub.history.start()
                    named = (
                        dict(checks)
                        if checks is not None
                        else default_checks(settings, hub.transport, http)
                    )
                    if checks is None and settings.redis_url is not None:
                        named["redis"] = hub.limiter.check
                    readiness.checks = named
                    yield {"hub": hub, "auth": auth, "readiness": readiness}
                finally:
                    readiness.checks = None
                    await hub.aclose(settings.produce_timeout_s)
                    if hub.history is not None:
                        await hub.history.stop()
                    await hub.transport.stop()
            finally:
                await hub.limiter.aclose()

    app = Starlette(
        routes=[
            WebSocketRoute("/ws", _websocket),
            Route("/health/live", _live),
            Route("/health/ready", _ready),
            Route("/", _index),
        ],
        middleware=[Middleware(ErrorIdMiddleware)],
        lifespan=lifespan,
        max_body_size=64 * 1024,
    )
    app.state.hub = hub  # the server drains it on shutdown
    app.state.operator = create_operator_app(hub, readiness)
    return app


def create_operator_app(hub: Hub, readiness: Readiness) -> Starlette:
    """``/metrics``, ``/health/ready`` with every check named, ``/health/live``: for the
    operator listener only. No lifespan of its own: the public app's opens the clients."""
    app = Starlette(
        routes=[
            Route("/health/live", _live),
            Route("/health/ready", _ready_detailed),
            Route("/metrics", _metrics),
        ],
        middleware=[Middleware(ErrorIdMiddleware)],
    )
    app.state.hub = hub
    app.state.readiness = readiness
    return app


async def _websocket(websocket: WebSocket) -> None:
    hub: Hub = websocket.state.hub
    auth: Authenticator = websocket.state.auth
    client = client_key(websocket.client.host if websocket.client else None)
    try:
        check_origin(websocket, hub.settings.gateway_allowed_origins)
        principal = auth.authenticate(websocket)
        slot = hub.caps.admit(f"{principal.tenant}/{principal.user}", client)
    except HandshakeRefused as exc:
        await _refuse(websocket, exc, hub, client)
        return
    try:
        await Connection(websocket, hub, principal, client=client).serve()
    finally:
        slot.release()


async def _refuse(websocket: WebSocket, exc: HandshakeRefused, hub: Hub, client: str) -> None:
    """Answer the upgrade with ``exc.status`` and a JSON body (close with ``exc.close_code``
    where the server cannot send an HTTP response to a websocket request)."""
    if not isinstance(exc, TooManyConnections):  # those count where the cap is checked
        AUTH_REFUSED.labels(reason=exc.reason).inc()
    REFUSED_UPGRADE.set(True)
    error_id = str(uuid.uuid4())
    hub.refusals.log(
        client,
        f"upgrade/{exc.reason}",
        "websocket from %s refused (%s/%s, error_id %s): %s",
        client,
        exc.code,
        exc.reason,
        error_id,
        excerpt(exc.message, MESSAGE_CHARS, quote=False),
        extra={"error_id": error_id},
    )
    body = {
        "error": _STATUS_WORDS.get(exc.status, "refused"),
        "code": exc.code,
        "message": exc.message,
        "error_id": error_id,
    }
    headers = dict(NO_STORE)
    if isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = f'Bearer realm="aichat", error="{exc.code}"'
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(
            JSONResponse(body, status_code=exc.status, headers=headers)
        )
    else:
        await websocket.close(exc.close_code, exc.code)


async def _live(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def _ready(request: Request) -> Response:
    """Public: ready or not, nothing about what is behind it."""
    hub: Hub = request.state.hub
    readiness: Readiness = request.state.readiness
    ok = not hub.draining and await readiness.ready()
    return JSONResponse(
        {"status": "ready" if ok else "not_ready"}, status_code=200 if ok else 503, headers=NO_STORE
    )


async def _ready_detailed(request: Request) -> Response:
    hub: Hub = request.app.state.hub
    readiness: Readiness = request.app.state.readiness
    ok, results = await readiness.detailed()
    body: dict[str, object] = {"draining": hub.draining, "checks": results}
    if readiness.checks is None:
        body["detail"] = "the gateway is starting or stopping"
    ok = ok and not hub.draining
    return JSONResponse(
        {"status": "ready" if ok else "not_ready", **body},
        status_code=200 if ok else 503,
        headers=NO_STORE,
    )


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
