"""Answer latency while SciFact is ingested at full speed: separate roles vs one pipeline worker.

    .venv/bin/aichat stack up
    flock /tmp/aichat-bench.lock .venv/bin/python -m bench.ingest_contention \\
        [--configs idle pipeline split-nice0 split-nice10] [--seconds 90] [--rate 10]

Per configuration, on a fresh topic prefix and collection of its own (dropped afterwards);
``idle`` is the baseline (answer + ingest workers, 300 abstracts indexed first, nothing
ingested during the load):

1. the workers the way ``aichat up`` starts them (``answer`` + ``ingest``; the ingest
   worker at ``AICHAT_INGEST_NICE`` 0 or 10, optionally one torch thread) or, for
   comparison, the old single ``pipeline`` worker, and a gateway;
2. the whole SciFact corpus (5,183 abstracts) is published at once, a full-speed ingest
   that lasts far longer than the run;
3. once the first ``--warm-chunks`` chunks are searchable, ``--rate`` questions/s
   (Poisson arrivals, SciFact test questions) go over authenticated websockets for
   ``--seconds``. They query the collection being filled: the answer side has content,
   and no collection of anyone else's is touched (``Scifact400`` cannot be the target:
   the single pipeline worker would write into it).

Reported per configuration: first token and done p50/p95/p99 (ms, from the query frame),
answered, errors by code (``deadline_exceeded`` among them), and the chunks indexed per
second during the load. Results are merged into ``bench/results/ingest_contention.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import signal
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
from websockets.asyncio.client import ClientConnection, connect

from bench.common import (
    RESULTS,
    WorkerGroup,
    drop_state,
    free_port,
    machine_info,
    percentiles,
    print_table,
)
from bench.eval import EVAL_ROOT
from bench.ingest import load_corpus
from bench.query import jwt_secret_file, test_questions
from infra.up import Child, wait_ready
from ingest.sdk import DocumentPublisher
from query_gateway.dev_jwt import mint
from streams.config import WorkerSettings, load_settings
from streams.vectorstore import WeaviateStore

#: name → the worker roles and the extra environment of the ingesting one
CONFIGS: dict[str, tuple[tuple[str, ...], dict[str, str]]] = {
    "idle": (("answer", "ingest"), {}),  # the baseline: IDLE_DOCS indexed first, no ingest during the load
    "pipeline": (("pipeline",), {}),
    "split-nice0": (("answer", "ingest"), {"AICHAT_INGEST_NICE": "0"}),
    "split-nice10": (("answer", "ingest"), {"AICHAT_INGEST_NICE": "10"}),
    "split-nice10-1thread": (("answer", "ingest"), {"AICHAT_INGEST_NICE": "10", "AICHAT_EMBED_THREADS": "1"}),
}
IDLE_DOCS = 300
CONNECTIONS = 16  # the gateway allows 4 queries in flight per connection


@dataclass
class Load:
    first_token_ms: list[float] = field(default_factory=list)
    done_ms: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    sent: int = 0

    def summary(self) -> dict[str, Any]:
        return {"sent": self.sent, "answered": len(self.done_ms), "errors": sum(self.errors.values()),
                "errors_by_code": dict(self.errors), "first_token_ms": percentiles(self.first_token_ms),
                "done_ms": percentiles(self.done_ms)}


class Connection:
    """One websocket; frames are routed to the query they belong to."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.waiting: dict[str, asyncio.Queue[dict[str, Any]]] = {}
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(Exception):
            async for raw in self.ws:
                frame = orjson.loads(raw)
                queue = self.waiting.get(str(frame.get("id")))
                if queue is not None:
                    queue.put_nowait(frame)

    async def ask(self, qid: str, text: str, load: Load) -> None:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.waiting[qid] = queue
        sent = time.perf_counter()
        first: float | None = None
        try:
            await self.ws.send(orjson.dumps({"type": "query", "id": qid, "text": text, "top_k": 5}).decode())
            while True:
                frame = await asyncio.wait_for(queue.get(), 60)
                if frame["type"] == "token" and first is None:
                    first = (time.perf_counter() - sent) * 1000
                elif frame["type"] == "done":
                    done = (time.perf_counter() - sent) * 1000
                    load.first_token_ms.append(first if first is not None else done)
                    load.done_ms.append(done)
                    return
                elif frame["type"] == "error":
                    load.errors[str(frame.get("code", "?"))] += 1
                    return
        except TimeoutError:
            load.errors["client_timeout"] += 1
        finally:
            self.waiting.pop(qid, None)


