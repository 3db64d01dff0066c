"""Run the gateway under uvicorn, with a graceful shutdown that drains in-flight queries.

On SIGTERM/SIGINT the server stops accepting connections, refuses new queries
(``shutting_down``), waits up to ``shutdown_timeout_s`` for the queries in flight
to finish, fails those still running with ``shutting_down``, then closes the
websockets (1012, "service restart": clients reconnect to another replica) and
runs the lifespan shutdown (cancellations flushed, producer and router stop).

With ``AICHAT_GATEWAY_TLS_CERTFILE``/``_KEYFILE`` it serves ``https://`` and
``wss://``. Tokens in ``?token=`` never reach the log: uvicorn's own lines
(which include the query string) pass through :class:`RedactTokens`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket

import uvicorn
from starlette.applications import Starlette

from query_gateway.app import REFUSED_UPGRADE, create_app
from query_gateway.config import GatewaySettings
from query_gateway.connection import Hub
from query_gateway.errors import GatewayError

logger = logging.getLogger(__name__)

#: frames up to this size reach the app (and get a ``frame_too_large`` error frame above
#: ``max_frame_bytes``); bigger ones close the connection with 1009
WS_HARD_LIMIT_BYTES = 1024 * 1024


class GatewayServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, hub: Hub, drain_timeout_s: float) -> None:
        super().__init__(config)
        self._hub = hub
        self._drain_timeout_s = drain_timeout_s

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:  # stop accepting first; super() closes them again (no-op)
            server.close()
        await self._hub.drain(self._drain_timeout_s)
        await super().shutdown(sockets)

    @property
    def port(self) -> int:
        """The bound port (useful with ``gateway_port=0``)."""
        return int(self.servers[0].sockets[0].getsockname()[1])


_TOKEN_IN_URL = re.compile(r"([?&](?:token|access_token)=)[^&\s\"']+")


def redact(text: str) -> str:
    return _TOKEN_IN_URL.sub(r"\1[redacted]", text)


class RedactTokens(logging.Filter):
    """Replace ``token=…`` in a log line's message and arguments; drop uvicorn's
    false alarm after an upgrade the app refused with an HTTP response."""

    def filter(self, record: logging.LogRecord) -> bool:
        if REFUSED_UPGRADE.get() and str(record.msg).startswith(
            "ASGI callable returned without completing handshake"
        ):
            return False
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        return True


def _install_redaction() -> None:
    for name in ("uvicorn.error", "uvicorn.access", "uvicorn"):
        target = logging.getLogger(name)
        if not any(isinstance(f, RedactTokens) for f in target.filters):
            target.addFilter(RedactTokens())


def build_server(settings: GatewaySettings, app: Starlette | None = None) -> GatewayServer:
    app = app if app is not None else create_app(settings)
    _install_redaction()
    config = uvicorn.Config(
        app,
        host=settings.gateway_host,
        port=settings.gateway_port,
        ws="websockets-sansio",  # the websockets library; uvicorn's legacy "websockets" is deprecated
        ws_max_size=max(WS_HARD_LIMIT_BYTES, settings.max_frame_bytes),
        ws_per_message_deflate=settings.ws_compression,
        ws_ping_interval=settings.ws_ping_interval_s,
        ws_ping_timeout=settings.ws_ping_timeout_s,
        lifespan="on",
        log_config=None,  # the entry point configures logging
        timeout_graceful_shutdown=int(settings.shutdown_timeout_s) + 5,
        ssl_certfile=settings.gateway_tls_certfile,
        ssl_keyfile=settings.gateway_tls_keyfile,
    )
    return GatewayServer(config, app.state.hub, settings.shutdown_timeout_s)


async def serve_async(settings: GatewaySettings, app: Starlette | None = None) -> None:
    server = build_server(settings, app)
    await server.serve()
    if not server.started:
        raise GatewayError("the gateway did not start (see the log above)")


def serve(settings: GatewaySettings, app: Starlette | None = None) -> None:
    """Run until SIGINT/SIGTERM; raise :class:`GatewayError` when startup failed."""
    asyncio.run(serve_async(settings, app))
