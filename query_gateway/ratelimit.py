"""Per-user query budgets: a token bucket of ``burst`` queries refilled at
``per_minute / 60`` queries per second.

    limiter.acquire(key) -> float | None     None: go ahead; a float: retry after that many s

:class:`LocalRateLimiter` keeps the buckets in this process (one replica);
:class:`RedisRateLimiter` keeps them in Redis, updated by one Lua script per
query (atomic, on Redis's own clock), so every replica draws from the same
bucket. :func:`build_rate_limiter` picks Redis when ``AICHAT_REDIS_URL`` is set.

:class:`FailOpen` is the gateway's policy when the limiter itself fails (Redis
down, or slower than its timeout): the query goes through, counted in
``aichat_gateway_rate_limiter_errors_total`` and logged at most once per interval.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from typing import Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from query_gateway.config import GatewaySettings
from query_gateway.errors import GatewayError
from query_gateway.metrics import RATE_LIMITER_ERRORS

logger = logging.getLogger(__name__)


class RateLimiterUnavailable(GatewayError):
    code = "rate_limiter_unavailable"
    retriable = True


class RateLimiter(Protocol):
    async def start(self) -> None: ...

    async def aclose(self) -> None: ...

    async def acquire(self, key: str) -> float | None:
        """Take one query from ``key``'s bucket; the wait in seconds when it is empty."""
        ...

    async def check(self) -> str:
        """Readiness detail; raise when unusable."""
        ...


class LocalRateLimiter:
    """Buckets in a bounded LRU map: at most ``max_keys`` users are remembered."""

    def __init__(self, per_minute: float, burst: int, *, max_keys: int = 100_000) -> None:
        self._rate = per_minute / 60.0
        self._burst = float(burst)
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        self._buckets.clear()

    async def acquire(self, key: str) -> float | None:
        return self.take(key, time.monotonic())

    def take(self, key: str, now: float) -> float | None:
        tokens, last = self._buckets.pop(key, (self._burst, now))
        tokens = min(self._burst, tokens + max(0.0, now - last) * self._rate)
        wait = None
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self._rate
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)  # least recently used: a full bucket by now
        return wait

    async def check(self) -> str:
        return f"in-process buckets ({len(self._buckets)} users)"


# KEYS[1] bucket; ARGV: rate (tokens/s), burst. Returns {allowed, wait_s as string}.
# Redis's TIME, not the replicas' clocks; floats stored as strings (Lua numbers
# returned to Redis would be truncated to integers).
_TOKEN_BUCKET = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or burst
local ts = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local allowed = 0
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {allowed, tostring(wait)}
"""


class RedisRateLimiter:
    """Buckets shared by every replica, in Redis (redis-py's asyncio client)."""

    def __init__(
        self,
        url: str,
        per_minute: float,
        burst: int,
        *,
        prefix: str = "aichat:",
        timeout_s: float = 0.5,
    ) -> None:
        self._redis = aioredis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, decode_responses=True
        )
        self._script = self._redis.register_script(_TOKEN_BUCKET)
        self._rate = per_minute / 60.0
        self._burst = burst
        self._prefix = f"{prefix}ratelimit:"
        self._url_shown = _without_password(url)

    async def start(self) -> None:
        try:
            await self._redis.ping()
        except (RedisError, OSError, TimeoutError) as exc:
            raise RateLimiterUnavailable(
                f"cannot reach Redis at {self._url_shown}: {exc!r}"
            ) from exc
        logger.info("rate limits shared through Redis at %s", self._url_shown)

    async def aclose(self) -> None:
        await self._redis.aclose()

    async def acquire(self, key: str) -> float | None:
        try:
            allowed, wait = await self._script(
                keys=[self._prefix + key], args=[self._rate, self._burst]
            )
        except (RedisError, OSError, TimeoutError) as exc:
            raise RateLimiterUnavailable(f"Redis at {self._url_shown}: {exc!r}") from exc
        return None if int(allowed) == 1 else float(wait)

    async def check(self) -> str:
        await self._redis.ping()
        return f"redis at {self._url_shown}"


def _without_password(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.split("@", 1)[1]
    return f"{scheme}{sep}{rest}"


def build_rate_limiter(settings: GatewaySettings) -> LocalRateLimiter | RedisRateLimiter:
    if settings.redis_url is None:
        return LocalRateLimiter(settings.rate_limit_per_minute, settings.rate_limit_burst)
    return RedisRateLimiter(
        settings.redis_url.get_secret_value(),
        settings.rate_limit_per_minute,
        settings.rate_limit_burst,
        prefix=settings.redis_key_prefix,
        timeout_s=settings.redis_timeout_s,
    )


class FailOpen:
    """Ask ``limiter``, but let the query through when it fails or takes over ``timeout_s``:
    an outage of the rate limiter must not become an outage of the chat. Each failure is
    counted; a warning is logged at most once per ``warn_every_s``."""

    def __init__(self, limiter: RateLimiter, timeout_s: float, *, warn_every_s: float = 10.0) -> None:
        self._limiter = limiter
        self._timeout_s = timeout_s
        self._warn_every_s = warn_every_s
        self._warned_at = 0.0

    async def acquire(self, key: str) -> float | None:
        """Seconds to wait before ``key`` may ask again; None = go ahead."""
        try:
            async with asyncio.timeout(self._timeout_s):
                return await self._limiter.acquire(key)
        except (GatewayError, TimeoutError) as exc:
            RATE_LIMITER_ERRORS.inc()
            now = time.monotonic()
            if now - self._warned_at > self._warn_every_s:
                self._warned_at = now
                logger.warning("rate limiter unavailable, letting queries through: %r", exc)
            return None
