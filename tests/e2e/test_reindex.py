"""Zero-downtime re-index on the real stack, while questions keep coming over the websocket.

A system of its own (topics, collection, consumer groups: tests/support.py) with a real
collection under its serving name, the way every deployment from before ``aichat reindex``
has it. Documents are ingested (one of them updated, one deleted). Then, under a stream of
questions that must all be answered with sources:

1. ``reindex start`` builds generation ``_v1`` with the same settings; the first switch
   is refused without ``--replace-collection``, then replaces the real collection by the
   alias (the migration path);
2. ``reindex start`` builds ``_v2`` with 48-token chunks; both generations take a new
   document; ``switch`` moves the alias (answers now cite chunks only ``_v2`` has);
3. ``rollback`` moves it back (answers cite ``_v1``'s chunks again), ``drop _v1`` is refused
   while it serves, ``drop _v2`` removes its workers, collections and topics.

Each generation holds exactly what a clean ingest of the final documents gives.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from infra.generations import weaviate_rest
from infra.reindex.cli import status_of
from infra.reindex.workers import stop_workers
from ingest.sdk import DocumentPublisher
from query_gateway.client import ask
from schemas.events import DocumentEvent
from streams.config import WorkerSettings
from tests.support import RunningSystem, cleaned_up, eventually, isolated_env

FACTS = {
    "lighthouse": ("The Varde lighthouse", "The Varde lighthouse stands on a granite reef eleven kilometres "
                   "off the coast. Its lamp was lit for the first time in 1874 and it was automated in 1987. "
                   "The keepers rowed out every second Tuesday with oil, bread and letters. A storm in 1903 "
                   "broke every pane of the lantern room, and the keeper kept the light burning with a "
                   "lantern held in his hands until the morning boat arrived."),
    "orchard": ("The Kessel orchard", "The Kessel orchard grows forty-two varieties of apple on a south "
                "slope above the river. The oldest tree, a Gravensteiner, was planted in 1911 and still "
                "bears fruit every autumn. Harvest starts in the last week of August, when schoolchildren "
                "from the village pick the low branches and the cider press in the barn runs day and night."),
    "tramway": ("The harbour tramway", "The harbour tramway runs on a metre-gauge track between the fish "
                "market and the ferry terminal. Its six cars were built in 1929 and repainted green in "
                "2015. A ride costs two tokens, sold at the kiosk beside the clock tower, and the last car "
                "leaves the ferry terminal at half past eleven at night."),
    "glacier": ("The Sorbreen glacier", "The Sorbreen glacier has retreated nine hundred metres since the "
                "survey of 1950. Meltwater from its tongue feeds a turquoise lake where a research station "
                "measures the water temperature every ten minutes. In winter the station is reached only "
                "on skis, a journey of six hours from the last road."),
    "choir": ("The cathedral choir", "The cathedral choir has thirty-six singers and rehearses on Thursday "
              "evenings in the crypt. Its conductor since 2008 has arranged the winter concert around "
              "folk songs from the islands, sung without instruments, and the recordings are sold to pay "
              "for the repair of the organ."),
}
UPDATED = ("orchard", "The Kessel orchard grows fifty-one varieties of apple on a south slope above the "
           "river since the new terrace was planted. The oldest tree, a Gravensteiner, was planted in 1911. "
           "Harvest starts in the first week of September now, and the cider press in the barn runs day "
           "and night while the pickers work.")
DELETED = "choir"
LATE = ("ferry", "The night ferry", "The night ferry to the outer islands leaves at a quarter past "
        "midnight from pier four. It carries two hundred passengers and forty cars, and its cafeteria "
        "serves fish soup until the engines stop at the first island.")
QUESTIONS = ["When was the lamp of the Varde lighthouse first lit?", "How many varieties of apple does the "
             "Kessel orchard grow?", "How much does a ride on the harbour tramway cost?",
             "How far has the Sorbreen glacier retreated?"]


@dataclass
class Stream:
    """Questions asked one after another by a few clients until stopped: every outcome counted."""

    url: str
    outcomes: Counter[str] = field(default_factory=Counter)
    cited: list[tuple[float, set[str]]] = field(default_factory=list)  # (sent at, chunk ids)
    problems: list[str] = field(default_factory=list)
    running: bool = True

    async def client(self, n: int) -> None:
        i = n
        while self.running:
            question, sent = QUESTIONS[i % len(QUESTIONS)], time.monotonic()
            i += 1
            try:
                frames = [f async for f in ask(self.url, question, top_k=3, client_id=f"c{n}-{i}",
                                               idle_timeout_s=20)]
            except Exception as exc:  # noqa: BLE001 - every failure of a question is counted
                self.outcomes["failed"] += 1
                self.problems.append(f"{question}: {type(exc).__name__}: {exc}")
                continue
            sources = next((f["sources"] for f in frames if f["type"] == "sources"), [])
            if frames[-1]["type"] != "done":
                self.outcomes["failed"] += 1
                self.problems.append(f"{question}: {frames[-1]}")
            elif not sources:
                self.outcomes["empty"] += 1
            else:
                self.outcomes["answered"] += 1
                self.cited.append((sent, {s["chunk_id"] for s in sources}))

    def cited_since(self, t: float) -> list[set[str]]:
        return [ids for sent, ids in self.cited if sent >= t]


async def reindex(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "streams.cli", "reindex", *args, env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    started = time.monotonic()
    out, err = await asyncio.wait_for(proc.communicate(), 400)
    print(f"  aichat reindex {' '.join(args)}: rc {proc.returncode} in {time.monotonic() - started:.1f}s", flush=True)
    return int(proc.returncode or 0), out.decode(), err.decode()


async def ok(env: dict[str, str], *args: str) -> str:
    rc, out, err = await reindex(env, *args)
    assert rc == 0, f"aichat reindex {' '.join(args)}: rc {rc}\n{out}\n{err[-3000:]}"
    return out


async def chunks_of(settings: WorkerSettings, collection: str) -> dict[str, tuple[str, int]]:
    """chunk id → (doc_id, version) of every chunk in ``collection`` (or alias)."""
    query = f"{{Get {{{collection}(limit: 1000) {{doc_id version _additional {{id}}}}}}}}"
    async with weaviate_rest(settings) as http:
        body = (await http.post("/v1/graphql", json={"query": query})).json()
    assert not body.get("errors"), body
    return {o["_additional"]["id"]: (o["doc_id"], int(o["version"])) for o in body["data"]["Get"][collection]}


async def caught_up(settings: WorkerSettings, name: str, documents: int) -> dict[str, Any] | None:
    """The generation's row of ``aichat reindex status`` once it holds ``documents`` and its
    group has nothing left to process (read in-process: polled often)."""
    state = await status_of(settings)
    row = next(g for g in state["generations"] if g["collection"] == name)
    return row if row["behind"] == 0 and row["documents"] == documents and row["members"] else None


@pytest.fixture
async def system(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningSystem]:
    tmp = tmp_path_factory.mktemp("reindex")
    sys_ = RunningSystem(env=isolated_env(uuid.uuid4().hex[:10], tmp), logs=tmp / "logs")
    async with cleaned_up(sys_):
        try:
            sys_.start("answer", "ingest")
            yield sys_
        finally:  # what the run made beyond the system's own names: workers, alias, generations
            settings = sys_.settings()
            serving = settings.weaviate_collection
            for name in (f"{serving}_v1", f"{serving}_v2"):
                stop_workers(settings, name)
            async with weaviate_rest(settings) as http:
                await http.delete(f"/v1/aliases/{serving}")
                for name in (f"{serving}_v1", f"{serving}_v1Docs", f"{serving}_v2", f"{serving}_v2Docs"):
                    await http.delete(f"/v1/schema/{name}")


async def test_reindex_switch_rollback_drop_while_questions_keep_being_answered(system: RunningSystem) -> None:
    env, settings = system.env, system.settings()
    serving = settings.weaviate_collection
    v1, v2 = f"{serving}_v1", f"{serving}_v2"
    async with DocumentPublisher(settings) as publisher:
        for doc_id, (title, text) in FACTS.items():
            await publisher.publish(DocumentEvent(doc_id=doc_id, version=1, title=title, text=text))
        await publisher.publish(DocumentEvent(doc_id=UPDATED[0], version=2, title=FACTS[UPDATED[0]][0],
                                              text=UPDATED[1]))
        await publisher.publish(DocumentEvent(op="delete", doc_id=DELETED, version=2))
    final = {doc_id: 2 if doc_id == UPDATED[0] else 1 for doc_id in FACTS if doc_id != DELETED}

    async def legacy_indexed() -> bool:
        return set((await chunks_of(settings, serving)).values()) == set(final.items())

    await eventually(legacy_indexed, timeout_s=120, what="the documents indexed in the real collection")
    t0 = time.monotonic()

    def phase(what: str) -> None:
        print(f"{time.monotonic() - t0:6.1f}s {what}: {dict(stream.outcomes)}", flush=True)

    stream = Stream(system.ws_url)
    clients = [asyncio.create_task(stream.client(n)) for n in range(3)]
    try:
        # 1. the migration: a generation with the same settings replaces the real collection
        await ok(env, "start", "--collection", v1)
        await eventually(lambda: caught_up(settings, v1, len(final)), timeout_s=180, what=f"{v1} caught up")
        rc, _, err = await reindex(env, "switch", v1)
        assert rc == 1 and "--replace-collection" in err
        next(c for c in system.children if c.name == "ingest").stop()  # the real collection's writer
        out = await eventually(lambda: _switched(env, "switch", v1, "--replace-collection"), timeout_s=60,
                               what="the legacy ingest group empty")
        assert f"{serving} now serves {v1}" in out
        phase(f"replaced the collection by an alias of {v1}")
        # 2. a generation with other chunking; both generations take a document published now
        await ok(env, "start", "--collection", v2, "--chunk-max-tokens", "48", "--chunk-overlap-tokens", "8")
        await eventually(lambda: caught_up(settings, v2, len(final)), timeout_s=180, what=f"{v2} caught up")
        async with DocumentPublisher(settings) as publisher:
            await publisher.publish(DocumentEvent(doc_id=LATE[0], version=1, title=LATE[1], text=LATE[2]))
        phase(f"{v2} caught up")
        final[LATE[0]] = 1
        for name in (v1, v2):
            await eventually(lambda n=name: caught_up(settings, n, len(final)), timeout_s=120, what=f"{name} has the late doc")
        one, two = await chunks_of(settings, v1), await chunks_of(settings, v2)
        for chunks in (one, two):  # what a clean ingest of the final documents gives
            assert set(chunks.values()) == set(final.items())
        assert len(two) > len(one)  # 48-token chunks
        only_two = set(two) - set(one)
        switched_at = time.monotonic()
        out = await ok(env, "switch", v2)
        assert f"{serving} now serves {v2}" in out
        await eventually(lambda: _cites(stream, switched_at + 1, only_two), timeout_s=60,
                         what=f"answers citing chunks only {v2} has")
        phase(f"answers from {v2}")
        # 3. rollback, then drop
        out = await ok(env, "rollback")
        back_at = time.monotonic() + 1  # answers to questions sent from then on come from v1
        assert f"{serving} now serves {v1}" in out
        await eventually(lambda: _answered_since(stream, back_at, 6), timeout_s=60, what="answers after rollback")
        assert all(ids <= set(one) for ids in stream.cited_since(back_at)), "an answer from v2 after the rollback"
        rc, _, err = await reindex(env, "drop", v1)
        assert rc == 1 and f"{v1} serves {serving} now" in err
        phase("rolled back")
        out = await ok(env, "drop", v2)
        assert "stopped 1 worker(s)" in out and f"{settings.topic_prefix}chunks.{v2}" in out
        state = orjson.loads(await ok(env, "status", "--json"))
        assert state["serving"] == {"name": serving, "kind": "alias", "target": v1}
        assert [g["collection"] for g in state["generations"]] == [v1]
        await asyncio.sleep(2)  # a few more questions after the drop
    finally:
        stream.running = False
        await asyncio.gather(*clients)
    print(f"questions: {dict(stream.outcomes)}")
    assert stream.outcomes["failed"] == 0, stream.problems[:5]
    assert stream.outcomes["empty"] == 0
    assert stream.outcomes["answered"] >= 30


async def _switched(env: dict[str, str], *args: str) -> str | None:
    rc, out, err = await reindex(env, *args)
    if rc == 1 and "stop them first" in err:
        return None  # the stopped worker's member has not left the group yet
    assert rc == 0, f"{args}: {out}\n{err[-3000:]}"
    return out


async def _cites(stream: Stream, since: float, chunk_ids: set[str]) -> bool:
    return any(ids & chunk_ids for ids in stream.cited_since(since))


async def _answered_since(stream: Stream, since: float, n: int) -> bool:
    return len(stream.cited_since(since)) >= n
