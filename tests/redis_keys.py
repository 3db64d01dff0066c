"""The stack's Redis for the answer-cache tests: started when it is not running (an optional
service of the stack, never stopped here), and the keys of one test's prefix dropped after it."""

from __future__ import annotations

import redis.asyncio as aioredis

from infra import stack
from infra.config import StackSettings
from infra.redis.launcher import DEFAULT_PORT
from streams.config import load_settings

REDIS_URL = f"redis://127.0.0.1:{DEFAULT_PORT}/0"


def stack_redis() -> str:
    """The URL of the stack's Redis, started if needed."""
    stack.up(load_settings(StackSettings), services=["redis"])
    return REDIS_URL


async def drop_keys(prefix: str, url: str = REDIS_URL) -> None:
    client = aioredis.Redis.from_url(url)
    try:
        keys = [k async for k in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()
