"""Answer deltas joined by time (streams/deltas.py) and the answerer's reply path: fewer
token events, the same text, the first token not held back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from types import SimpleNamespace
from typing import Any

import pytest

from schemas.events import AnswerEvent, QueryEvent, ReplyRoute, utc_now
from streams.agents.answerer import _Reply, answer_query
from streams.deltas import coalesce
from streams.errors import DependencyUnavailable
from streams.passages import Passage
from streams.retrieval import Retrieved

WORDS = [f"w{i} " for i in range(20)]


async def instantly(deltas: Sequence[str]) -> AsyncIterator[str]:
    for delta in deltas:
        yield delta


async def collect(deltas: AsyncIterator[str]) -> list[str]:
    return [d async for d in deltas]


async def test_deltas_made_at_once_become_the_first_one_and_the_rest_joined() -> None:
    got = await collect(coalesce(instantly(WORDS), 0.05))
    assert got == [WORDS[0], "".join(WORDS[1:])]


async def test_interval_zero_passes_every_delta_through() -> None:
    assert await collect(coalesce(instantly(WORDS), 0)) == WORDS


async def test_the_first_delta_is_not_held_for_the_interval() -> None:
    received = asyncio.Event()

    async def model() -> AsyncIterator[str]:
        yield "first "
        await received.wait()  # the next delta only comes once the first was received
        yield "second"

    got: list[str] = []
    async with asyncio.timeout(5):
        async for delta in coalesce(model(), 10.0):  # an interval far longer than the test
            got.append(delta)
            received.set()
    assert got == ["first ", "second"]


async def test_waiting_text_goes_out_when_the_interval_passes_even_if_the_model_pauses() -> None:
    said = asyncio.Event()

    async def model() -> AsyncIterator[str]:
        yield "a "
        yield "b "
        yield "c "
        await said.wait()  # pauses until the client saw "b c": a timer must send them
        yield "d"

    got: list[str] = []
    async with asyncio.timeout(5):
        async for delta in coalesce(model(), 0.05):
            got.append(delta)
            if "".join(got) == "a b c ":
                said.set()
    assert got == ["a ", "b c ", "d"]


async def test_a_steady_stream_still_streams_at_most_one_event_per_interval() -> None:
    loop = asyncio.get_running_loop()

    async def model() -> AsyncIterator[str]:
        for word in WORDS * 2:  # 40 deltas, one every 5 ms
            await asyncio.sleep(0.005)
            yield word

    started = loop.time()
    sent_at: list[float] = []
    got: list[str] = []
    async for delta in coalesce(model(), 0.05):
        sent_at.append(loop.time())
        got.append(delta)
    elapsed = loop.time() - started
    assert "".join(got) == "".join(WORDS * 2)
    assert 3 <= len(got) <= elapsed / 0.05 + 2  # it streams, but fewer events than deltas
    gaps = [b - a for a, b in zip(sent_at, sent_at[1:-1], strict=False)]  # the last: the flush
    assert min(gaps) >= 0.045


async def test_text_before_a_failure_goes_out_then_the_failure() -> None:
    async def model() -> AsyncIterator[str]:
        yield "a "
        yield "b "
        yield "c "
        raise DependencyUnavailable("generator failed: connection reset")

    got: list[str] = []
    with pytest.raises(DependencyUnavailable):
        async for delta in coalesce(model(), 0.05):
            got.append(delta)
    assert got == ["a ", "b c "]


@pytest.mark.parametrize("interval_s", [0.0, 0.05])
async def test_closing_the_answer_closes_the_generator(interval_s: float) -> None:
    closed = asyncio.Event()

    async def model() -> AsyncIterator[str]:
        try:
            yield "a "
            await asyncio.sleep(3600)  # an LLM still thinking
            yield "never"
        finally:
            closed.set()  # the HTTP stream is closed here

    deltas = coalesce(model(), interval_s)
    assert await anext(deltas) == "a "
    if interval_s:
        await asyncio.sleep(0.01)  # the reading task is now inside the model's sleep
    await deltas.aclose()
    async with asyncio.timeout(2):
        await closed.wait()


# -- the answerer's reply path ------------------------------------------------------------


class FakeGenerator:
    name = "fake"

    def __init__(self, deltas: Sequence[str]) -> None:
        self.deltas = deltas

    async def generate(self, question: str, passages: Sequence[Passage]) -> AsyncIterator[str]:
        for delta in self.deltas:
            yield delta


class FakeRetriever:
    async def retrieve(self, query: QueryEvent) -> Retrieved:
        passage = Passage(doc_id="d1", chunk_id="c1", title="Handbook", text="25 days.", score=0.9)
        return Retrieved(passages=[passage], alpha=0.5, embed_ms=1.0, search_ms=2.0)


def reply_for(query: QueryEvent, sent: list[AnswerEvent]) -> _Reply:
    async def send(agent: str, topic: Any, key: str, event: AnswerEvent, *, partition: int) -> Any:
        sent.append(event)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    ctx = SimpleNamespace(topics=SimpleNamespace(names={"answers": "answers"}, answers="answers"),
                          send=send)
    return _Reply(ctx, query)  # type: ignore[arg-type]


async def answered(interval_s: float) -> list[AnswerEvent]:
    query = QueryEvent(text="how many days?", reply_to=ReplyRoute(topic="answers", partition=0),
                       deadline=utc_now())
    sent: list[AnswerEvent] = []
    timings = await answer_query(query, reply_for(query, sent), FakeRetriever(),  # type: ignore[arg-type]
                                 FakeGenerator(WORDS), 0.0, token_interval_s=interval_s)
    assert {"first_token", "generate", "total"} <= set(timings)
    return sent


async def test_an_extractive_answer_is_sources_two_tokens_and_done_numbered_in_order() -> None:
    sent = await answered(0.03)
    assert [e.kind for e in sent] == ["sources", "token", "token", "done"]
    assert [e.seq for e in sent] == [0, 1, 2, 3]
    assert "".join(e.delta for e in sent if e.kind == "token") == "".join(WORDS)


async def test_without_an_interval_every_delta_is_its_own_event() -> None:
    sent = await answered(0)
    assert [e.kind for e in sent] == ["sources"] + ["token"] * len(WORDS) + ["done"]
    assert [e.seq for e in sent] == list(range(len(WORDS) + 2))
    assert [e.delta for e in sent if e.kind == "token"] == WORDS