async def drive(url: str, questions: list[str], rate: float, seconds: float, seed: int = 7) -> Load:
    """Poisson arrivals at ``rate``/s for ``seconds``, spread over :data:`CONNECTIONS` sockets."""
    rng = random.Random(seed)
    load = Load()
    sockets = [await connect(url, max_size=None, open_timeout=30) for _ in range(CONNECTIONS)]
    conns = [Connection(ws) for ws in sockets]
    tasks: list[asyncio.Task[None]] = []
    try:
        next_at = time.monotonic()
        stop_at = next_at + seconds
        while next_at < stop_at:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            conn = min(conns, key=lambda c: len(c.waiting))
            load.sent += 1
            tasks.append(asyncio.create_task(conn.ask(f"q{load.sent}", rng.choice(questions), load)))
            next_at += rng.expovariate(rate)
        await asyncio.gather(*tasks)
    finally:
        for conn in conns:
            await conn.ws.close()
            conn.reader.cancel()
    return load


async def searchable(settings: WorkerSettings) -> int:
    store = WeaviateStore(settings)
    await store.start()
    try:
        return await store.count()
    except Exception:  # the collection is created by the first indexed batch
        return 0
    finally:
        await store.stop()


async def warm_up(settings: WorkerSettings, chunks: int, drained: WorkerGroup | None) -> int:
    """Wait (at most 240 s) until ``chunks`` are searchable or, with ``drained``, until that
    worker reports no backlog left (its /health/ready); returns the chunks searchable."""
    deadline = time.monotonic() + 240
    async with httpx.AsyncClient(timeout=5) as http:
        while time.monotonic() < deadline:
            count = await searchable(settings)
            if drained is None and count >= chunks:
                return count
            if drained is not None:
                body = (await http.get(drained.children[0].health_url)).json()
                backlog = body.get("backlog") or {}
                if count and backlog.get("measured_s_ago", 99) < 5 and not body.get("busy", True):
                    return count
            await asyncio.sleep(1)
    return await searchable(settings)


