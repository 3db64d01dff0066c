"""Conversations over the real websocket: two-turn Korean and English conversations on a
real answer worker, their history, and another user who cannot read them.

The follow-up is sent on a *new* connection with only the conversation id: the turns live
in the ``conversations`` topic, not in the socket or the gateway's memory.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from ingest.sdk import DocumentPublisher
from query_gateway.client import ask, connect_gateway
from schemas.events import DocumentEvent
from tests.support import RunningSystem, cleaned_up, eventually, isolated_env

DOCS = {
    "vacation": ("Vacation policy", "Every full-time employee receives 25 days of paid vacation "
                 "per year. Up to five unused vacation days can be carried over into the next "
                 "year; days carried over expire on March 31."),
    "parking": ("Parking", "Staff park on level -2 of the garage. Electric car chargers may be "
                "used for four hours per day."),
    "sick": ("Sick leave", "Employees have 10 paid sick days per year. A doctor's note is "
             "needed from the third day."),
    "연차": ("연차 휴가", "직원은 1년에 15일의 유급 연차 휴가를 받습니다. 사용하지 못한 연차는 최대 "
           "5일까지 다음 해로 이월할 수 있으며 3월 31일까지 사용해야 합니다."),
    "식당": ("사내 식당", "사내 식당의 점심 시간은 오전 11시 30분부터 오후 1시 30분까지입니다."),
}


@pytest.fixture(scope="module")
async def system(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningSystem]:
    tmp = tmp_path_factory.mktemp("conversations")
    sys_ = RunningSystem(env=isolated_env(uuid.uuid4().hex[:10], tmp), logs=tmp / "logs")
    async with cleaned_up(sys_):
        sys_.start("pipeline")
        async with DocumentPublisher(sys_.settings()) as publisher:
            for doc_id, (title, text) in DOCS.items():
                await publisher.publish(DocumentEvent(doc_id=doc_id, version=1, title=title, text=text))
        yield sys_


async def _ask(url: str, text: str, conversation_id: str | None = None) -> list[dict[str, Any]]:
    return [f async for f in ask(url, text, conversation_id=conversation_id, idle_timeout_s=20)]


async def _history(url: str, conversation_id: str) -> dict[str, Any]:
    async with connect_gateway(url) as ws:
        await ws.send(orjson.dumps({"type": "history", "id": "h1",
                                    "conversation_id": conversation_id}).decode())
        while True:
            frame: dict[str, Any] = orjson.loads(await ws.recv())
            if frame.get("id") == "h1":
                return frame


def _of(frames: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    return next(f for f in frames if f["type"] == kind)


@pytest.mark.parametrize(("first", "first_doc", "followup", "followup_doc"), [
    ("How many vacation days do employees get?", "vacation", "Can I carry them over?", "vacation"),
    ("연차 휴가는 1년에 며칠인가요?", "연차", "남은 건 이월되나요?", "연차"),
], ids=["english", "korean"])
async def test_a_two_turn_conversation_its_history_and_no_one_elses(
        system: RunningSystem, first: str, first_doc: str, followup: str, followup_doc: str) -> None:
    url = system.ws_url_for("alice")

    async def indexed() -> list[dict[str, Any]] | None:
        frames = await _ask(url, first)
        sources = _of(frames, "sources")["sources"]
        return frames if sources and sources[0]["doc_id"] == first_doc else None

    frames = await eventually(indexed, timeout_s=90, what=f"{first_doc} searchable")
    ack = _of(frames, "ack")
    conversation_id = ack["conversation_id"]  # the gateway started a conversation
    assert frames[-1]["type"] == "done" and "followup" not in _of(frames, "sources")

    # the same conversation, continued on a new connection by its id alone
    second = await _ask(url, followup, conversation_id)
    assert _of(second, "ack")["conversation_id"] == conversation_id
    sources = _of(second, "sources")
    assert sources["followup"] == {"method": "offline", "turns": 1, "rewrite": ""}
    assert sources["sources"][0]["doc_id"] == followup_doc
    assert second[-1]["type"] == "done", second[-1]

    history = await _history(url, conversation_id)
    assert history["type"] == "history" and history["conversation_id"] == conversation_id
    turns = history["turns"]
    assert [t["question"] for t in turns] == [first, followup]
    assert [t["query_id"] for t in turns] == [ack["query_id"], _of(second, "ack")["query_id"]]
    assert turns[1]["sources"][0]["doc_id"] == followup_doc
    assert turns[1]["answer"] == "".join(f["delta"] for f in second if f["type"] == "token")
    assert turns[0]["asked_at"] <= turns[1]["asked_at"]

    # another user of the same tenant, and a user of the same name in another tenant:
    # refused exactly like an id that was never used
    never = await _history(url, "never-used-" + uuid.uuid4().hex[:8])
    for other in (system.ws_url_for("bob"), system.ws_url_for("alice", tenant="other")):
        refused = await _history(other, conversation_id)
        assert refused["type"] == "error" and refused["code"] == "unknown_conversation"
        assert refused["message"] == never["message"]
        # continuing it as bob starts bob's own conversation: alice's earlier turn is not used
        theirs = await _ask(other, followup, conversation_id)
        assert "followup" not in _of(theirs, "sources")
    assert len((await _history(url, conversation_id))["turns"]) == 2
