"""A small websocket client of the gateway: ``ask()`` yields the server frames of one query.

    async for frame in ask("ws://127.0.0.1:8000/ws", "what is kafka?", top_k=5, token=jwt):
        ...  # ack, sources, token…, then done or error (the last one)

The token goes in the ``Authorization: Bearer`` header (a ``?token=`` already in
the URL works too); ``wss://`` URLs use ``ssl`` (an ``ssl.SSLContext``, e.g. one
trusting a private CA). Used by ``aichat ask``, the tests and the benchmarks.
"""

from __future__ import annotations

import asyncio
import ssl as ssl_
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from query_gateway.errors import (
    GatewayBusy,
    GatewayUnreachable,
    HandshakeRefused,
    OriginNotAllowed,
    TooManyConnections,
    Unauthorized,
)

FINAL = frozenset({"done", "error"})


def handshake_error(exc: InvalidStatus) -> HandshakeRefused:
    """The gateway's refusal of an upgrade (401/403/429/503 with a JSON body) as an exception."""
    response = exc.response
    try:
        body = orjson.loads(response.body or b"{}")
    except orjson.JSONDecodeError:
        body = {}
    code = body.get("code") if isinstance(body, dict) else None
    message = body.get("message") if isinstance(body, dict) else None
    text = f"HTTP {response.status_code}: {message or response.reason_phrase}"
    if response.status_code == 401:
        return Unauthorized(text, code=code or "invalid_token")
    if response.status_code == 403:
        return OriginNotAllowed(text, code=code or "forbidden")
    if response.status_code == 429:
        return TooManyConnections(text, code=code or "too_many_connections")
    if response.status_code == 503:
        return GatewayBusy(text, code=code or "gateway_busy")
    refused = HandshakeRefused(text, code=code or f"http_{response.status_code}")
    refused.status = response.status_code
    return refused


def connect_gateway(
    url: str,
    *,
    token: str | None = None,
    ssl: ssl_.SSLContext | None = None,
    open_timeout_s: float = 10.0,
    origin: str | None = None,
    **kwargs: Any,
) -> connect:
    """``websockets`` ``connect()`` with the bearer token and TLS context set."""
    headers = {"Authorization": f"Bearer {token}"} if token else None
    if ssl is not None:  # wss:// with the default context otherwise
        kwargs["ssl"] = ssl
    return connect(
        url,
        additional_headers=headers,
        open_timeout=open_timeout_s,
        max_size=None,
        origin=origin,  # type: ignore[arg-type]
        **kwargs,
    )


async def ask(
    url: str,
    text: str,
    *,
    top_k: int = 5,
    filters: Mapping[str, str | int | float | bool] | None = None,
    client_id: str = "q1",
    idle_timeout_s: float = 30.0,
    open_timeout_s: float = 10.0,
    token: str | None = None,
    ssl: ssl_.SSLContext | None = None,
    conversation_id: str | None = None,
) -> AsyncIterator[dict[str, Any]]:
    """Send one query; yield its frames up to and including ``done`` or ``error``.

    ``conversation_id`` continues that conversation; without it the gateway starts one
    and names it in the ``ack`` frame.

    Raises :class:`Unauthorized` / :class:`OriginNotAllowed` / :class:`TooManyConnections`
    when the gateway refuses the upgrade, :class:`GatewayUnreachable` when it cannot be reached, stays silent
    for ``idle_timeout_s``, or closes the connection before a final frame.
    """
    query = {
        "type": "query",
        "id": client_id,
        "text": text,
        "top_k": top_k,
        "filters": dict(filters or {}),
    }
    if conversation_id:
        query["conversation_id"] = conversation_id
    try:
        async with connect_gateway(url, token=token, ssl=ssl, open_timeout_s=open_timeout_s) as ws:
            await ws.send(orjson.dumps(query).decode("utf-8"))
            async for frame in _frames(ws, url, client_id, idle_timeout_s):
                yield frame
                if frame.get("type") in FINAL:
                    return
    except InvalidStatus as exc:
        raise handshake_error(exc) from None
    except ConnectionClosed as exc:
        raise GatewayUnreachable(
            f"{url} closed the connection before the answer ended: {exc}"
        ) from exc
    except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as exc:
        raise GatewayUnreachable(f"cannot connect to {url}: {exc}") from exc


async def _frames(
    ws: ClientConnection, url: str, client_id: str, idle_timeout_s: float
) -> AsyncIterator[dict[str, Any]]:
    while True:
        try:
            raw = await asyncio.wait_for(ws.recv(), idle_timeout_s)
        except TimeoutError:
            raise GatewayUnreachable(f"no frame from {url} for {idle_timeout_s:g}s") from None
        frame = orjson.loads(raw)
        if frame.get("id") not in (client_id, None):
            continue
        yield frame