async def run_config(name: str, args: argparse.Namespace, questions: list[str], tmp: Path) -> dict[str, Any]:
    roles, extra = CONFIGS[name]
    unique = uuid.uuid4().hex[:8]
    secret_file = jwt_secret_file(tmp)
    token = mint(secret_file.read_text().strip(), user="bench", tenant="default", ttl_s=3600)
    gateway_port = free_port()
    env = {"AICHAT_TOPIC_PREFIX": f"bc{unique}.", "AICHAT_WEAVIATE_COLLECTION": f"Bc{unique}",
           "AICHAT_ELASTIC_INDEX_PREFIX": f"bc{unique}", "AICHAT_LOG_FORMAT": "json",
           "AICHAT_LOG_LEVEL": "WARNING", "AICHAT_WORKER_DATA_DIR": str(tmp / unique / "worker"),
           "AICHAT_GATEWAY_AUTH": "jwt", "AICHAT_JWT_ALGORITHM": "HS256",
           "AICHAT_JWT_SECRET_FILE": str(secret_file), "AICHAT_GATEWAY_PORT": str(gateway_port),
           "AICHAT_GATEWAY_OPS_PORT": str(free_port()),
           "AICHAT_RATE_LIMIT_PER_MINUTE": "100000", "AICHAT_RATE_LIMIT_BURST": "10000",
           "AICHAT_MAX_CONNECTIONS_PER_CLIENT": "100000", "AICHAT_MAX_CONNECTIONS_PER_USER": "100000",
           "AICHAT_WORKER_HEALTH_URLS": "[]"}
    settings = load_settings(WorkerSettings).model_copy(update={
        "topic_prefix": env["AICHAT_TOPIC_PREFIX"], "weaviate_collection": env["AICHAT_WEAVIATE_COLLECTION"],
        "elastic_index_prefix": env["AICHAT_ELASTIC_INDEX_PREFIX"]})
    logs = tmp / unique / "logs"
    # the answer worker runs at the default niceness; only the ingesting one gets `extra`
    groups = [WorkerGroup(role, 1, {**env, **(extra if role == "ingest" else {})}, logs) for role in roles]
    gateway = Child("gateway", [sys.executable, "-m", "streams.cli", "gateway"],
                    f"http://127.0.0.1:{gateway_port}/health/live", logs / "gateway.log")
    try:
        for group in groups:
            group.start()
        gateway.start(env=groups[0].env)
        wait_ready(gateway, timeout_s=120)
        docs = load_corpus(args.corpus, IDLE_DOCS if name == "idle" else args.limit)
        print(f"{name}: workers and gateway ready; publishing {len(docs)} documents", flush=True)
        async with DocumentPublisher(settings) as publisher:
            async for delivery in publisher.publish_many(docs, window=512):
                if not delivery.ok:
                    raise RuntimeError(f"publish failed: {delivery.error}")
        before = await warm_up(settings, args.warm_chunks, groups[-1] if name == "idle" else None)
        print(f"{name}: {before} chunks searchable; {args.rate:g} questions/s for {args.seconds:g} s",
              flush=True)
        started = time.monotonic()
        load = await drive(f"ws://127.0.0.1:{gateway_port}/ws?token={token}", questions, args.rate, args.seconds)
        elapsed = time.monotonic() - started
        after = await searchable(settings)
        result = {"roles": list(roles), "ingest_env": extra, "seconds": round(elapsed, 1),
                  "rate_qps": args.rate, **load.summary(),
                  "ingest_chunks_per_s": round((after - before) / elapsed, 1),
                  "chunks_before_load": before, "peak_rss_mb": [g.peak_rss_mb()[0] for g in groups]}
        print(f"{name}: {result}", flush=True)
        return result
    finally:
        gateway.stop()
        for group in reversed(groups):
            group.stop()
        await drop_state(settings)


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=EVAL_ROOT / "scifact" / "corpus.jsonl")
    parser.add_argument("--limit", type=int, default=None, help="documents of the corpus (default: all)")
    parser.add_argument("--configs", nargs="+", choices=sorted(CONFIGS),
                        default=["idle", "pipeline", "split-nice0", "split-nice10"])
    parser.add_argument("--seconds", type=float, default=90.0, help="seconds of question load")
    parser.add_argument("--rate", type=float, default=10.0, help="questions per second (Poisson)")
    parser.add_argument("--warm-chunks", type=int, default=100,
                        help="chunks searchable before the load starts (at most 240 s of waiting)")
    parser.add_argument("--out", type=Path, default=RESULTS / "ingest_contention.json")
    args = parser.parse_args(argv)
    # `timeout` (or Ctrl-C) must still stop the workers and drop this run's topics and collection
    signal.signal(signal.SIGTERM, _interrupt)
    tmp = Path("/tmp/aichat-bench/ingest-contention")
    questions = test_questions(EVAL_ROOT / "scifact")
    merged: dict[str, Any] = {}
    for name in args.configs:  # saved after each configuration: a run cut short keeps the others
        run = asyncio.run(run_config(name, args, questions, tmp))
        existing = orjson.loads(args.out.read_bytes()) if args.out.exists() else {}
        merged = {**existing.get("configs", {}), name: run}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        out = {"machine": machine_info(), "corpus": str(args.corpus), "configs": merged}
        args.out.write_bytes(orjson.dumps(out, option=orjson.OPT_INDENT_2) + b"\n")
    rows = [(name, "+".join(r["roles"]), r["ingest_env"].get("AICHAT_INGEST_NICE", "-"), r["answered"],
             r["first_token_ms"]["p50"], r["first_token_ms"]["p95"], r["first_token_ms"]["p99"],
             r["done_ms"]["p95"], r["errors"], r["errors_by_code"].get("deadline_exceeded", 0),
             r["ingest_chunks_per_s"]) for name, r in merged.items()]
    print_table(["config", "workers", "nice", "answered", "first p50", "first p95", "first p99",
                 "done p95", "errors", "deadline", "ingest chunks/s"], rows)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
