"""Exact ingestion on the real Kafka and Weaviate, through real worker processes:
updates replace, deletes remove, versions win over arrival order, replays change
nothing, two tenants' documents with the same doc_id never touch each other, and
neither Weaviate going away nor a SIGKILLed worker loses a chunk."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from infra import stack
from infra.config import StackSettings
from ingest.events import content_hash
from ingest.sdk import DocumentPublisher
from schemas.codec import decode, encode
from schemas.events import DocumentEvent, DocumentIndexed
from streams.config import load_settings
from streams.docstate import DocState
from streams.vectorstore import WeaviateStore
from tests.support import RunningSystem, cleaned_up, eventually, isolated_env

LONG = " ".join(f"Sentence {i} talks about the topic of exact updates in streaming pipelines." for i in range(60))


def doc(doc_id: str, version: int, text: str, *, op: str = "upsert", title: str = "",
        tenant: str = "default") -> DocumentEvent:
    return DocumentEvent(op=op, doc_id=doc_id, tenant=tenant, version=version, title=title or doc_id,
                         text=text,
                         content_hash=content_hash(title or doc_id, text, {}) if op == "upsert" else "")


@pytest.fixture(scope="module")
async def system(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningSystem]:
    tmp = tmp_path_factory.mktemp("ingest")
    sys_ = RunningSystem(env=isolated_env(uuid.uuid4().hex[:10], tmp), logs=tmp / "logs")
    async with cleaned_up(sys_):
        sys_.start("pipeline", gateway=False)
        yield sys_


@pytest.fixture
async def store(system: RunningSystem) -> AsyncIterator[WeaviateStore]:
    s = WeaviateStore(system.settings())
    await s.start()
    yield s
    await s.stop()


async def publish(system: RunningSystem, *events: DocumentEvent) -> None:
    async with DocumentPublisher(system.settings()) as publisher:
        for event in events:
            await publisher.publish(event)


async def indexed_state(store: WeaviateStore, doc_id: str, version: int, status: str = "indexed",
                        *, tenant: str = "default") -> None:
    async def reached() -> bool:
        state = (await store.registry.get([(tenant, doc_id)])).get((tenant, doc_id))
        return state is not None and state.version == version and state.status == status

    await eventually(reached, timeout_s=90, what=f"{tenant}/{doc_id} {status} at v{version}")


async def state_of(store: WeaviateStore, doc_id: str, tenant: str = "default") -> DocState:
    return (await store.registry.get([(tenant, doc_id)]))[(tenant, doc_id)]


async def test_an_update_replaces_exactly_the_old_chunks(system: RunningSystem, store: WeaviateStore) -> None:
    await publish(system, doc("upd", 1, LONG))
    await indexed_state(store, "upd", 1)
    v1_chunks = await store.count_chunks("default", "upd", 1)
    assert v1_chunks > 1
    await publish(system, doc("upd", 2, "A short replacement text."))
    await indexed_state(store, "upd", 2)
    assert await store.count_chunks("default", "upd") == 1
    assert await store.count_chunks("default", "upd", 2) == 1


async def test_a_delete_removes_every_chunk(system: RunningSystem, store: WeaviateStore) -> None:
    await publish(system, doc("del", 1, LONG))
    await indexed_state(store, "del", 1)
    await publish(system, doc("del", 2, "", op="delete"))
    await indexed_state(store, "del", 2, "deleted")
    assert await store.count_chunks("default", "del") == 0


async def test_an_older_version_never_overwrites_a_newer_one(system: RunningSystem, store: WeaviateStore) -> None:
    await publish(system, doc("ooo", 5, "The newest text, version five."))
    await indexed_state(store, "ooo", 5)
    await publish(system, doc("ooo", 3, "An older text, version three, published late."),
                  doc("ooo", 4, "", op="delete"))
    await acks_include(system, "ooo", {(3, "stale"), (4, "stale")})
    state = await state_of(store, "ooo")
    assert (state.version, state.status) == (5, "indexed")
    assert await store.count_chunks("default", "ooo", 5) == 1
    assert await store.count_chunks("default", "ooo") == 1


async def test_replaying_the_same_events_leaves_the_same_objects(system: RunningSystem, store: WeaviateStore) -> None:
    events = [doc(f"rep-{i}", 1, f"Replay document number {i}.") for i in range(5)]
    await publish(system, *events)
    for e in events:
        await indexed_state(store, e.doc_id, 1)
    before = await store.count()
    # the very same bytes again (a producer retry, a topic replay)
    producer = AIOKafkaProducer(bootstrap_servers=system.settings().kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for e in events:
            await producer.send_and_wait(system.settings().topic("documents"), encode(e), key=e.kafka_key.encode())
    finally:
        await producer.stop()
    for e in events:  # each version is acknowledged once per delivery of its last chunk
        await eventually(lambda d=e.doc_id: _count_acks(system, d, 2), timeout_s=60, what=f"second ack of {e.doc_id}")
    assert await store.count() == before


async def test_two_tenants_with_the_same_doc_id_are_two_documents(
    system: RunningSystem, store: WeaviateStore
) -> None:
    """JSON Lines ids like "1" collide across tenants: versions, updates and deletes stay apart."""
    await publish(system, doc("1", 7, "Acme's first record, version seven.", tenant="acme"),
                  doc("1", 2, "Globex's first record, version two.", tenant="globex"))
    await indexed_state(store, "1", 7, tenant="acme")
    await indexed_state(store, "1", 2, tenant="globex")  # acme's v7 does not make it stale
    assert await store.count_chunks("acme", "1") == 1
    assert await store.count_chunks("globex", "1") == 1
    hits = await store.hybrid_search("first record", [0.0] * 384, tenant="acme", top_k=5, alpha=0.0)
    assert [h.text for h in hits] == ["Acme's first record, version seven."]
    await publish(system, doc("1", 3, "", op="delete", tenant="globex"))
    await indexed_state(store, "1", 3, "deleted", tenant="globex")
    assert await store.count_chunks("globex", "1") == 0
    assert await store.count_chunks("acme", "1") == 1  # globex's delete left acme's document alone
    assert (await state_of(store, "1", "acme")).version == 7


async def test_unchanged_content_is_not_embedded_again(system: RunningSystem, store: WeaviateStore) -> None:
    text = "Content that does not change between versions."
    await publish(system, doc("same", 1, text))
    await indexed_state(store, "same", 1)
    await publish(system, doc("same", 2, text))
    await indexed_state(store, "same", 2)
    await acks_include(system, "same", {(1, "indexed"), (2, "unchanged")})
    assert await store.count_chunks("default", "same", 1) == 1  # the indexed chunks stay, version 2 points at them


async def test_a_korean_markdown_document_is_found_by_a_korean_keyword(system: RunningSystem, store: WeaviateStore) -> None:
    text = (
        "# 원격 근무 정책\n\n## 근무일\n\n모든 직원은 일주일에 최대 3일까지 원격 근무를 할 수 있습니다."
        "원격 근무일은 팀 캘린더에 미리 등록해야 합니다.\n\n## 보안\n\n회사 노트북과 VPN을 사용해야 합니다."
    )
    await publish(system, DocumentEvent(doc_id="ko", version=1, title="원격 근무 정책", text=text,
                                        content_type="text/markdown"))
    await indexed_state(store, "ko", 1)
    hits = await store.hybrid_search("캘린더", [0.0] * 384, tenant="default", top_k=3, alpha=0.0)
    assert hits and hits[0].doc_id == "ko"
    assert "캘린더" in hits[0].text


async def acks_include(system: RunningSystem, doc_id: str, wanted: set[tuple[int, str]]) -> None:
    async def seen() -> bool:
        return wanted <= {(a.version, a.outcome) for a in await read_acks(system, doc_id)}

    await eventually(seen, timeout_s=60, what=f"acknowledgements {sorted(wanted)} of {doc_id}")


async def _count_acks(system: RunningSystem, doc_id: str, n: int) -> bool:
    return len(await read_acks(system, doc_id)) >= n


async def read_acks(system: RunningSystem, doc_id: str) -> list[DocumentIndexed]:
    settings = system.settings()
    consumer = AIOKafkaConsumer(settings.topic("indexed"), bootstrap_servers=settings.kafka_bootstrap,
                                auto_offset_reset="earliest", enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        acks: list[DocumentIndexed] = []
        while True:
            batch = await consumer.getmany(timeout_ms=1000)
            if not batch:
                return [a for a in acks if a.doc_id == doc_id]
            acks.extend(decode(DocumentIndexed, r.value) for rs in batch.values() for r in rs)
    finally:
        await consumer.stop()


async def test_weaviate_down_during_ingest_loses_nothing(system: RunningSystem, store: WeaviateStore) -> None:
    stack_settings = load_settings(StackSettings)
    events = [doc(f"wv-{i}", 1, f"Document {i} written while Weaviate restarts.") for i in range(40)]
    stack.down(stack_settings, services=["weaviate"])
    try:
        await publish(system, *events)
    finally:
        stack.up(stack_settings, services=["weaviate"])
    await store.stop()
    await store.start()
    for e in events:
        await indexed_state(store, e.doc_id, 1)
    assert sum([await store.count_chunks("default", e.doc_id) for e in events]) == len(events)


async def test_sigkill_mid_stream_then_restart_leaves_every_chunk_exactly_once(
    system: RunningSystem, store: WeaviateStore
) -> None:
    events = [doc(f"kill-{i}", 1, LONG) for i in range(30)]
    await publish(system, *events)
    worker = next(c for c in system.children if c.name == "pipeline")
    assert worker.proc is not None
    os.killpg(worker.proc.pid, signal.SIGKILL)  # mid-batch: no chance to commit or clean up
    worker.proc.wait(timeout=10)
    worker.start(env={**os.environ, **system.env})
    for e in events:
        await indexed_state(store, e.doc_id, 1)
    per_doc = {e.doc_id: await store.count_chunks("default", e.doc_id) for e in events}
    expected = (await state_of(store, events[0].doc_id)).n_chunks
    assert set(per_doc.values()) == {expected}


async def test_sigterm_under_load_exits_within_30s_and_loses_nothing(
    system: RunningSystem, store: WeaviateStore
) -> None:
    events = [doc(f"term-{i}", 1, LONG) for i in range(40)]
    await publish(system, *events)
    worker = next(c for c in system.children if c.name == "pipeline")
    assert worker.proc is not None
    await asyncio.sleep(1.0)  # let it get into the middle of the work
    started = time.monotonic()
    os.killpg(worker.proc.pid, signal.SIGTERM)
    code = await asyncio.to_thread(worker.proc.wait, 45)
    exit_s = time.monotonic() - started
    assert exit_s < 30, f"worker took {exit_s:.1f}s to stop"
    assert code == 0, f"exit code {code}"
    worker.start(env={**os.environ, **system.env})
    for e in events:
        await indexed_state(store, e.doc_id, 1)
    expected = (await state_of(store, events[0].doc_id)).n_chunks
    assert {await store.count_chunks("default", e.doc_id) for e in events} == {expected}
