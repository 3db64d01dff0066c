"""Per-user rate limits shared by gateway replicas through the stack's Redis
(Debian's redis-server, started here through the stack when it is not running)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from infra import stack
from infra.config import StackSettings
from infra.redis.launcher import DEFAULT_PORT
from query_gateway.ratelimit import RateLimiterUnavailable, RedisRateLimiter
from streams.config import WorkerSettings, load_settings

pytestmark = pytest.mark.integration

REDIS_URL = f"redis://127.0.0.1:{DEFAULT_PORT}/0"


@pytest.fixture(scope="module")
def redis_url(services: WorkerSettings) -> str:
    """The stack's Redis: started (optional service) when not running; never stopped here."""
    stack.up(load_settings(StackSettings), services=["redis"])
    return REDIS_URL


@pytest.fixture
async def prefix(redis_url: str, unique: str) -> AsyncIterator[str]:
    prefix = f"it-{unique}:"
    yield prefix
    client = aioredis.Redis.from_url(redis_url)
    try:
        keys = [k async for k in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


async def test_two_replicas_draw_from_one_bucket_per_user(redis_url: str, prefix: str) -> None:
    replicas = [RedisRateLimiter(redis_url, per_minute=6, burst=3, prefix=prefix) for _ in range(2)]
    for limiter in replicas:
        await limiter.start()
    try:
        a, b = replicas
        assert [await a.acquire("acme/alice"), await b.acquire("acme/alice"),
                await a.acquire("acme/alice")] == [None, None, None]
        waits = [await b.acquire("acme/alice"), await a.acquire("acme/alice")]
        assert all(w is not None and 9.0 < w <= 10.0 for w in waits), waits  # 6/min: 10 s each
        assert await b.acquire("acme/bob") is None  # another user, another bucket
        assert await a.acquire("other/alice") is None  # same name, other tenant
        client = aioredis.Redis.from_url(redis_url)
        try:
            ttl_ms = await client.pttl(f"{prefix}ratelimit:acme/alice")
        finally:
            await client.aclose()
        assert 0 < ttl_ms <= 31_000  # forgotten once it would be full again (3 × 10 s + 1 s)
    finally:
        for limiter in replicas:
            await limiter.aclose()


async def test_bucket_refills_on_redis_time(redis_url: str, prefix: str) -> None:
    limiter = RedisRateLimiter(redis_url, per_minute=1200, burst=1, prefix=prefix)  # 20 per s
    await limiter.start()
    try:
        assert await limiter.acquire("u") is None
        wait = await limiter.acquire("u")
        assert wait is not None and 0 < wait <= 0.05
        await asyncio.sleep(wait + 0.02)
        assert await limiter.acquire("u") is None
    finally:
        await limiter.aclose()


async def test_unreachable_redis_is_named_without_its_password() -> None:
    limiter = RedisRateLimiter("redis://:hunter2@127.0.0.1:1/0", 60, 10, timeout_s=0.5)
    try:
        with pytest.raises(RateLimiterUnavailable) as exc:
            await limiter.start()
        assert "127.0.0.1:1" in str(exc.value) and "hunter2" not in str(exc.value)
        with pytest.raises(RateLimiterUnavailable):
            await limiter.acquire("u")
    finally:
        await limiter.aclose()
