"""Open-model load through the whole system, the way Locust or k6 drive it, beside the in-process ceiling.

    .venv/bin/aichat stack up
    .venv/bin/python -m bench.load [--users 1000] [--rates 5 10 15 20 30 40 60 80 100] [--seconds 30]

``--users`` chat users each hold one authenticated websocket to a real gateway (each its
own JWT subject). Questions (SciFact test queries) arrive as one Poisson process at the
offered rate, each asked by a user drawn at random — so every user asks at Poisson
intervals of ``users / rate`` seconds on average (1,000 users at 60 q/s: one question
every ~17 s each), whether or not its last answer came back: an open model, so a slow
system meets more work, not less. Each user sends an application ``ping`` every
``--ping-s`` seconds, as the chat page does.

Behind the gateway: one ``answer`` worker and one ``shipper`` worker (every event of the
run still goes to Elasticsearch; checked at the end against the topics' end offsets),
on the kept SciFact index of the default configuration (collection ``Scifact400``,
built through the real pipeline by ``bench.eval`` when missing).

Per offered rate: questions answered per second, first-token and ``done`` p50/p95/p99,
errors, CPU seconds of every process (Kafka, Weaviate, Elasticsearch, the workers, the
gateway; from ``/proc``, process groups summed) per answered question, and the
gateway's RSS. Before the sweep, 60 s with no traffic measure each process's idle CPU.

**Capacity** is the highest offered rate answered with first-token p95 < 200 ms, done p95
< 300 ms and no errors. The **in-process ceiling** is the same retrieval and generation
(same embedder micro-batching, same Weaviate search, same generator) called in this
process at the same offered rates, with no Kafka and no gateway; its capacity by the same
rule. Results: ``bench/results/load.json`` (``capacity_qps``, ``capacity_ratio``,
``cpu_ms_per_query`` at the top level).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
from websockets.asyncio.client import ClientConnection, connect

from bench.common import (
    RESULTS,
    WorkerGroup,
    free_port,
    machine_info,
    percentiles,
    print_table,
    rss_mb,
)
from bench.eval import EVAL_ROOT, ensure_index, load_qrels, load_queries
from infra import catalogue, stack
from infra.cleanup import drop_isolated_state
from infra.config import StackSettings
from infra.kafka.topics import ensure_topics
from infra.proc import group_members
from infra.up import Child, wait_ready
from query_gateway.dev_jwt import mint
from schemas.events import QueryEvent, ReplyRoute, utc_now
from streams.config import WorkerSettings, load_settings

FIRST_TOKEN_GOAL_MS = 200.0
DONE_GOAL_MS = 300.0
INDEX = "scifact400"  # bench.eval's index of SciFact at the default configuration
CLK_TCK = os.sysconf("SC_CLK_TCK")
REPLY_WAIT_S = 15.0  # after a step, how long unanswered questions may still finish


# --- measuring --------------------------------------------------------------------------


@dataclass
class Asked:
    sent: float
    first: float | None = None
    done: float | None = None
    error: str | None = None


@dataclass
class Step:
    """The questions of one offered rate."""

    rate: float
    asked: list[Asked] = field(default_factory=list)
    started: float = 0.0
    ended: float = 0.0

    def summary(self) -> dict[str, Any]:
        answered = [a for a in self.asked if a.done is not None and a.error is None]
        errors = [a.error or "no_reply" for a in self.asked if a.error is not None or a.done is None]
        seconds = max(self.ended - self.started, 1e-9)
        first = [((a.first or a.done or a.sent) - a.sent) * 1000 for a in answered]
        done = [((a.done or a.sent) - a.sent) * 1000 for a in answered]

        return {
            "offered_qps": self.rate,
            "asked": len(self.asked),
            "achieved_offered_qps": round(len(self.asked) / seconds, 2),
            "answered": len(answered),
            "answered_qps": round(len(answered) / seconds, 2),
            "errors": len(errors),
            "error_examples": sorted(set(errors))[:3],
            "first_token_ms": percentiles(first),
            "done_ms": percentiles(done),
        }


def meets_goal(row: dict[str, Any]) -> bool:
    return (row["errors"] == 0 and row["answered"] > 0
            and row["first_token_ms"]["p95"] < FIRST_TOKEN_GOAL_MS and row["done_ms"]["p95"] < DONE_GOAL_MS)


def capacity(rows: Sequence[dict[str, Any]]) -> float:
    """The highest offered rate that met the goal (0 when none did)."""
    return max((r["offered_qps"] for r in rows if meets_goal(r)), default=0.0)


def cpu_seconds(pgid: int) -> float:
    """User + system CPU of every live process in the group (all their threads)."""
    total = 0
    for pid in group_members(pgid) or [pgid]:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15 of stat)
    return total / CLK_TCK


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class CpuMeter:
    """CPU seconds per named process group between two readings."""

    def __init__(self, groups: dict[str, int]) -> None:
        self.groups = groups
        self._last = self._read()

    def _read(self) -> dict[str, float]:
        return {name: cpu_seconds(pgid) for name, pgid in self.groups.items()}

    def lap(self) -> dict[str, float]:
        now = self._read()
        spent = {name: round(now[name] - self._last[name], 3) for name in now}
        self._last = now
        return spent


class EsWork:
    """What Elasticsearch did for the run's indices between two laps (``_stats``), to say why it costs CPU.

    ``internal_refreshes`` are the refreshes Elasticsearch ran on its own (a realtime get or
    an update of a document not yet searchable forces one), beside the scheduled ones.
    """

    SECTIONS = "refresh,indexing,get,merge"

    def __init__(self, settings: WorkerSettings) -> None:
        from streams.endpoints import elastic_http_options

        self.client = httpx.Client(**elastic_http_options(settings), timeout=30)
        self.pattern = f"{settings.elastic_index_prefix}-*"
        self.last = self._read()

    def _read(self) -> dict[str, float]:
        reply = self.client.get(f"/{self.pattern}/_stats/{self.SECTIONS}")
        total = reply.json().get("_all", {}).get("total", {}) if reply.status_code == 200 else {}
        refresh, indexing = total.get("refresh", {}), total.get("indexing", {})
        return {
            "docs_indexed": indexing.get("index_total", 0),
            "index_time_ms": indexing.get("index_time_in_millis", 0),
            "gets": total.get("get", {}).get("total", 0),
            "refreshes": refresh.get("total", 0),
            "internal_refreshes": refresh.get("total", 0) - refresh.get("external_total", 0),
            "refresh_time_ms": refresh.get("total_time_in_millis", 0),
            "merges": total.get("merge", {}).get("total", 0),
            "merge_time_ms": total.get("merge", {}).get("total_time_in_millis", 0),
        }

    def lap(self, answered: int) -> dict[str, float]:
        now = self._read()
        spent = {k: now[k] - self.last.get(k, 0) for k in now}
        self.last = now
        return {k: round(v / max(answered, 1), 2) for k, v in spent.items()}

    def close(self) -> None:
        self.client.close()


async def arrivals(rate: float, seconds: float, rng: random.Random,
                   ask: Callable[[], Awaitable[None]]) -> tuple[float, float]:
    """Call ``ask`` at Poisson times of ``rate`` per second for ``seconds`` (each its own task)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    at = started
    tasks: set[asyncio.Task[None]] = set()
    while True:
        at += rng.expovariate(rate)
        if at - started >= seconds:
            break
        delay = at - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(ask())
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks, timeout=REPLY_WAIT_S + 30)
    return started, started + seconds


