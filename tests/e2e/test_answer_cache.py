"""The answer cache through the whole system (a pipeline worker, a gateway, the stack's Redis):
a repeated question is answered from the cache; an updated or deleted document is never
answered from it afterwards; another tenant never gets the first tenant's entry."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from ingest.sdk import DocumentPublisher
from query_gateway.client import ask
from schemas.events import DocumentEvent
from tests.redis_keys import REDIS_URL, drop_keys, stack_redis
from tests.support import RunningSystem, cleaned_up, eventually, isolated_env

DOC = "handbook/vacation"
QUESTION = "How many days of paid vacation does an employee receive?"


def text(days: int) -> str:
    return (f"Every full-time employee receives {days} days of paid vacation per calendar year. "
            "Vacation requests go to the team lead.")


@pytest.fixture(scope="module")
async def system(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningSystem]:
    stack_redis()
    unique = uuid.uuid4().hex[:10]
    tmp = tmp_path_factory.mktemp("cache")
    env = {**isolated_env(unique, tmp), "AICHAT_REDIS_URL": REDIS_URL,
           "AICHAT_ANSWER_CACHE_KEY_PREFIX": f"t{unique}:", "AICHAT_REDIS_KEY_PREFIX": f"t{unique}:"}
    sys_ = RunningSystem(env=env, logs=tmp / "logs")
    try:
        async with cleaned_up(sys_):
            sys_.start("pipeline")
            yield sys_
    finally:
        await drop_keys(f"t{unique}:")


async def asked(system: RunningSystem, tenant: str = "default") -> dict[str, Any]:
    frames = [f async for f in ask(system.ws_url_for(tenant=tenant), QUESTION, idle_timeout_s=20)]
    assert frames[-1]["type"] == "done", frames[-1]
    return {"sources": next(f for f in frames if f["type"] == "sources")["sources"],
            "text": "".join(f["delta"] for f in frames if f["type"] == "token"),
            "cached": frames[-1].get("cached", False), "timings": frames[-1]["timings_ms"]}


async def floor_reaches(system: RunningSystem, version: int) -> bool:
    """The answer workers consumed the ``indexed`` event of ``version`` (the document's floor)."""
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        value = await client.get(f"{system.env['AICHAT_ANSWER_CACHE_KEY_PREFIX']}ac:default:v:{DOC}")
    finally:
        await client.aclose()
    return value is not None and int(value) >= version


async def test_cached_until_the_document_changes_and_never_across_tenants(system: RunningSystem) -> None:
    async with DocumentPublisher(system.settings()) as publisher:
        await publisher.publish(DocumentEvent(doc_id=DOC, version=1, title="Vacation", text=text(25)))
        await publisher.publish(DocumentEvent(doc_id=DOC, tenant="globex", version=1,
                                              title="Vacation", text=text(40)))

        async def found() -> dict[str, Any] | None:
            answer = await asked(system)
            return answer if any(s["doc_id"] == DOC for s in answer["sources"]) else None

        miss = await eventually(found, timeout_s=90, what="the document searchable")
        assert not miss["cached"] and "25 days" in miss["text"], miss
        hit = await asked(system)
        assert hit["cached"] is True, hit
        assert (hit["sources"], hit["text"]) == (miss["sources"], miss["text"])
        assert hit["timings"]["first_token"] < miss["timings"]["first_token"], (hit, miss)
        assert "embed" not in hit["timings"] and "search" not in hit["timings"]

        # another tenant, the same question and doc_id: its own answer, not the cached one
        other = await eventually(lambda: _with_sources(asked(system, "globex")), timeout_s=60,
                                 what="globex's document searchable")
        assert not other["cached"] and "40 days" in other["text"] and "25" not in other["text"], other

        await publisher.publish(DocumentEvent(doc_id=DOC, version=2, title="Vacation", text=text(30)))
        await eventually(lambda: floor_reaches(system, 2), timeout_s=60, what="version 2 indexed")
        updated = await asked(system)
        assert not updated["cached"] and "30 days" in updated["text"], updated
        again = await asked(system)
        assert again["cached"] and "30 days" in again["text"], again

        await publisher.publish(DocumentEvent(op="delete", doc_id=DOC, version=3))
        await eventually(lambda: floor_reaches(system, 4), timeout_s=60, what="the delete indexed")
        for _ in range(2):
            gone = await asked(system)
            assert not gone["cached"] and all(s["doc_id"] != DOC for s in gone["sources"]), gone
        assert "40 days" in (await asked(system, "globex"))["text"]  # globex's document stays


async def _with_sources(answer: Any) -> dict[str, Any] | None:
    got = await answer
    return got if got["sources"] else None
