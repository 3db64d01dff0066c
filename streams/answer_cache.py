"""The answer cache: a repeated question is answered from Redis, never from a stale document.

An entry is keyed by (tenant, normalised question, filters, top_k, variant, conversation
context, the index and answer settings) (:func:`entry_key`): the question NFKC-normalised,
case-folded and its whitespace collapsed (:func:`normalise_question`); the tenant is in the
key's name itself, so two tenants never share an entry. An entry holds the sources and the
answer text, and the (document, version) of every source: the version of the chunk as
Weaviate returned it.

**Invalidation.** Every document has a *floor* in Redis: the lowest version an answer may
cite. The ``indexed`` events raise it (:func:`floor_of`): ``indexed`` at version N → N
(chunks below N are gone), ``deleted`` at N → N + 1; ``unchanged`` and ``stale`` leave it
(an unchanged version keeps the chunks, and their version numbers, of the one before). A
reverse index per document (a hash: entry key → cited version) lets the same script
delete every entry that cites a version below the new floor. The answer workers' consumer
group consumes ``indexed`` (streams/answer_cache_agent.py); Redis is shared, so one
replica's invalidation holds for all.

**The race** — an answer computed from version 1 and stored *after* version 2's
invalidation — is closed by checking the floors in the same Lua script that writes the
entry (Redis runs scripts one at a time): the store is refused (``stale_refused``) when a
cited version is below its document's floor. Either the invalidation ran first (the store
sees the floor and refuses), or the store ran first (its entry is in the reverse index and
the invalidation deletes it). The indexer emits ``indexed`` only after the older chunks were
removed, so a search that still returned version 1 began before that event existed, and the
store follows it within the query's run (refused when longer than half the floor's TTL:
:meth:`AnswerCache.store`), while the floor lives for ``AICHAT_ANSWER_CACHE_FLOOR_TTL_S``.
A hit checks the floors again (a reverse index lost to eviction cannot resurrect an entry).

**Memory.** Every key has a TTL: entries ``AICHAT_ANSWER_CACHE_TTL_S``, reverse indices a
little longer than their newest entry, floors longest; the local Redis evicts by nearest
expiry (``volatile-ttl``), so entries go before what guards them.

**Outages.** A Redis error (or a command slower than ``AICHAT_ANSWER_CACHE_TIMEOUT_S``) is a
miss: the query is answered as if there were no cache, counted as ``error``; the cache is
then skipped for ``AICHAT_ANSWER_CACHE_RETRY_S``. Invalidation is retried until Redis answers.

What stays fresh only by TTL: a *new* document that would now rank among an entry's
sources (answers without sources are never cached).
"""

from __future__ import annotations

import hashlib
import logging
import time
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import orjson
import redis.asyncio as aioredis
from prometheus_client import Counter
from redis.exceptions import RedisError

from schemas.events import QueryEvent, Source
from streams.answer_cache_settings import AnswerCacheSettings
from streams.errors import DependencyUnavailable

log = logging.getLogger(__name__)
#: Redis connections of one worker (its answers in flight and the invalidating agent)
MAX_CONNECTIONS = 32

CACHE_RESULTS = Counter(
    "aichat_answer_cache_total",
    "Answer cache lookups and stores: hit, miss, error (Redis unavailable: answered without "
    "the cache), stale_refused (an answer citing a version already replaced was not stored, "
    "or an entry found stale at lookup)",
    ["result"],
)
CACHE_INVALIDATED = Counter(
    "aichat_answer_cache_invalidated_total", "Cache entries deleted because a cited document changed"
)


