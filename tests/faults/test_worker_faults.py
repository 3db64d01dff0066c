"""Faults of the system's own processes and of its non-broker dependencies, on the real
Kafka, Weaviate and Elasticsearch, judged by the fault suite's checker (checker.py).

a. two pipeline workers in one group, one SIGKILLed mid-batch: the other takes its
   partitions over; nothing lost, nothing duplicated in Weaviate;
b. the answerer SIGKILLed mid-answer, then restarted. What the system promises: a query
   is acked by the answerer only once answered, so it is answered again after the
   restart; the gateway drops the replay's events it has already forwarded (by ``seq``)
   and forwards the rest, so a client whose deadline is still running gets exactly one
   ``done`` and the whole answer once; a client whose deadline passed first gets exactly
   one ``deadline_exceeded`` error from its gateway, and the replay (an error, the
   deadline being over) reaches nobody. Never silence, never two final frames. With a
   generator that answers differently each time, the patient client gets one retriable
   ``answer_interrupted`` error instead: never an answer spliced from two runs.
c. one of two gateway replicas SIGKILLed under traffic, its clients reconnecting to the
   other and asking again: every query ends with exactly one ``done``;
d. Elasticsearch refusing the shipper's credentials (401) for a while, then accepting
   them: nothing is dead-lettered, the shipper's readiness is red meanwhile, and
   afterwards every record is in Elasticsearch exactly once;
e. poison objects on ``embeddings`` (a vector of the wrong length, which Weaviate refuses
   per object): dead-lettered with Weaviate's reason, the partition goes on;
f. a dependency unreachable for longer than the agents' backoff cap
   (``AICHAT_AGENT_RETRY_MAX_S``): the worker keeps retrying at the cap without crashing
   and catches up when it is back; nothing lost. Elasticsearch (the shipper) holds to it;
   so does the pipeline against Weaviate, each call bounded by ``AICHAT_WEAVIATE_TIMEOUT_S``
   (weaviate-client's own gRPC retries would sleep up to 63 s).

The answerer scenarios use a scripted OpenAI-compatible endpoint (support.py) so that an
answer is slow enough to be cut in the middle, and its exact text is known. Scenario d
puts a real reverse proxy between the shipper and the real Elasticsearch (which runs
without security locally) that answers 401 while switched to refuse. Scenario f stops
only the shared stack's Weaviate for a short while and always starts it again.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from infra import stack
from infra.config import StackSettings
from ingest.events import content_hash
from ingest.sdk import DocumentPublisher
from query_gateway.client import ask
from query_gateway.errors import GatewayUnreachable
from schemas.codec import decode, encode, pack_vector
from schemas.events import DeadLetter, DocumentEvent, EmbeddedChunk, chunk_uuid
from streams.agents.shipper import SHIPPED_TOPICS
from streams.config import WorkerSettings, load_settings
from tests.faults.checker import (
    DocVersion,
    check_answers,
    check_event_log,
    check_index,
    end_offsets,
    read_answer_events,
    read_records,
    until_ok,
)
from tests.faults.support import (
    FAST_MODEL,
    Helper,
    Process,
    ready_json,
    scripted_answer,
    start_gateway,
    start_worker,
    ws_url,
)
from tests.support import RunningSystem, cleaned_up, eventually, isolated_env, metric

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]

LONG = " ".join(f"Sentence {i} explains how a consumer group moves partitions between workers."
                for i in range(40))
Frames = list[dict[str, Any]]


@pytest.fixture
async def system(tmp_path: Path, services: WorkerSettings) -> AsyncIterator[RunningSystem]:
    """An isolated system (own topics, collection, indices) whose processes each test starts."""
    env = {**isolated_env(uuid.uuid4().hex[:10], tmp_path), "AICHAT_EMBED_MODEL": FAST_MODEL}
    sys_ = RunningSystem(env=env, logs=tmp_path / "logs")
    async with cleaned_up(sys_):
        yield sys_


def doc(doc_id: str, text: str, version: int = 1) -> DocumentEvent:
    return DocumentEvent(doc_id=doc_id, version=version, title=doc_id, text=text,
                         content_hash=content_hash(doc_id, text, {}))


async def publish(system: RunningSystem, events: list[DocumentEvent]) -> None:
    async with DocumentPublisher(system.settings()) as publisher:
        for event in events:
            await publisher.publish(event)


def messages(process: Process) -> list[str]:
    """The ``message`` of every JSON log line of a child (its log file accumulates restarts)."""
    out = []
    for line in process.log_text().splitlines():
        if line.startswith("{"):
            try:
                out.append(str(json.loads(line).get("message", "")))
            except json.JSONDecodeError:
                continue
    return out


INDEXED = re.compile(r"^indexed (\S+) v(\d+) ")


def indexed_keys(process: Process) -> set[str]:
    return {m.group(1) for m in map(INDEXED.match, messages(process)) if m}


# -- a. rebalance after a SIGKILL ------------------------------------------------------------


async def test_a_pipeline_worker_killed_mid_batch_the_other_takes_over(system: RunningSystem) -> None:
    # small batches: the work of each worker spans many batches, so the kill lands in one
    env = {"AICHAT_BATCH_MAX_EVENTS": "8"}
    victim, survivor = (start_worker(system, "pipeline", f"pipeline-{n}", env) for n in "ab")
    await asyncio.gather(victim.ready(), survivor.ready())
    # enough work that the second worker, which joins the group later, starts before the
    # first has done it all (with 30 documents one full-suite run saw all done first)
    docs = [doc(f"rb-{i}", LONG) for i in range(60)]
    await publish(system, docs)

    async def both_indexing() -> bool:
        return bool(indexed_keys(victim)) and bool(indexed_keys(survivor))

    await eventually(both_indexing, timeout_s=150, what="both workers to index documents")
    victim.kill9()  # mid-batch: no commit, no clean-up
    killed = time.monotonic()
    by_victim, before = indexed_keys(victim), indexed_keys(survivor)
    assert len(by_victim | before) < len(docs), "the kill came after all the work was done"

    report = await until_ok(lambda: check_index(system.settings(), docs), timeout_s=150)
    took = time.monotonic() - killed
    assert report.ok, report
    # the survivor took the victim's partitions over and finished their documents
    partition = {r.key.decode(): r.partition
                 for r in await read_records(system.settings(), ["documents"])}
    victims = {partition[k] for k in by_victim}
    taken_over = {k for k in indexed_keys(survivor) - before if partition[k] in victims}
    assert taken_over, f"no document of the victim's partitions {victims} finished by the survivor"
    print(f"a: {len(by_victim)} docs by the victim before the kill, {len(taken_over)} of its "
          f"partitions finished by the survivor; index complete {took:.1f}s after the kill")


# -- b. the answerer killed mid-answer -------------------------------------------------------


async def collect(url: str, text: str, key: str, into: Frames, idle_timeout_s: float) -> None:
    async for frame in ask(url, text, client_id=key, idle_timeout_s=idle_timeout_s):
        into.append(frame)


def tokens(frames: Frames) -> list[str]:
    return [f["delta"] for f in frames if f["type"] == "token"]


@pytest.mark.parametrize("sampling", [
    pytest.param(False, id="deterministic"),
    pytest.param(True, id="sampling"),
])
async def test_b_answerer_killed_mid_answer_then_restarted(system: RunningSystem, sampling: bool) -> None:
    deltas = 16
    vary = ["--vary"] if sampling else []
    async with Helper("llm", system.logs, "--delay", "0.3", "--deltas", str(deltas), *vary) as llm:
        answerer = start_worker(system, "answer", "answerer", {
            "AICHAT_GENERATOR": "openai", "AICHAT_GENERATOR_BASE_URL": f"{llm.url}/v1"})
        patient = start_gateway(system, "gateway-patient", 0, {"AICHAT_ANSWER_DEADLINE_MS": "150000"})
        hasty = start_gateway(system, "gateway-hasty", 1, {"AICHAT_ANSWER_DEADLINE_MS": "8000"})
        await asyncio.gather(answerer.ready(), patient.ready(), hasty.ready())
        warm: Frames = []
        await collect(ws_url(system, patient), "Is the answerer up?", "warm", warm, 150)
        assert tokens(warm) == scripted_answer("Is the answerer up?", deltas, 1 if sampling else None)

        question = "What happens to an answer when its worker dies?"
        frames: dict[str, Frames] = {"patient": [], "hasty": []}
        asked = [asyncio.create_task(collect(ws_url(system, gw), question, key, frames[key], 150))
                 for key, gw in (("patient", patient), ("hasty", hasty))]

        async def mid_answer() -> bool:
            return all(len(tokens(f)) >= 2 for f in frames.values())

        await eventually(mid_answer, timeout_s=60, what="both answers to be streaming")
        answerer.kill9()
        killed = time.monotonic()
        cut = {k: len(tokens(f)) for k, f in frames.items()}
        assert all(n < deltas for n in cut.values()), f"the answers ended before the kill: {cut}"
        answerer.start()
        await answerer.ready()
        await asyncio.wait_for(asyncio.gather(*asked), timeout=200)
        answered = time.monotonic() - killed
        calls = await llm.stats()

    report = check_answers(frames, await read_answer_events(system.settings()))
    assert not (report.lost or report.duplicated or report.out_of_order), report
    assert frames["hasty"][-1]["code"] == "deadline_exceeded", frames["hasty"][-1]
    assert calls["requests"] >= 4, calls  # warm-up, two questions, the replay
    assert report.ok, report  # never an answer spliced from two runs
    if sampling:  # the replay answers differently: one clear error that says to ask again
        assert frames["patient"][-1]["code"] == "answer_interrupted", frames["patient"][-1]
    else:
        assert frames["patient"][-1]["type"] == "done", frames["patient"][-1]
        assert tokens(frames["patient"]) == scripted_answer(question, deltas)  # whole, once, in order
    print(f"b: cut after {cut} tokens; answered {answered:.1f}s after the kill; "
          f"{calls['requests']} generator calls; {report}")


# -- c. a gateway replica killed, clients moving to the other --------------------------------


async def test_c_a_gateway_replica_killed_clients_reconnect_to_the_other(system: RunningSystem) -> None:
    async with Helper("llm", system.logs, "--delay", "0.1", "--deltas", "10") as llm:
        answerer = start_worker(system, "answer", "answerer", {
            "AICHAT_GENERATOR": "openai", "AICHAT_GENERATOR_BASE_URL": f"{llm.url}/v1"})
        doomed = start_gateway(system, "gateway-a", 0)
        other = start_gateway(system, "gateway-b", 1)
        await asyncio.gather(answerer.ready(), doomed.ready(), other.ready())
        await collect(ws_url(system, other), "warm up", "warm", [], 120)

        results: dict[str, Frames] = {}
        cut: list[tuple[str, Frames]] = []
        done_first = asyncio.Event()
        n_clients, n_questions = 6, 4

        async def client(i: int) -> None:
            gateways = [doomed, other] if i % 2 == 0 else [other]
            for j in range(n_questions):
                key = f"c{i}-q{j}"
                while True:
                    frames: Frames = []
                    url = ws_url(system, gateways[0], user=f"client-{i}")
                    try:
                        await collect(url, f"question {j} of client {i}", key, frames, 30)
                    except GatewayUnreachable:
                        assert len(gateways) > 1, f"{key}: the surviving replica dropped it: {frames}"
                        cut.append((key, frames))
                        gateways = gateways[1:]  # reconnect to the other replica, ask again
                        continue
                    results[key] = frames
                    break
                if sum(1 for k in results if k.endswith("-q0")) == n_clients:
                    done_first.set()

        clients = asyncio.gather(*(client(i) for i in range(n_clients)))
        await asyncio.wait_for(done_first.wait(), timeout=60)
        doomed.kill9()
        killed = time.monotonic()
        await asyncio.wait_for(clients, timeout=120)
        took = time.monotonic() - killed

    report = check_answers(results, await read_answer_events(system.settings()))
    assert report.ok, report
    assert report.sent == n_clients * n_questions and report.outcomes == {"done": report.sent}
    assert cut, "no query was in flight on the killed replica"
    assert all(f[-1:] == [] or f[-1]["type"] not in ("done", "error") for _, f in cut), cut
    # the survivor only ever saw answers of its own connections
    ops = f"http://127.0.0.1:{other.extra['ops_port']}"
    assert await metric(ops, 'aichat_gateway_answers_dropped_total{reason="unknown_query"}') == 0
    print(f"c: {len(cut)} queries cut by the kill and asked again; every client done {took:.1f}s "
          f"after the kill; {report}")


# -- d. Elasticsearch refusing the shipper's credentials -------------------------------------


async def dead_letters(settings: WorkerSettings) -> list[DeadLetter]:
    return [decode(DeadLetter, r.value) for r in await read_records(settings, ["dlq"])]


async def test_d_elasticsearch_refusing_401_then_recovering(system: RunningSystem) -> None:
    settings = system.settings()
    async with Helper("es-proxy", system.logs, "--upstream", settings.elastic_url) as proxy:
        # the real Elasticsearch runs without security: the proxy plays the refusing cluster
        shipper = start_worker(system, "shipper", "shipper", {
            "AICHAT_ELASTIC_URL": proxy.url, "AICHAT_ELASTIC_API_KEY": "expired-key"})
        await shipper.ready()
        before = [doc(f"es-before-{i}", f"Document {i}, shipped before the refusal.") for i in range(10)]
        await publish(system, before)
        assert (report := await until_ok(lambda: check_event_log(settings, ["documents"]),
                                         timeout_s=60)).ok, report

        await proxy.control("refuse")
        refused_from = time.monotonic()
        during = [doc(f"es-during-{i}", f"Document {i}, published while Elasticsearch refuses.")
                  for i in range(10)]
        await publish(system, during)

        async def red() -> dict[str, Any] | None:
            status, body = await ready_json(f"{shipper.url}/health/ready")
            return body if status == 503 and body["checks"]["elasticsearch"] is False else None

        await eventually(red, timeout_s=60, what="the shipper's readiness to turn red")

        async def retried() -> bool:  # the shipper keeps trying through the refusal
            return (await proxy.stats())["refused"] >= 6

        await eventually(retried, timeout_s=60, what="several refused attempts")
        held = await check_event_log(settings, ["documents"])  # waiting in Kafka, not dropped
        assert (held.sent, len(held.lost)) == (20, len(during)), held
        assert shipper.alive
        assert not await dead_letters(settings), "dead letters during the refusal"
        assert await metric(shipper.url, 'aichat_dead_letters_total{agent="shipper"') == 0

        await proxy.control("accept")
        accepted = time.monotonic()
        ends = await end_offsets(settings, SHIPPED_TOPICS)
        report = await until_ok(lambda: check_event_log(settings, SHIPPED_TOPICS, ends=ends),
                                timeout_s=120)
        caught_up = time.monotonic() - accepted
        assert report.ok, report
        await eventually(lambda: _ready_ok(f"{shipper.url}/health/ready"), timeout_s=30,
                         what="the shipper's readiness back to green")
        stats = await proxy.stats()
    assert not await dead_letters(settings), "dead letters after the refusal"
    assert report.per_topic["documents"] == 20
    print(f"d: refused {stats['refused']} requests for {accepted - refused_from:.1f}s; "
          f"caught up {caught_up:.1f}s after the key was accepted again; {report}")


async def _ready_ok(url: str) -> tuple[int, dict[str, Any]] | None:
    status, body = await ready_json(url)
    return (status, body) if status == 200 else None


# -- e. poison objects on embeddings ---------------------------------------------------------


def embedded(doc_id: str, vector: np.ndarray) -> EmbeddedChunk:
    text = f"{doc_id}: written straight onto the embeddings topic."
    return EmbeddedChunk(chunk_id=chunk_uuid("default", doc_id, 1, 0), doc_id=doc_id, version=1,
                         seq=0, n_chunks=1, text=text, title=doc_id,
                         content_hash=content_hash(doc_id, text, {}),
                         vector=pack_vector(vector), dim=len(vector), model=FAST_MODEL)


def unit_vector(dim: int, rng: random.Random) -> np.ndarray:
    v = np.array([rng.gauss(0, 1) for _ in range(dim)], dtype=np.float32)
    return v / np.linalg.norm(v)


async def test_e_a_poison_object_is_dead_lettered_and_the_partition_goes_on(
        system: RunningSystem) -> None:
    settings = system.settings()
    pipeline = start_worker(system, "pipeline", "pipeline")
    await pipeline.ready()
    first = [doc(f"ok-{i}", f"Valid document {i} that sets the collection's vectors.") for i in range(3)]
    await publish(system, first)
    assert (report := await until_ok(lambda: check_index(settings, first), timeout_s=90)).ok, report

    rng = random.Random(7)
    topic, partition = settings.topic("embeddings"), 0
    alone = embedded("poison-alone", unit_vector(10, rng))  # the collection holds 384 dims
    after = [embedded(f"after-{i}", unit_vector(384, rng)) for i in range(6)]
    among = embedded("poison-among", unit_vector(12, rng))
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        sent = {}
        meta = await producer.send_and_wait(topic, encode(alone), key=alone.kafka_key.encode(),
                                            partition=partition)
        sent[alone.doc_id] = meta.offset
        await asyncio.sleep(2)  # spacing only: the indexer meets the poison in a batch of its own
        for chunk in [*after[:3], among, *after[3:]]:
            meta = await producer.send_and_wait(topic, encode(chunk), key=chunk.kafka_key.encode(),
                                                partition=partition)
            sent[chunk.doc_id] = meta.offset
    finally:
        await producer.stop()

    valid: list[DocumentEvent | DocVersion] = [*first, *(("default", c.doc_id, 1) for c in after)]
    report = await until_ok(lambda: check_index(settings, valid), timeout_s=90)
    assert report.ok, report

    async def two_letters() -> list[DeadLetter] | None:
        letters = [d for d in await dead_letters(settings) if d.topic == topic]
        return letters if len(letters) >= 2 else None

    letters = await eventually(two_letters, timeout_s=60, what="two dead letters from the indexer")
    assert sorted((d.partition, d.offset) for d in letters) == sorted(
        [(partition, sent["poison-alone"]), (partition, sent["poison-among"])])
    dims = {alone.kafka_key: alone.dim, among.kafka_key: among.dim}
    for letter in letters:
        assert (letter.agent, letter.error_type) == ("indexer", "EffectFailed"), letter
        # Weaviate's own reason: "new node has a vector with length 10. Existing nodes have
        # vectors with length 384"
        assert letter.key is not None and f"length {dims[letter.key]}" in letter.message, letter.message
        assert "Weaviate refused" in letter.message and "384" in letter.message, letter.message

    async def committed_past_the_end() -> bool:  # the partition did not stall
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
        await admin.start()
        try:
            offsets = await admin.list_consumer_group_offsets(f"{settings.topic_prefix}aichat-pipeline")
        finally:
            await admin.close()
        return any(tp.topic == topic and tp.partition == partition and m.offset > max(sent.values())
                   for tp, m in offsets.items())

    await eventually(committed_past_the_end, timeout_s=30, what="the indexer's commit past the poison")
    print("e:", " | ".join(d.message for d in letters))


# -- f. an outage longer than the backoff cap ------------------------------------------------

RETRY = re.compile(r"attempt (\d+), retrying in ([\d.]+)s")


def retries(process: Process) -> list[tuple[int, float]]:
    return [(int(m.group(1)), float(m.group(2))) for m in map(RETRY.search, messages(process)) if m]


async def test_f_elasticsearch_unreachable_longer_than_the_backoff_cap(system: RunningSystem) -> None:
    """The shipper's path to Elasticsearch (the proxy) goes away: connection refused."""
    cap = 2.0
    settings = system.settings()
    async with Helper("es-proxy", system.logs, "--upstream", settings.elastic_url) as proxy:
        shipper = start_worker(system, "shipper", "shipper", {
            "AICHAT_ELASTIC_URL": proxy.url, "AICHAT_AGENT_RETRY_MAX_S": str(cap)})
        await shipper.ready()
        pid = shipper.pid
        docs = [doc(f"gone-{i}", f"Document {i}, published around an outage.") for i in range(20)]
        await publish(system, docs[:10])
        assert (report := await until_ok(lambda: check_event_log(settings, ["documents"]),
                                         timeout_s=60)).ok, report

        await proxy.stop()
        down_at = time.monotonic()
        try:
            await publish(system, docs[10:])
            await eventually(lambda: _at_the_cap(shipper, cap, 5), timeout_s=90,
                             what="five retries at the backoff cap")
            status, _ = await ready_json(f"{shipper.url}/health/live")
            assert status == 200 and shipper.alive and shipper.pid == pid
        finally:
            await proxy.start()
        back_at = time.monotonic()
        ends = await end_offsets(settings, SHIPPED_TOPICS)
        report = await until_ok(lambda: check_event_log(settings, SHIPPED_TOPICS, ends=ends),
                                timeout_s=120)
        caught_up = time.monotonic() - back_at
    assert report.ok, report
    assert report.per_topic["documents"] == 20
    assert shipper.alive and shipper.pid == pid, "the shipper restarted or died"
    seen = retries(shipper)
    assert max(delay for _, delay in seen) <= cap + 0.05, seen
    assert max(attempt for attempt, _ in seen) >= 6, seen
    assert not await dead_letters(settings)
    print(f"f: outage {back_at - down_at:.1f}s, {len(seen)} retries (longest "
          f"{max(d for _, d in seen)}s, attempt up to {max(a for a, _ in seen)}); caught up "
          f"{caught_up:.1f}s after Elasticsearch was reachable again; {report}")


