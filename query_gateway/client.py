"""A small websocket client of the gateway: ``ask()`` yields the server frames of one query.

    async for frame in ask("ws://127.0.0.1:8000/ws", "what is kafka?", top_k=5):
        ...  # ack, sources, token…, then done or error (the last one)

Used by ``aichat ask`` and by the tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from query_gateway.errors import GatewayUnreachable

FINAL = frozenset({"done", "error"})


async def ask(
    url: str,
    text: str,
    *,
    top_k: int = 5,
    filters: Mapping[str, str | int | float | bool] | None = None,
    client_id: str = "q1",
    idle_timeout_s: float = 30.0,
    open_timeout_s: float = 10.0,
) -> AsyncIterator[dict[str, Any]]:
    """Send one query; yield its frames up to and including ``done`` or ``error``.

    Raises :class:`GatewayUnreachable` when the gateway cannot be reached, stays
    silent for ``idle_timeout_s``, or closes the connection before a final frame.
    """
    query = {
        "type": "query",
        "id": client_id,
        "text": text,
        "top_k": top_k,
        "filters": dict(filters or {}),
    }
    try:
        async with connect(url, open_timeout=open_timeout_s, max_size=None) as ws:
            await ws.send(orjson.dumps(query).decode("utf-8"))
            while True:
                try:
                    raw = await asyncio.wait_for(ws.recv(), idle_timeout_s)
                except TimeoutError:
                    raise GatewayUnreachable(
                        f"no frame from {url} for {idle_timeout_s:g}s"
                    ) from None
                frame = orjson.loads(raw)
                if frame.get("id") not in (client_id, None):
                    continue
                yield frame
                if frame.get("type") in FINAL:
                    return
    except ConnectionClosed as exc:
        raise GatewayUnreachable(
            f"{url} closed the connection before the answer ended: {exc}"
        ) from exc
    except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as exc:
        raise GatewayUnreachable(f"cannot connect to {url}: {exc}") from exc