def normalise_question(text: str) -> str:
    """NFKC, case-folded, whitespace collapsed: "  How MANY\u3000days? " → "how many days?"."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def entry_digest(query: QueryEvent, *, top_k: int, identity: str, context: str = "") -> str:
    """sha256 of everything an answer depends on, besides the tenant (in the key's name)."""
    parts = [normalise_question(query.text), sorted(query.filters.items()), top_k,
             query.variant, context, identity]
    return hashlib.sha256(orjson.dumps(parts)).hexdigest()


def floor_of(outcome: str, version: int) -> int | None:
    """The lowest version an answer may cite after this ``indexed`` outcome (None: unchanged)."""
    if outcome == "indexed":
        return version
    if outcome == "deleted":
        return version + 1
    return None


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    sources: list[Source]
    text: str


@dataclass(frozen=True, slots=True)
class Cited:
    doc_id: str
    version: int


# KEYS[1] entry. Returns {1, payload} | {0} (absent) | {2} (a cited version is below its floor).
_LOOKUP = """
local cited = redis.call('HGET', KEYS[1], 'c')
if not cited then return {0} end
for _, d in ipairs(cjson.decode(cited)) do
  local floor = tonumber(redis.call('GET', d[1]) or '-1')
  if d[2] < floor then
    redis.call('DEL', KEYS[1])
    return {2}
  end
end
return {1, redis.call('HGET', KEYS[1], 'p')}
"""

# KEYS[1] entry; ARGV: payload, cited ([[floor key, version, reverse key]…]), entry ttl ms,
# reverse-index ttl ms. Returns 1 (stored) | 0 (refused: a cited version is below its floor).
_STORE = """
local cited = cjson.decode(ARGV[2])
for _, d in ipairs(cited) do
  if d[2] < tonumber(redis.call('GET', d[1]) or '-1') then return 0 end
end
redis.call('HSET', KEYS[1], 'p', ARGV[1], 'c', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
local rttl = tonumber(ARGV[4])
for _, d in ipairs(cited) do
  redis.call('HSET', d[3], KEYS[1], d[2])
  if redis.call('PTTL', d[3]) < rttl then redis.call('PEXPIRE', d[3], rttl) end
end
return 1
"""

# KEYS[1] floor, KEYS[2] reverse index; ARGV: new floor, floor ttl ms. Raises the floor (never
# lowers it), deletes the entries citing a version below it; returns how many.
_INVALIDATE = """
local floor = math.max(tonumber(ARGV[1]), tonumber(redis.call('GET', KEYS[1]) or '-1'))
redis.call('SET', KEYS[1], floor, 'PX', ARGV[2])
local rev = redis.call('HGETALL', KEYS[2])
local removed = 0
for i = 1, #rev, 2 do
  if tonumber(rev[i + 1]) < floor then
    removed = removed + redis.call('DEL', rev[i])
    redis.call('HDEL', KEYS[2], rev[i])
  end
end
return removed
"""


class AnswerCache:
    """The answer cache in Redis (redis-py's asyncio client), failing open to a miss."""

    def __init__(self, settings: AnswerCacheSettings, url: str) -> None:
        s = settings
        self.settings = s
        # at most MAX_CONNECTIONS; a caller beyond them waits for one, within the timeout
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=MAX_CONNECTIONS, timeout=s.answer_cache_timeout_s,
            socket_timeout=s.answer_cache_timeout_s, socket_connect_timeout=s.answer_cache_timeout_s)
        self._redis = aioredis.Redis(connection_pool=pool)
        self._lookup = self._redis.register_script(_LOOKUP)
        self._store = self._redis.register_script(_STORE)
        self._invalidate = self._redis.register_script(_INVALIDATE)
        self._prefix = f"{s.answer_cache_key_prefix}ac:"
        self._down_until = 0.0
        self._warned_at = -1e9

    @classmethod
    def from_settings(cls, settings: AnswerCacheSettings) -> AnswerCache | None:
        """The cache when a Redis URL is configured and it is not switched off."""
        if settings.redis_url is None or not settings.answer_cache:
            return None
        return cls(settings, settings.redis_url.get_secret_value())

    def entry_key(self, tenant: str, digest: str) -> str:
        return f"{self._prefix}{tenant}:e:{digest}"

    def floor_key(self, tenant: str, doc_id: str) -> str:
        return f"{self._prefix}{tenant}:v:{doc_id}"

    def reverse_key(self, tenant: str, doc_id: str) -> str:
        return f"{self._prefix}{tenant}:r:{doc_id}"

    async def start(self) -> None:
        """Says whether Redis answers; never fails the worker (the cache fails open)."""
        try:
            await self._redis.ping()
            log.info("answer cache in Redis (ttl %.0fs)", self.settings.answer_cache_ttl_s)
        except (RedisError, OSError) as exc:
            self._failed(exc)

    async def stop(self) -> None:
        await self._redis.aclose(close_connection_pool=True)

    async def lookup(self, tenant: str, digest: str) -> CachedAnswer | None:
        """The entry, or None (a miss, a stale entry, or Redis unavailable: each counted)."""
        if time.monotonic() < self._down_until:
            CACHE_RESULTS.labels("error").inc()
            return None
        try:
            found = await self._lookup(keys=[self.entry_key(tenant, digest)])
        except (RedisError, OSError) as exc:
            self._failed(exc)
            CACHE_RESULTS.labels("error").inc()
            return None
        if int(found[0]) != 1:
            CACHE_RESULTS.labels("miss" if int(found[0]) == 0 else "stale_refused").inc()
            return None
        try:
            payload = orjson.loads(found[1])
            hit = CachedAnswer([Source(**s) for s in payload["sources"]], str(payload["text"]))
        except (ValueError, KeyError, TypeError) as exc:  # another release's entry: a miss
            log.warning("answer cache: unreadable entry %s: %r", digest, exc)
            CACHE_RESULTS.labels("miss").inc()
            return None
        CACHE_RESULTS.labels("hit").inc()
        return hit

    async def store(self, tenant: str, digest: str, answer: CachedAnswer, cited: Sequence[Cited],
                    *, retrieved_at: float) -> bool:
        """Store an answer computed from a search at ``retrieved_at`` (``time.monotonic()``);
        False when refused (stale, too old to prove fresh, nothing cited, Redis unavailable)."""
        s = self.settings
        if not cited or time.monotonic() - retrieved_at > s.answer_cache_floor_ttl_s / 2:
            return False  # nothing would ever invalidate it / older than a floor's guarantee
        if time.monotonic() < self._down_until:
            return False
        payload = orjson.dumps({"sources": [x.model_dump() for x in answer.sources], "text": answer.text})
        guards = orjson.dumps([[self.floor_key(tenant, c.doc_id), c.version, self.reverse_key(tenant, c.doc_id)]
                               for c in cited])
        ttl_ms = int(s.answer_cache_ttl_s * 1000)
        try:
            stored = await self._store(keys=[self.entry_key(tenant, digest)],
                                       args=[payload, guards, ttl_ms, ttl_ms + 60_000])
        except (RedisError, OSError) as exc:
            self._failed(exc)
            CACHE_RESULTS.labels("error").inc()
            return False
        if int(stored) != 1:
            CACHE_RESULTS.labels("stale_refused").inc()
            return False
        return True

    async def invalidate(self, tenant: str, doc_id: str, floor: int) -> int:
        """Raise the document's floor to ``floor``; the entries deleted. Raises
        :class:`DependencyUnavailable` while Redis is down (the agent retries)."""
        try:
            removed = int(await self._invalidate(
                keys=[self.floor_key(tenant, doc_id), self.reverse_key(tenant, doc_id)],
                args=[floor, int(self.settings.answer_cache_floor_ttl_s * 1000)]))
        except (RedisError, OSError) as exc:
            raise DependencyUnavailable(f"answer cache invalidation: Redis: {exc!r}") from exc
        CACHE_INVALIDATED.inc(removed)
        return removed

    async def floor(self, tenant: str, doc_id: str) -> int | None:
        """The document's floor (None: no change seen within the floor's TTL)."""
        value = await self._redis.get(self.floor_key(tenant, doc_id))
        return None if value is None else int(value)

    def _failed(self, exc: BaseException) -> None:
        now = time.monotonic()
        self._down_until = now + self.settings.answer_cache_retry_s
        if now - self._warned_at > 10:
            self._warned_at = now
            log.warning("answer cache unavailable, answering without it for %.0fs: %r",
                        self.settings.answer_cache_retry_s, exc)


def identity(settings: object, fields: Sequence[str], model_name: str) -> str:
    """The settings an answer depends on besides the query (index, model, retrieval, generator)."""
    values: Mapping[str, object] = {f: getattr(settings, f, None) for f in fields}
    return orjson.dumps({"model": model_name, **values}, option=orjson.OPT_SORT_KEYS).decode()