async def _at_the_cap(process: Process, cap: float, n: int) -> bool:
    """``n`` attempts waited the full cap (less its jitter) before trying again."""
    return sum(1 for _, delay in retries(process) if delay >= cap * 0.8 - 0.05) >= n


async def test_f_weaviate_down_longer_than_the_backoff_cap(system: RunningSystem) -> None:
    cap = 2.0
    settings = system.settings()
    # each Weaviate call bounded (weaviate-client would otherwise sleep through its own retries)
    pipeline = start_worker(system, "pipeline", "pipeline", {"AICHAT_AGENT_RETRY_MAX_S": str(cap),
                                                             "AICHAT_WEAVIATE_TIMEOUT_S": "1"})
    await pipeline.ready()
    pid = pipeline.pid
    warm = [doc(f"warm-{i}", f"Document {i}, indexed before the outage.") for i in range(3)]
    await publish(system, warm)
    assert (report := await until_ok(lambda: check_index(settings, warm), timeout_s=90)).ok, report

    stack_settings = load_settings(StackSettings)
    outage = [doc(f"outage-{i}", f"Document {i}, published while Weaviate is down.") for i in range(20)]
    await asyncio.to_thread(stack.down, stack_settings, services=["weaviate"])
    down_at = time.monotonic()
    try:
        await publish(system, outage)
        paced = await _within(lambda: _at_the_cap(pipeline, cap, 3), timeout_s=30)
        status, _ = await ready_json(f"{pipeline.url}/health/live")
        assert status == 200 and pipeline.alive and pipeline.pid == pid
    finally:
        await asyncio.to_thread(stack.up, stack_settings, services=["weaviate"])
    back_at = time.monotonic()

    # what must hold anyway: no crash, nothing lost, caught up by itself
    report = await until_ok(lambda: check_index(settings, [*warm, *outage]), timeout_s=150)
    caught_up = time.monotonic() - back_at
    assert report.ok, report
    assert pipeline.alive and pipeline.pid == pid, "the worker restarted or died"
    assert sum("starting worker" in m for m in messages(pipeline)) == 1
    seen = retries(pipeline)
    print(f"f (Weaviate): outage {back_at - down_at:.1f}s, agent retries {seen}; caught up "
          f"{caught_up:.1f}s after Weaviate was back; {report}")
    if not paced:
        raise AssertionError(f"{len(seen)} agent attempts in a {back_at - down_at:.0f}s outage with a "
                            f"{cap:g}s cap: {seen}")


async def _within(probe: Callable[[], Awaitable[bool]], *, timeout_s: float) -> bool:
    """Whether ``probe`` turned true within ``timeout_s`` (no assertion: the caller decides)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await probe():
            return True
        await asyncio.sleep(0.5)
    return False
