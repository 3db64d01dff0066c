"""The answer cache against the stack's real Redis: invalidation, the store/invalidate race,
tenants, TTLs, and failing open when Redis is gone."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from schemas.events import Source
from streams.answer_cache import CACHE_RESULTS, AnswerCache, CachedAnswer, Cited
from streams.answer_cache_settings import AnswerCacheSettings
from streams.config import WorkerSettings
from streams.errors import DependencyUnavailable
from tests.redis_keys import REDIS_URL, drop_keys, stack_redis

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def redis_url(services: WorkerSettings) -> str:
    return stack_redis()


@pytest.fixture
async def cache(redis_url: str, unique: str) -> AsyncIterator[AnswerCache]:
    prefix = f"it-{unique}:"
    cache = AnswerCache(AnswerCacheSettings(answer_cache_key_prefix=prefix, answer_cache_ttl_s=60,
                                            answer_cache_floor_ttl_s=120), redis_url)
    await cache.start()
    yield cache
    await cache.stop()
    await drop_keys(prefix)


def answer(text: str, *doc_ids: str) -> CachedAnswer:
    return CachedAnswer([Source(doc_id=d, chunk_id=f"{d}-0", title=d, score=0.5, snippet=text)
                         for d in doc_ids], text)


def count(result: str) -> float:
    return CACHE_RESULTS.labels(result)._value.get()


async def store(cache: AnswerCache, tenant: str, digest: str, text: str, *cited: tuple[str, int]) -> bool:
    return await cache.store(tenant, digest, answer(text, *(d for d, _ in cited)),
                             [Cited(d, v) for d, v in cited], retrieved_at=time.monotonic())


async def test_a_hit_until_a_cited_document_gets_a_new_version(cache: AnswerCache) -> None:
    assert await cache.lookup("acme", "q1") is None
    assert await store(cache, "acme", "q1", "25 days [1]", ("vacation", 1), ("holidays", 4))
    hit = await cache.lookup("acme", "q1")
    assert hit is not None and hit.text == "25 days [1]" and [s.doc_id for s in hit.sources] == [
        "vacation", "holidays"]
    assert await cache.invalidate("acme", "holidays", 4) == 0  # a replay of the cited version
    assert await cache.lookup("acme", "q1") is not None
    assert await cache.invalidate("acme", "vacation", 2) == 1  # version 2 indexed
    assert await cache.lookup("acme", "q1") is None


async def test_a_delete_invalidates_the_version_it_deletes(cache: AnswerCache) -> None:
    assert await store(cache, "acme", "q", "text", ("doc", 3))
    assert await cache.invalidate("acme", "doc", 3 + 1) == 1  # floor_of("deleted", 3)
    assert await cache.floor("acme", "doc") == 4
    assert not await store(cache, "acme", "q", "text", ("doc", 3))  # deleted: never again


async def test_an_answer_from_an_old_version_stored_after_the_invalidation_is_refused(
    cache: AnswerCache,
) -> None:
    searched_at = time.monotonic()  # the search read version 1 …
    assert await cache.invalidate("acme", "doc", 2) == 0  # … then version 2 is indexed
    refused = count("stale_refused")
    stored = await cache.store("acme", "q", answer("old", "doc"), [Cited("doc", 1)],
                               retrieved_at=searched_at)
    assert not stored and count("stale_refused") == refused + 1
    assert await cache.lookup("acme", "q") is None
    assert await store(cache, "acme", "q", "new", ("doc", 2))  # the new version's answer is kept
    assert await cache.invalidate("acme", "doc", 1) == 0  # a late, older event lowers nothing
    assert await cache.floor("acme", "doc") == 2


async def test_interleaved_stores_and_invalidations_never_leave_a_stale_entry(cache: AnswerCache) -> None:
    """Many answers of random versions stored while the versions move on, in every order the
    event loop makes of them: afterwards no entry cites a version below its document's floor."""
    rng = random.Random(11)
    docs = [f"d{i}" for i in range(5)]

    async def writer(n: int) -> None:
        await asyncio.sleep(rng.random() / 100)
        cited = [(d, rng.randint(1, 6)) for d in rng.sample(docs, 2)]
        await store(cache, "acme", f"q{n}", f"answer {n}", *cited)

    async def indexer(doc: str) -> None:
        for version in range(1, 7):
            await asyncio.sleep(rng.random() / 100)
            await cache.invalidate("acme", doc, version)

    await asyncio.gather(*(writer(n) for n in range(200)), *(indexer(d) for d in docs))
    floors = {d: await cache.floor("acme", d) for d in docs}
    assert floors == dict.fromkeys(docs, 6)
    client = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        for n in range(200):
            cited = await client.hget(cache.entry_key("acme", f"q{n}"), "c")
            if cited is not None:
                assert all(version >= 6 for _, version, _ in json.loads(cited)), cited
    finally:
        await client.aclose()


async def test_tenants_never_share_entries_or_invalidations(cache: AnswerCache) -> None:
    assert await store(cache, "acme", "q", "acme's answer", ("doc", 1))
    assert await cache.lookup("globex", "q") is None
    assert await store(cache, "globex", "q", "globex's answer", ("doc", 1))
    assert await cache.invalidate("globex", "doc", 2) == 1  # globex's doc changed, not acme's
    hit = await cache.lookup("acme", "q")
    assert hit is not None and hit.text == "acme's answer"
    assert await cache.lookup("globex", "q") is None


async def test_every_key_has_a_ttl_and_guards_outlive_entries(cache: AnswerCache) -> None:
    assert await store(cache, "acme", "q", "text", ("doc", 1))
    await cache.invalidate("acme", "other", 1)
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        entry = await client.pttl(cache.entry_key("acme", "q"))
        reverse = await client.pttl(cache.reverse_key("acme", "doc"))
        floor = await client.pttl(cache.floor_key("acme", "other"))
    finally:
        await client.aclose()
    assert 0 < entry <= 60_000 < reverse <= 120_000, (entry, reverse)  # the index outlives entries
    assert 60_000 < floor <= 120_000, floor


async def test_a_lookup_checks_the_floors_even_when_the_reverse_index_is_gone(cache: AnswerCache) -> None:
    assert await store(cache, "acme", "q", "text", ("doc", 1))
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        await client.delete(cache.reverse_key("acme", "doc"))  # as if evicted
    finally:
        await client.aclose()
    await cache.invalidate("acme", "doc", 2)
    stale = count("stale_refused")
    assert await cache.lookup("acme", "q") is None
    assert count("stale_refused") == stale + 1


async def test_an_unreachable_redis_is_a_miss_and_an_invalidation_to_retry() -> None:
    down = AnswerCache(AnswerCacheSettings(answer_cache_timeout_s=0.2, answer_cache_retry_s=30),
                       "redis://127.0.0.1:1/0")
    try:
        await down.start()  # logs, never raises
        errors = count("error")
        assert await down.lookup("acme", "q") is None
        assert await down.lookup("acme", "q") is None  # skipped for retry_s: no wait
        assert count("error") == errors + 2
        assert not await store(down, "acme", "q", "text", ("doc", 1))
        with pytest.raises(DependencyUnavailable):
            await down.invalidate("acme", "doc", 2)
    finally:
        await down.stop()
