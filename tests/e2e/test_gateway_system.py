"""The gateway in the whole system: a pipeline worker (answerer included) and two
gateway replicas on reply partitions 0 and 1 sharing per-user rate limits through
the stack's Redis, on the real Kafka and Weaviate.

Two replicas each get only their own answers; the budget of a user is shared by
the replicas; hostile-looking strings travel as literal text; cancel stops the
frames and reaches the answerer as ``QueryCancelled``; readiness turns 503 while
Weaviate is down; the chat page, driven in headless Chromium, shows a cited answer.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from infra import stack
from infra.config import StackSettings
from infra.up import Child, wait_ready
from ingest.sdk import DocumentPublisher
from query_gateway.client import ask, connect_gateway
from schemas.codec import decode
from schemas.events import AnswerEvent, DocumentEvent, QueryEvent
from streams.config import load_settings
from tests.support import (
    RunningSystem,
    cleaned_up,
    eventually,
    free_port,
    isolated_env,
    metric,
)

DOCS = {
    "hr/vacation": ("Vacation policy", "Every employee receives 25 days of paid vacation per year.",
                    {"category": "public"}),
    "ops/on-call": ("On-call rotation", "The on-call engineer acknowledges a page within 15 minutes.",
                    {"category": "public"}),
    "fin/expenses": ("Expense reports", "Meals on business travel are covered up to 60 euros per day.",
                     {"category": "public"}),
    "sec/vault": ("Vault codes", "The vault code for the server room is kept by the security team.",
                  {"category": "secret"}),
}
QUESTIONS = {
    "hr/vacation": "How many days of paid vacation does an employee receive?",
    "ops/on-call": "How fast must the on-call engineer acknowledge a page?",
    "fin/expenses": "Up to how many euros per day are meals covered on business travel?",
}


def start_gateway(system: RunningSystem, name: str, partition: int) -> tuple[str, str]:
    """Another replica of the system's gateway on its own ports and reply partition:
    its public and its operator base URLs."""
    port, ops_port = free_port(), free_port()
    child = Child(name, [sys.executable, "-m", "streams.cli", "gateway"],
                  f"http://127.0.0.1:{port}/health/live", system.logs / f"{name}.log")
    child.start(env={**os.environ, **system.env, "AICHAT_GATEWAY_PORT": str(port),
                     "AICHAT_GATEWAY_OPS_PORT": str(ops_port),
                     "AICHAT_GATEWAY_REPLY_PARTITION": str(partition)})
    system.children.append(child)
    wait_ready(child, timeout_s=120)
    return f"http://127.0.0.1:{port}", f"http://127.0.0.1:{ops_port}"


@pytest.fixture(scope="module")
async def system(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningSystem]:
    stack.up(load_settings(StackSettings), services=["redis"])  # optional service: start it here
    tmp = tmp_path_factory.mktemp("gwsystem")
    unique = uuid.uuid4().hex[:10]
    env = isolated_env(unique, tmp)
    env.update({
        "AICHAT_GATEWAY_REPLY_PARTITION": "0",
        "AICHAT_REDIS_URL": "redis://127.0.0.1:6379/0",
        "AICHAT_REDIS_KEY_PREFIX": f"e2e-{unique}:",
        "AICHAT_RATE_LIMIT_PER_MINUTE": "240",
        "AICHAT_RATE_LIMIT_BURST": "8",
    })
    sys_ = RunningSystem(env=env, logs=tmp / "logs")
    async with cleaned_up(sys_):
        sys_.start("pipeline")
        sys_.env["B_URL"], sys_.env["B_OPS_URL"] = start_gateway(sys_, "gateway-b", partition=1)
        async with DocumentPublisher(sys_.settings()) as publisher:
            for doc_id, (title, text, metadata) in DOCS.items():
                await publisher.publish(DocumentEvent(doc_id=doc_id, version=1, title=title, text=text,
                                                      metadata=metadata))

        async def all_searchable() -> bool:
            frames = [f async for f in ask(sys_.ws_url, "vacation on-call expenses vault", top_k=10,
                                           idle_timeout_s=20)]
            sources = next((f["sources"] for f in frames if f["type"] == "sources"), [])
            return set(DOCS) <= {s["doc_id"] for s in sources}

        await eventually(all_searchable, timeout_s=120, what="the documents to be searchable")
        yield sys_


def url_b(system: RunningSystem, user: str = "e2e") -> str:
    http = system.env["B_URL"]
    return f"ws{http[4:]}/ws?token={system.token(user)}"


async def read_topic(system: RunningSystem, name: str) -> list[Any]:
    settings = system.settings()
    consumer = AIOKafkaConsumer(settings.topic(name), bootstrap_servers=settings.kafka_bootstrap,
                                auto_offset_reset="earliest", enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        records = []
        while batch := await consumer.getmany(timeout_ms=2_000):
            records += [r for rs in batch.values() for r in rs]
        return records
    finally:
        await consumer.stop()


async def test_two_replicas_each_get_only_their_own_answers(system: RunningSystem) -> None:
    url_a = system.ws_url

    async def one(url: str, doc_id: str) -> tuple[str, str, list[dict[str, Any]]]:
        # the same client id on both replicas: ids are per connection, answers per query
        frames = [f async for f in ask(url, QUESTIONS[doc_id], top_k=3, client_id="q1", idle_timeout_s=30)]
        return url, doc_id, frames

    jobs = [one(url, doc_id) for url, doc_id in itertools.product((url_a, url_b(system)), QUESTIONS)]
    results = await asyncio.gather(*jobs)
    asked_on: dict[str, int] = {}
    for url, doc_id, frames in results:
        kinds = [f["type"] for f in frames]
        assert kinds[0] == "ack" and kinds[-1] == "done", (doc_id, frames[-1])
        assert frames[1]["sources"][0]["doc_id"] == doc_id  # the answer to *this* question
        assert "[1]" in "".join(f["delta"] for f in frames if f["type"] == "token")
        asked_on[frames[0]["query_id"]] = 0 if url == url_a else 1
    assert len(asked_on) == 6

    answers = [r for r in await read_topic(system, "answers") if r.key.decode() in asked_on]
    for record in answers:  # the answerer wrote each answer to its asker's partition only
        assert record.partition == asked_on[record.key.decode()]
        assert decode(AnswerEvent, record.value).query_id in asked_on
    assert {r.key.decode() for r in answers} == set(asked_on)
    for ops in (system.env["B_OPS_URL"], system.gateway_ops_url):
        assert await metric(ops, 'aichat_gateway_answers_dropped_total{reason="unknown_query"}') == 0


async def test_a_users_budget_is_shared_by_the_replicas(system: RunningSystem) -> None:
    """8 queries of burst, 4 per second: 24 queries at once over both replicas → most refused."""
    user = f"flood-{uuid.uuid4().hex[:6]}"
    urls = [system.ws_url_for(user), url_b(system, user)] * 3
    answered = refused = 0

    async def burst(url: str, n: int) -> None:
        nonlocal answered, refused
        async with connect_gateway(url) as ws:
            for i in range(4):
                await ws.send(orjson.dumps({"type": "query", "id": f"{n}-{i}", "text": "vacation days?"}).decode())
            finals = 0
            while finals < 4:
                frame = orjson.loads(await asyncio.wait_for(ws.recv(), 30))
                if frame["type"] == "error" and frame["code"] == "rate_limited":
                    assert 0 < frame["retry_after"] <= 0.25 + 1e-6  # 4 per second
                    refused += 1
                    finals += 1
                elif frame["type"] in ("done", "error"):
                    answered += 1
                    finals += 1

    await asyncio.gather(*(burst(url, n) for n, url in enumerate(urls)))
    assert answered + refused == 24
    assert 8 <= answered <= 12, (answered, refused)  # the burst, plus what refilled meanwhile
    limited = [await metric(ops, 'aichat_gateway_rate_limited_total{limit="user_queries"}')
               for ops in (system.env["B_OPS_URL"], system.gateway_ops_url)]
    assert all(n > 0 for n in limited) and sum(limited) >= refused


TRICKY = ['\\"', "}", "*:*", "category:secret", '"} OR {"category":"secret', "' OR 1=1 --"]


async def test_hostile_strings_are_literal_text_and_values(system: RunningSystem) -> None:
    asked: dict[str, tuple[str, str]] = {}
    for n, tricky in enumerate(TRICKY):
        text = f"vault code {tricky}"
        frames = [f async for f in ask(system.ws_url, text, filters={"category": tricky},
                                       client_id=f"t{n}", idle_timeout_s=30)]
        assert frames[0]["type"] == "ack", frames
        assert frames[-1]["type"] in ("done", "error") and frames[-1].get("code") != "internal"
        sources = next((f["sources"] for f in frames if f["type"] == "sources"), [])
        # a filter value is an equality value: none of these equals "secret" or "public"
        assert sources == [], (tricky, sources)
        asked[frames[0]["query_id"]] = (text, tricky)
    events = [decode(QueryEvent, r.value) for r in await read_topic(system, "queries")
              if r.key.decode() in asked]
    assert {e.query_id: (e.text, e.filters["category"]) for e in events} == asked
    # the honest filter still works, so the empty results above were not an accident
    frames = [f async for f in ask(system.ws_url, "vault code", filters={"category": "secret"})]
    assert [s["doc_id"] for s in frames[1]["sources"]] == ["sec/vault"]


async def test_cancel_stops_forwarding_and_is_published(system: RunningSystem) -> None:
    async with connect_gateway(system.ws_url) as ws:
        await ws.send(orjson.dumps({"type": "query", "id": "c1", "text": QUESTIONS["hr/vacation"]}).decode())
        ack = orjson.loads(await ws.recv())
        await ws.send('{"type":"cancel","id":"c1"}')
        after: list[dict[str, Any]] = []
        while not after or after[-1].get("code") != "cancelled":
            after.append(orjson.loads(await asyncio.wait_for(ws.recv(), 10)))
        await ws.send('{"type":"ping"}')
        # nothing of c1 follows the cancelled frame, even once the answerer has answered
        await asyncio.sleep(3)
        await ws.send('{"type":"ping"}')
        rest = [orjson.loads(await asyncio.wait_for(ws.recv(), 5)) for _ in range(2)]
    assert ack["type"] == "ack"
    assert after[-1]["id"] == "c1" and all(f["type"] in ("sources", "token") for f in after[:-1])
    assert rest == [{"type": "pong"}, {"type": "pong"}]

    async def published() -> list[Any] | None:
        records = [r for r in await read_topic(system, "queries") if r.key.decode() == ack["query_id"]]
        return records if len(records) == 2 else None

    query, cancel = await eventually(published, timeout_s=20, what="the QueryCancelled record")
    assert decode(QueryEvent, query.value).text == QUESTIONS["hr/vacation"]
    body = orjson.loads(cancel.value)
    assert (body["type"], body["query_id"], body["reason"]) == ("query_cancelled", ack["query_id"], "client")
    assert ("aichat-event-type", b"query_cancelled") in list(cancel.headers)
    assert cancel.partition == query.partition and cancel.offset > query.offset


async def test_readiness_turns_503_while_weaviate_is_down(system: RunningSystem) -> None:
    ready_url = f"{system.gateway_ops_url}/health/ready"  # the detailed one: operators only
    public_url = f"http://127.0.0.1:{system.env['AICHAT_GATEWAY_PORT']}/health/ready"
    async with httpx.AsyncClient(timeout=10) as http:
        before = await http.get(ready_url)
        assert before.status_code == 200, before.json()
        assert set(before.json()["checks"]) == {"kafka", "weaviate", "elasticsearch", "model", "redis"}
        assert (await http.get(f"http://127.0.0.1:{system.env['AICHAT_GATEWAY_PORT']}/metrics")).status_code == 404
        stack_settings = load_settings(StackSettings)
        stack.down(stack_settings, services=["weaviate"])
        try:
            down = await http.get(ready_url)
            public_down = await http.get(public_url)
        finally:
            stack.up(stack_settings, services=["weaviate"])
        body = down.json()
        assert down.status_code == 503 and body["status"] == "not_ready"
        assert not body["checks"]["weaviate"]["ok"] and body["checks"]["weaviate"]["detail"]
        assert body["checks"]["kafka"]["ok"] and body["checks"]["redis"]["ok"]
        # the public listener says not ready and nothing about what is behind it
        assert (public_down.status_code, public_down.json()) == (503, {"status": "not_ready"})

        async def ready_again() -> bool:
            return (await http.get(ready_url)).status_code == 200

        await eventually(ready_again, timeout_s=60, what="readiness back after Weaviate restarted")


# -- the chat page in headless Chromium -------------------------------------------------------


class Chromium:
    """A headless Chromium driven over the DevTools protocol (its own websocket)."""

    FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run")

    def __init__(self, profile: Path, log: Path) -> None:
        self.profile, self.log = profile, log
        self.proc: subprocess.Popen[bytes] | None = None
        self._ids = itertools.count(1)

    def launch(self, url: str) -> None:
        binary = shutil.which("chromium") or shutil.which("chromium-browser")
        assert binary, "chromium is not installed (Debian: apt-get install -y chromium)"
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(  # noqa: S603
                [binary, *self.FLAGS, f"--user-data-dir={self.profile}", "--remote-debugging-port=0", url],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )

    async def open(self, url: str) -> str:
        """Start Chromium on ``url``; the DevTools websocket of its page."""
        await asyncio.to_thread(self.launch, url)
        port_file = self.profile / "DevToolsActivePort"

        async def port() -> str | None:
            return port_file.read_text().split("\n")[0] if port_file.exists() else None

        devtools = await eventually(port, timeout_s=60, what="Chromium's DevToolsActivePort")
        async with httpx.AsyncClient(timeout=5) as http:
            async def page() -> str | None:
                targets = (await http.get(f"http://127.0.0.1:{devtools}/json/list")).json()
                pages = [t for t in targets if t["type"] == "page"]
                return pages[0]["webSocketDebuggerUrl"] if pages else None

            return await eventually(page, timeout_s=30, what="a page target")

    async def evaluate(self, ws: Any, expression: str) -> Any:
        call_id = next(self._ids)
        await ws.send(orjson.dumps({"id": call_id, "method": "Runtime.evaluate",
                                    "params": {"expression": expression, "returnByValue": True}}).decode())
        while True:
            reply = orjson.loads(await asyncio.wait_for(ws.recv(), 30))
            if reply.get("id") == call_id:
                return reply["result"]["result"].get("value")

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait(timeout=10)


async def test_chat_page_in_headless_chromium_shows_a_cited_answer(
    system: RunningSystem, tmp_path: Path
) -> None:
    base = f"http://127.0.0.1:{system.env['AICHAT_GATEWAY_PORT']}"
    browser = Chromium(tmp_path / "profile", tmp_path / "chromium.log")
    try:
        page_ws = await browser.open(f"{base}/?token={system.token('browser-user')}")
        async with connect_gateway(page_ws) as cdp:
            async def value(expression: str) -> Any:
                return await browser.evaluate(cdp, expression)

            async def connected() -> bool:
                return await value("document.getElementById('status').textContent") == "connected"

            await eventually(connected, timeout_s=30, what="the page's websocket to open")
            assert "token" not in await value("location.href")  # moved out of the address bar
            await value(f"document.getElementById('text').value = {orjson.dumps(QUESTIONS['hr/vacation']).decode()};"
                        "document.getElementById('ask').requestSubmit(); true")

            async def finished() -> str | None:
                state = await value("(document.querySelector('.turn[data-id]') || {dataset: {}}).dataset.state")
                return state if state in ("done", "error") else None

            state = await eventually(finished, timeout_s=60, what="the answer on the page")
            answer = await value("document.querySelector('.turn .answer').textContent")
            sources = await value("[...document.querySelectorAll('.turn .sources li')].map(li => li.textContent)")
            timings = await value("document.querySelector('.turn .timings').textContent")
            # without a token the page says why it is not connected
            await value("sessionStorage.clear(); location.replace('/'); true")

            async def refused() -> str | None:
                text = await value("document.getElementById('status') && document.getElementById('status').textContent")
                return text if text and "refused" in text else None

            status = await eventually(refused, timeout_s=30, what="the page to report the refusal")
    finally:
        browser.close()
    assert state == "done", answer
    assert "25 days of paid vacation" in answer and "[1]" in answer
    assert sources and "Vacation policy" in sources[0] and "hr/vacation" in sources[0]
    assert "total" in timings
    assert "token" in status
