"""Run the gateway under uvicorn, with a graceful shutdown that drains in-flight queries.

Two listeners in one process: the public one (``AICHAT_GATEWAY_HOST``/``_PORT``:
the websocket, liveness, ready-or-not, the chat page) and the operator one
(``AICHAT_GATEWAY_OPS_HOST``/``_PORT``, plain HTTP, default 127.0.0.1 and the
gateway's port + 1: ``/metrics`` and the detailed readiness). The operator listener
opens first (readiness says "starting" until the app is up) and closes last.

On SIGTERM/SIGINT the server stops accepting connections, refuses new queries
(``shutting_down``), waits up to ``shutdown_timeout_s`` for the queries in flight
to finish, fails those still running with ``shutting_down``, then closes the
websockets (1012, "service restart": clients reconnect to another replica) and
runs the lifespan shutdown (cancellations flushed, producer and router stop).

With ``AICHAT_GATEWAY_TLS_CERTFILE``/``_KEYFILE`` it serves ``https://`` and
``wss://``. Tokens in ``?token=`` never reach the log: uvicorn's own lines
(which include the query string) pass through :class:`RedactTokens`, which also
cuts long URLs short and drops uvicorn's line of an upgrade the app refused (the
app logs that one itself, rate-limited).
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
from query_gateway.errors import GatewayError
from query_gateway.hub import Hub
from query_gateway.refusals import RefusalLog, excerpt

logger = logging.getLogger(__name__)

#: frames up to this size reach the app (and get a ``frame_too_large`` error frame above
#: ``max_frame_bytes``); bigger ones close the connection with 1009
WS_HARD_LIMIT_BYTES = 1024 * 1024
#: characters of a string argument of uvicorn's log lines (a URL with its query string)
LOG_ARG_CHARS = 256


class OperatorServer(uvicorn.Server):
    """The operator listener; started and stopped by :class:`GatewayServer` (it never
    runs ``serve()``, so it leaves the signals to the gateway)."""

    async def start(self) -> None:
        if not self.config.loaded:
            self.config.load()
        self.lifespan = self.config.lifespan_class(self.config)
        try:
            await self.startup()
        except SystemExit:  # uvicorn's answer to a port it cannot bind (logged above)
            raise GatewayError(
                f"the operator listener cannot listen on {self.config.host}:{self.config.port} "
                "(AICHAT_GATEWAY_OPS_HOST / AICHAT_GATEWAY_OPS_PORT)"
            ) from None

    async def stop(self) -> None:
        """Idempotent."""
        if self.started:
            self.started = False
            await self.shutdown()

    @property
    def port(self) -> int:
        return int(self.servers[0].sockets[0].getsockname()[1])


class GatewayServer(uvicorn.Server):
    def __init__(
        self,
        config: uvicorn.Config,
        hub: Hub,
        drain_timeout_s: float,
        operator: OperatorServer,
    ) -> None:
        super().__init__(config)
        self._hub = hub
        self._drain_timeout_s = drain_timeout_s
        self.operator = operator

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await self.operator.start()
        try:
            await super().startup(sockets)
        except BaseException:  # the lifespan or the public port failed: SystemExit
            await self.operator.stop()
            raise

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:  # stop accepting first; super() closes them again (no-op)
            server.close()
        try:
            await self._hub.drain(self._drain_timeout_s)
            await super().shutdown(sockets)
        finally:
            await self.operator.stop()

    @property
    def port(self) -> int:
        """The bound port (useful with ``gateway_port=0``)."""
        return int(self.servers[0].sockets[0].getsockname()[1])

    @property
    def operator_port(self) -> int:
        """The operator listener's bound port (useful with ``gateway_ops_port=0``)."""
        return self.operator.port


_TOKEN_IN_URL = re.compile(r"([?&](?:token|access_token)=)[^&\s\"']+")


def redact(text: str) -> str:
    return _TOKEN_IN_URL.sub(r"\1[redacted]", text)


#: uvicorn's lines of a refused upgrade: its false alarm, and the handshake line that
#: repeats the client's URL (the app's own line says the same, rate-limited)
_REFUSED_UPGRADE_LINES = (
    "ASGI callable returned without completing handshake",
    '%s - "WebSocket %s"',
    "connection rejected",  # the websockets library's own line of the same response
)


#: per-connection lines of uvicorn / websockets about requests they refuse themselves (a
#: malformed upgrade, garbage instead of HTTP): each at most once per interval
_PROTOCOL_REFUSAL_LINES = ("connection rejected", "Invalid HTTP request received")


def _clip(value: object) -> object:
    if not isinstance(value, str):
        return value
    value = redact(value)
    return excerpt(value, LOG_ARG_CHARS, quote=False) if len(value) > LOG_ARG_CHARS else value


class RedactTokens(logging.Filter):
    """Replace ``token=…`` in a log line's message and arguments and cut long arguments
    short; drop uvicorn's lines of an upgrade the app refused (the app logs it, rate-limited)
    and rate-limit the server's own lines of requests it refuses."""

    def __init__(self, interval_s: float = 10.0) -> None:
        super().__init__()
        self.throttle = RefusalLog(interval_s, max_keys=64)

    def filter(self, record: logging.LogRecord) -> bool:
        text = str(record.msg)
        if REFUSED_UPGRADE.get() and text.startswith(_REFUSED_UPGRADE_LINES):
            return False
        if text.startswith(_PROTOCOL_REFUSAL_LINES):
            suppressed = self.throttle.admit("server", record.getMessage()[:64])
            if suppressed is None:
                return False
            if suppressed:
                record.msg = f"{record.getMessage()} ({suppressed} more like it suppressed since the last line)"
                record.args = ()
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_clip(a) for a in record.args)
        return True


def _install_redaction(interval_s: float) -> None:
    for name in ("uvicorn.error", "uvicorn.access", "uvicorn"):
        target = logging.getLogger(name)
        for existing in [f for f in target.filters if isinstance(f, RedactTokens)]:
            target.removeFilter(existing)  # a later server's settings win
        target.addFilter(RedactTokens(interval_s))


def build_server(settings: GatewaySettings, app: Starlette | None = None) -> GatewayServer:
    app = app if app is not None else create_app(settings)
    _install_redaction(settings.refusal_log_interval_s)
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
        forwarded_allow_ips=settings.gateway_trusted_proxies,
    )
    operator = OperatorServer(
        uvicorn.Config(
            app.state.operator,
            host=settings.gateway_ops_host,
            port=settings.ops_port,
            ws="none",
            lifespan="off",  # the public app's lifespan opens and closes the clients
            log_config=None,
            timeout_graceful_shutdown=2,
        )
    )
    return GatewayServer(config, app.state.hub, settings.shutdown_timeout_s, operator)


async def serve_async(settings: GatewaySettings, app: Starlette | None = None) -> None:
    server = build_server(settings, app)
    await server.serve()
    if not server.started:
        raise GatewayError("the gateway did not start (see the log above)")


def serve(settings: GatewaySettings, app: Starlette | None = None) -> None:
    """Run until SIGINT/SIGTERM; raise :class:`GatewayError` when startup failed."""
    asyncio.run(serve_async(settings, app))