# --- the users over websockets ----------------------------------------------------------


class User:
    """One connected chat user: one websocket, its own questions in flight by id."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.n = 0
        self.pending: dict[str, tuple[Asked, asyncio.Event]] = {}
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for raw in self.ws:
            frame = orjson.loads(raw)
            entry = self.pending.get(frame.get("id") or "")
            if entry is None:
                continue
            asked, finished = entry
            kind = frame.get("type")
            if kind == "token" and asked.first is None:
                asked.first = time.perf_counter()
            elif kind == "done":
                asked.done = time.perf_counter()
                finished.set()
            elif kind == "error":
                asked.error, asked.done = str(frame.get("code", "?")), time.perf_counter()
                finished.set()

    async def ask(self, text: str, step: Step) -> None:
        self.n += 1
        qid = f"q{self.n}"
        asked, finished = Asked(sent=time.perf_counter()), asyncio.Event()
        self.pending[qid] = (asked, finished)
        step.asked.append(asked)
        try:
            await self.ws.send(orjson.dumps({"type": "query", "id": qid, "text": text, "top_k": 5}).decode())
            await asyncio.wait_for(finished.wait(), REPLY_WAIT_S)
        except (TimeoutError, OSError) as exc:
            asked.error = asked.error or type(exc).__name__
        except Exception as exc:  # a closed connection: counted, the run goes on
            asked.error = asked.error or type(exc).__name__
        finally:
            self.pending.pop(qid, None)

    async def ping_every(self, seconds: float, rng: random.Random) -> None:
        await asyncio.sleep(rng.uniform(0, seconds))
        while True:
            await self.ws.send('{"type":"ping"}')
            await asyncio.sleep(seconds)


async def connect_users(url: str, secret: str, n: int, parallel: int = 50) -> list[User]:
    gate = asyncio.Semaphore(parallel)

    async def one(i: int) -> User:
        token = mint(secret, user=f"load-user-{i}", ttl_s=6 * 3600)
        async with gate:
            ws = await connect(f"{url}?token={token}", max_size=None, open_timeout=60, ping_interval=None)
        return User(ws)

    return list(await asyncio.gather(*(one(i) for i in range(n))))


# --- the run ----------------------------------------------------------------------------


def test_questions(data: Path) -> list[str]:
    test = load_qrels(data / "qrels" / "test.tsv")
    return [text for qid, text in load_queries(data / "queries_all.jsonl").items() if qid in test]


def stack_groups() -> dict[str, int]:
    return {s.name: s.pid for s in stack.status(StackSettings()) if s.pid is not None
            and s.name not in catalogue.OPTIONAL_SERVICES}


def print_rows(title: str, rows: list[dict[str, Any]], cpu: bool) -> None:
    print(f"\n{title}")
    headers = ["offered q/s", "answered q/s", "first p50", "first p95", "first p99", "done p95", "errors"]
    if cpu:
        headers += ["CPU ms/q (all)", "gateway RSS MB"]
    table = []
    for r in rows:
        row = [r["offered_qps"], r["answered_qps"], r["first_token_ms"]["p50"], r["first_token_ms"]["p95"],
               r["first_token_ms"]["p99"], r["done_ms"]["p95"], r["errors"]]
        if cpu:
            row += [r["cpu_ms_per_answered"], r["gateway_rss_mb"]]
        table.append(row)
    print_table(headers, table)


async def sweep_gateway(args: argparse.Namespace, questions: list[str], env: dict[str, str],
                        tmp: Path, secret: str) -> dict[str, Any]:
    gateway_port = free_port()
    env = {**env, "AICHAT_GATEWAY_PORT": str(gateway_port), "AICHAT_GATEWAY_OPS_PORT": str(free_port())}
    answer = WorkerGroup("answer", 1, env, tmp / "logs")
    shipper = WorkerGroup("shipper", 1, env, tmp / "logs")
    gateway = Child("gateway", [sys.executable, "-m", "streams.cli", "gateway"],
                    f"http://127.0.0.1:{gateway_port}/health/live", tmp / "logs" / "gateway.log")
    answer.start()
    shipper.start()
    gateway.start(env=answer.env)
    users: list[User] = []
    pingers: list[asyncio.Task[None]] = []
    try:
        wait_ready(gateway, timeout_s=120)
        assert gateway.proc is not None
        groups = {**stack_groups(),
                  "answer worker": answer.children[0].proc.pid,  # type: ignore[union-attr]
                  "shipper worker": shipper.children[0].proc.pid,  # type: ignore[union-attr]
                  "gateway": gateway.proc.pid}
        rng = random.Random(7)
        users = await connect_users(f"ws://127.0.0.1:{gateway_port}/ws", secret, args.users)
        pingers = [asyncio.create_task(u.ping_every(args.ping_s, random.Random(i))) for i, u in enumerate(users)]
        print(f"{len(users)} users connected; gateway RSS {rss_mb(gateway.proc.pid):.0f} MB", flush=True)

        meter = CpuMeter(groups)
        es_work = EsWork(load_settings(WorkerSettings, topic_prefix=env["AICHAT_TOPIC_PREFIX"],
                                       elastic_index_prefix=env["AICHAT_ELASTIC_INDEX_PREFIX"]))
        await asyncio.sleep(args.idle_seconds)
        idle = meter.lap()
        idle_share = {name: round(100 * s / args.idle_seconds, 2) for name, s in idle.items()}
        print(f"idle {args.idle_seconds:.0f} s, % of one core: {idle_share}", flush=True)

        # warm-up: the first questions pay one-off costs (connections, caches)
        warm = Step(rate=min(args.rates))
        await arrivals(warm.rate, 5.0, rng, lambda: rng.choice(users).ask(rng.choice(questions), warm))

        rows = []
        for rate in args.rates:
            step = Step(rate=rate)
            profilers = start_profiles(args, rate, {"gateway": gateway.proc.pid,
                                                    "answer": answer.children[0].proc.pid})  # type: ignore[union-attr]
            meter.lap()
            es_work.lap(1)
            client_cpu = own_cpu_seconds()
            step.started, step.ended = await arrivals(
                rate, args.seconds, rng, lambda s=step: rng.choice(users).ask(rng.choice(questions), s))
            spent = meter.lap()
            for proc in profilers:
                proc.wait(timeout=60)
            row = step.summary()
            answered = max(row["answered"], 1)
            row.update(cpu_s=spent, cpu_ms_per_answered=round(1000 * sum(spent.values()) / answered, 1),
                       cpu_ms_per_answered_by_process={k: round(1000 * v / answered, 2) for k, v in spent.items()},
                       load_generator_cpu_s=round(own_cpu_seconds() - client_cpu, 2),
                       gateway_rss_mb=round(rss_mb(gateway.proc.pid), 1), users=len(users),
                       elasticsearch_work_per_answered=es_work.lap(answered))
            rows.append(row)
            print(f"gateway {rate} q/s: answered {row['answered_qps']} q/s, first p95 "
                  f"{row['first_token_ms']['p95']} ms, done p95 {row['done_ms']['p95']} ms, errors "
                  f"{row['errors']} {row['error_examples']}, CPU {row['cpu_ms_per_answered']} ms/q; "
                  f"Elasticsearch per question {row['elasticsearch_work_per_answered']}", flush=True)
            if row["first_token_ms"]["p95"] > 10 * FIRST_TOKEN_GOAL_MS and rate != args.rates[-1]:
                print("far past saturation: the higher rates are left out", flush=True)
                break
        es_work.close()
        shipped = await shipped_everything(env, timeout_s=120)
        return {"rows": rows, "idle_cpu_pct_of_core": idle_share, "elasticsearch": shipped,
                "worker_rss_mb": {"answer": answer.peak_rss_mb()[0], "shipper": shipper.peak_rss_mb()[0]}}
    finally:
        for task in pingers:
            task.cancel()
        for user in users:
            user.reader.cancel()
        await asyncio.gather(*(u.ws.close() for u in users), return_exceptions=True)
        gateway.stop()
        shipper.stop()
        answer.stop()


def start_profiles(args: argparse.Namespace, rate: float, pids: dict[str, int]) -> list[subprocess.Popen[bytes]]:
    """py-spy (when installed: ``pip install py-spy``, not a dependency) samples the gateway and
    the answer worker during the step at ``--profile-at``; raw collapsed stacks under ``--profile-dir``."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if args.profile_at != rate or not Path(spy).exists():
        return []
    args.profile_dir.mkdir(parents=True, exist_ok=True)
    return [subprocess.Popen([spy, "record", "--nonblocking", "--format", "raw", "--rate", "200",  # noqa: S603
                              "--duration", str(int(args.seconds)), "--pid", str(pid),
                              "--output", str(args.profile_dir / f"{name}-{rate:g}qps.txt")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for name, pid in pids.items()]


def top_frames(collapsed: Path, n: int = 15) -> list[tuple[str, float, float]]:
    """(function, self share, inclusive share) of the most sampled frames of a py-spy raw file."""
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in collapsed.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames, samples = stack.split(";"), int(count)
        total += samples
        own[frames[-1]] = own.get(frames[-1], 0) + samples
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + samples
    top = sorted(own, key=lambda f: -own[f])[:n]
    return [(f, round(own[f] / total, 3), round(inclusive[f] / total, 3)) for f in top] if total else []


async def shipped_everything(env: dict[str, str], timeout_s: float) -> dict[str, Any]:
    """Every record of the run's topics is a document in Elasticsearch (``_id`` = topic-partition-offset)."""
    from aiokafka import AIOKafkaConsumer

    settings = load_settings(WorkerSettings, topic_prefix=env["AICHAT_TOPIC_PREFIX"],
                             elastic_index_prefix=env["AICHAT_ELASTIC_INDEX_PREFIX"])
    from streams.agents.shipper import SHIPPED_TOPICS
    from streams.endpoints import elastic_http_options

    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None)
    await consumer.start()
    try:
        names = [settings.topic(t) for t in SHIPPED_TOPICS]
        parts = [tp for name in names for tp in
                 (await _partitions(consumer, name))]
        ends = await consumer.end_offsets(parts)
        expected = sum(ends.values())
    finally:
        await consumer.stop()
    prefix = settings.elastic_index_prefix
    deadline = time.monotonic() + timeout_s
    found = -1
    async with httpx.AsyncClient(**elastic_http_options(settings), timeout=30) as es:
        while time.monotonic() < deadline:
            await es.post(f"/{prefix}-*/_refresh")
            total = (await es.get(f"/{prefix}-*/_count")).json().get("count", 0)
            summaries = (await es.get(f"/{prefix}-summaries*/_count")).json().get("count", 0)
            found = int(total) - int(summaries)
            if found >= expected:
                break
            await asyncio.sleep(2)
    return {"records_in_topics": expected, "documents_in_elasticsearch": found, "all_shipped": found == expected}


async def _partitions(consumer: Any, topic: str) -> list[Any]:
    from aiokafka import TopicPartition

    parts = consumer.partitions_for_topic(topic)
    if parts is None:
        await consumer._client.force_metadata_update()  # a topic this client has not seen yet
        parts = consumer.partitions_for_topic(topic) or set()
    return [TopicPartition(topic, p) for p in sorted(parts)]


async def sweep_in_process(args: argparse.Namespace, questions: list[str], settings: WorkerSettings) -> list[dict[str, Any]]:
    """The answerer's work (embed with micro-batching, hybrid search, generate) in this process."""
    from streams.embedding import create_embedder
    from streams.generation import ExtractiveGenerator
    from streams.models import answer_min_similarity
    from streams.retrieval import Retriever
    from streams.vectorstore import WeaviateStore

    embedder, store = create_embedder(settings), WeaviateStore(settings)  # the answerer's backend
    await embedder.start()
    await store.start()
    retriever = Retriever(embedder, store, settings)
    threshold = settings.answer_min_similarity
    generator = ExtractiveGenerator(min_similarity=answer_min_similarity(settings.embed_model)
                                    if threshold is None else threshold)
    route = ReplyRoute(topic="unused", partition=0)
    gate = asyncio.Semaphore(settings.answer_concurrency)  # the answerer's own limit

    async def answer(text: str, step: Step) -> None:
        asked = Asked(sent=time.perf_counter())
        step.asked.append(asked)
        async with gate:
            try:
                query = QueryEvent(text=text, top_k=5, reply_to=route, deadline=utc_now())
                found = await retriever.retrieve(query)
                async for _ in generator.generate(text, found.passages):
                    if asked.first is None:
                        asked.first = time.perf_counter()
            except Exception as exc:  # counted like the gateway path's errors
                asked.error = type(exc).__name__
            asked.done = time.perf_counter()

    rng = random.Random(11)
    rows = []
    try:
        warm = Step(rate=min(args.rates))
        await arrivals(warm.rate, 5.0, rng, lambda: answer(rng.choice(questions), warm))
        for rate in args.rates:
            step = Step(rate=rate)
            cpu = own_cpu_seconds()
            step.started, step.ended = await arrivals(rate, args.seconds, rng,
                                                      lambda s=step: answer(rng.choice(questions), s))
            row = step.summary()
            row["process_cpu_ms_per_answered"] = round(1000 * (own_cpu_seconds() - cpu) / max(row["answered"], 1), 1)
            rows.append(row)
            print(f"in-process {rate} q/s: answered {row['answered_qps']} q/s, first p95 "
                  f"{row['first_token_ms']['p95']} ms, errors {row['errors']}", flush=True)
            if row["first_token_ms"]["p95"] > 10 * FIRST_TOKEN_GOAL_MS and rate != args.rates[-1]:
                break
    finally:
        await store.stop()
        await embedder.stop()
    return rows


async def main_async(args: argparse.Namespace, questions: list[str], tmp: Path) -> dict[str, Any]:
    base = load_settings(WorkerSettings)
    # the kept index, built through the real pipeline when missing (bench.eval's)
    index_env = {"AICHAT_TOPIC_PREFIX": f"{INDEX}.", "AICHAT_WEAVIATE_COLLECTION": INDEX.capitalize(),
                 "AICHAT_ELASTIC_INDEX_PREFIX": f"bench-{INDEX}", "AICHAT_LOG_FORMAT": "json",
                 "AICHAT_WORKER_DATA_DIR": str(tmp / "ingest")}
    index_settings = base.model_copy(update={"topic_prefix": index_env["AICHAT_TOPIC_PREFIX"],
                                             "weaviate_collection": index_env["AICHAT_WEAVIATE_COLLECTION"],
                                             "elastic_index_prefix": index_env["AICHAT_ELASTIC_INDEX_PREFIX"]})
    await ensure_topics(index_settings)
    index = await ensure_index(args.data, INDEX, index_env, index_settings, tmp / "logs", reingest=False)
    print(f"index {index_settings.weaviate_collection}: {index}", flush=True)

    run = f"load{uuid.uuid4().hex[:8]}"
    secret = secrets_token()
    secret_file = tmp / "jwt.secret"
    secret_file.write_text(secret)
    env = {"AICHAT_TOPIC_PREFIX": f"{run}.", "AICHAT_WEAVIATE_COLLECTION": INDEX.capitalize(),
           "AICHAT_ELASTIC_INDEX_PREFIX": f"bench-{run}", "AICHAT_LOG_FORMAT": "json",
           "AICHAT_LOG_LEVEL": "WARNING", "AICHAT_WORKER_DATA_DIR": str(tmp / "worker"),
           "AICHAT_GATEWAY_AUTH": "jwt", "AICHAT_JWT_ALGORITHM": "HS256", "AICHAT_JWT_SECRET_FILE": str(secret_file),
           # every user comes from this one loopback address: the per-address cap is lifted,
           # the per-user limits (8 sockets, 60 questions a minute) stay as shipped
           "AICHAT_MAX_CONNECTIONS_PER_CLIENT": str(args.users + 100),
           "AICHAT_WORKER_HEALTH_URLS": "[]"}
    run_settings = base.model_copy(update={"topic_prefix": env["AICHAT_TOPIC_PREFIX"],
                                           "elastic_index_prefix": env["AICHAT_ELASTIC_INDEX_PREFIX"],
                                           "weaviate_collection": INDEX.capitalize()})
    await ensure_topics(run_settings)
    try:
        gateway = await sweep_gateway(args, questions, env, tmp, secret)
    finally:
        # the run's topics and indices; the kept collection stays (drop only leaves "Chunk" alone)
        await drop_isolated_state(run_settings.model_copy(update={"weaviate_collection": "Chunk"}))
    ceiling = await sweep_in_process(args, questions, index_settings)
    print_rows(f"gateway path, {args.users} connected users, shipper on", gateway["rows"], cpu=True)
    print_rows("in-process ceiling (no Kafka, no gateway)", ceiling, cpu=False)
    cap, top = capacity(gateway["rows"]), capacity(ceiling)
    by_rate = {r["offered_qps"]: r for r in gateway["rows"]}
    at = by_rate.get(cap) or (gateway["rows"][0] if gateway["rows"] else {})
    named = by_rate.get(60.0) or by_rate.get(60)
    result = {
        "capacity_qps": cap,
        "in_process_capacity_qps": top,
        "capacity_ratio": round(cap / top, 3) if top else None,
        "cpu_ms_per_query": at.get("cpu_ms_per_answered"),
        "cpu_ms_per_query_at_qps": at.get("offered_qps"),
        "users": args.users,
        "named_row_1000_users_60_qps": named if args.users >= 1000 else None,
        "idle_cpu_pct_of_core": gateway["idle_cpu_pct_of_core"],
        "elasticsearch": gateway["elasticsearch"],
        "worker_rss_mb": gateway["worker_rss_mb"],
        "goal": {"first_token_p95_ms": FIRST_TOKEN_GOAL_MS, "done_p95_ms": DONE_GOAL_MS, "errors": 0},
        "embed_backend": base.embed_backend,
        "embed_model": base.embed_model,
        "seconds_per_rate": args.seconds,
        "gateway": gateway["rows"],
        "in_process": ceiling,
        "machine": machine_info(),
    }
    print(f"\ncapacity {cap} q/s (in-process ceiling {top} q/s, ratio {result['capacity_ratio']}), "
          f"CPU {result['cpu_ms_per_query']} ms per answered question at {result['cpu_ms_per_query_at_qps']} q/s; "
          f"Elasticsearch: {gateway['elasticsearch']}")
    return result


def secrets_token() -> str:
    import secrets

    return secrets.token_urlsafe(48)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=EVAL_ROOT / "scifact")
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--rates", type=float, nargs="+", default=[5, 10, 15, 20, 30, 40, 60, 80, 100])
    parser.add_argument("--seconds", type=float, default=30.0, help="per offered rate")
    parser.add_argument("--idle-seconds", type=float, default=60.0, help="no traffic, before the sweep")
    parser.add_argument("--ping-s", type=float, default=30.0, help="each user's application ping interval")
    parser.add_argument("--profile-at", type=float, default=None, help="py-spy the gateway and answerer at this rate")
    parser.add_argument("--profile-dir", type=Path, default=Path("/tmp/aichat-bench/load-profile"))
    parser.add_argument("--out", type=Path, default=RESULTS / "load.json")
    args = parser.parse_args(argv)
    args.rates = sorted(args.rates)
    questions = test_questions(args.data)
    tmp = Path(f"/tmp/aichat-bench/load-{uuid.uuid4().hex[:8]}")
    tmp.mkdir(parents=True, exist_ok=True)
    result = asyncio.run(main_async(args, questions, tmp))
    if args.profile_at is not None:
        result["profile"] = {}
        for path in sorted(args.profile_dir.glob(f"*-{args.profile_at:g}qps.txt")):
            frames = top_frames(path)
            result["profile"][path.stem] = [{"frame": f, "self": s, "inclusive": i} for f, s, i in frames]
            print(f"\nprofile {path.stem} (share of samples: self, inclusive)")
            print_table(["frame", "self", "incl."], [(f[:110], s, i) for f, s, i in frames])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
