"""Query latency through the whole streaming path, beside an in-process baseline.

    .venv/bin/python -m bench.ingest --keep-as scifact     # the SciFact index, once
    .venv/bin/python -m bench.query [--clients 10 50 200] [--seconds 30] [--think 1.0]

N chat users, each with one authenticated websocket to the gateway, ask SciFact test
queries one after another with a think time between (their answer, then ``think``
seconds ± 50 %): time to first token and to ``done``, p50/p95/p99, answered queries/s.
Path: client → gateway → Kafka ``queries`` → answerer (embed, Weaviate hybrid
search, extractive generation) → Kafka ``answers`` → gateway → client.

The baseline runs the same retrieval and generation in this process, with the same
users and think times, without Kafka or the gateway: the difference is the cost of
the streaming hops. Results are merged into ``bench/results/query.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import secrets
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from websockets.asyncio.client import connect

from bench.common import RESULTS, WorkerGroup, free_port, machine_info, percentiles, print_table
from bench.eval import EVAL_ROOT, load_qrels, load_queries
from infra.up import Child, wait_ready
from query_gateway.dev_jwt import mint
from schemas.events import QueryEvent, ReplyRoute, utc_now
from streams.config import WorkerSettings, load_settings


@dataclass
class Samples:
    first_token_ms: list[float] = field(default_factory=list)
    done_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    answered: int = 0

    def summary(self, seconds: float) -> dict[str, Any]:
        ft, dn = percentiles(self.first_token_ms), percentiles(self.done_ms)
        return {"answered": self.answered, "errors": len(self.errors), "qps": round(self.answered / seconds, 2),
                "first_token_ms": ft, "done_ms": dn,
                "first_token_p95_ms": ft["p95"], "done_p95_ms": dn["p95"],
                "error_examples": sorted(set(self.errors))[:3]}


async def websocket_user(url: str, questions: list[str], stop_at: float, think: float,
                         samples: Samples, rng: random.Random) -> None:
    async with connect(url, max_size=None, open_timeout=30) as ws:
        n = 0
        while time.monotonic() < stop_at:
            n += 1
            qid = f"q{n}"
            sent = time.perf_counter()
            await ws.send(orjson.dumps({"type": "query", "id": qid, "text": rng.choice(questions), "top_k": 5}).decode())
            first: float | None = None
            while True:
                frame = orjson.loads(await asyncio.wait_for(ws.recv(), 60))
                if frame.get("id") != qid:
                    continue
                if frame["type"] == "token" and first is None:
                    first = (time.perf_counter() - sent) * 1000
                elif frame["type"] == "done":
                    samples.answered += 1
                    samples.first_token_ms.append(first if first is not None else (time.perf_counter() - sent) * 1000)
                    samples.done_ms.append((time.perf_counter() - sent) * 1000)
                    break
                elif frame["type"] == "error":
                    samples.errors.append(frame.get("code", "?"))
                    break
            await asyncio.sleep(think * rng.uniform(0.5, 1.5))


async def baseline_user(answer: Any, questions: list[str], stop_at: float, think: float,
                        samples: Samples, rng: random.Random) -> None:
    while time.monotonic() < stop_at:
        sent = time.perf_counter()
        first = await answer(rng.choice(questions), sent)
        samples.answered += 1
        samples.first_token_ms.append(first)
        samples.done_ms.append((time.perf_counter() - sent) * 1000)
        await asyncio.sleep(think * rng.uniform(0.5, 1.5))


async def run_users(n: int, seconds: float, user: Any) -> tuple[Samples, float]:
    samples = Samples()
    started = time.monotonic()
    stop_at = started + seconds
    await asyncio.gather(*(user(samples, random.Random(i), stop_at) for i in range(n)))
    return samples, time.monotonic() - started


async def in_process_answerer(settings: WorkerSettings) -> tuple[Any, Any]:
    """The answerer's retrieval and generation, without Kafka and the gateway."""
    from streams.embedding import create_embedder
    from streams.generation import ExtractiveGenerator
    from streams.retrieval import Retriever
    from streams.vectorstore import WeaviateStore

    embedder, store = create_embedder(settings), WeaviateStore(settings)
    await embedder.start()
    await store.start()
    retriever, generator = Retriever(embedder, store, settings), ExtractiveGenerator()
    route = ReplyRoute(topic="unused", partition=0)

    async def answer(text: str, sent: float) -> float:
        query = QueryEvent(text=text, top_k=5, reply_to=route, deadline=utc_now())
        found = await retriever.retrieve(query)
        first = None
        async for _ in generator.generate(text, found.passages):
            if first is None:
                first = (time.perf_counter() - sent) * 1000
        return first or (time.perf_counter() - sent) * 1000

    async def close() -> None:
        await store.stop()
        await embedder.stop()

    return answer, close


def test_questions(data: Path) -> list[str]:
    test = load_qrels(data / "qrels" / "test.tsv")
    return [text for qid, text in load_queries(data / "queries_all.jsonl").items() if qid in test]


def jwt_secret_file(tmp: Path) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "jwt.secret"
    path.write_text(secrets.token_urlsafe(48))
    return path


async def main_async(args: argparse.Namespace, questions: list[str], tmp: Path, secret_file: Path,
                     token: str) -> dict[str, Any]:
    base = load_settings(WorkerSettings)
    name = args.index
    gateway_port = free_port()
    env = {"AICHAT_TOPIC_PREFIX": f"{name}.", "AICHAT_WEAVIATE_COLLECTION": name.capitalize(),
           "AICHAT_LOG_FORMAT": "json", "AICHAT_LOG_LEVEL": "WARNING", "AICHAT_WORKER_DATA_DIR": str(tmp / "worker"),
           "AICHAT_GATEWAY_AUTH": "jwt", "AICHAT_JWT_ALGORITHM": "HS256",
           "AICHAT_JWT_SECRET_FILE": str(secret_file), "AICHAT_GATEWAY_PORT": str(gateway_port),
           "AICHAT_RATE_LIMIT_PER_MINUTE": "100000", "AICHAT_RATE_LIMIT_BURST": "10000",
           # the load clients share one address and one token: lift the per-client caps
           "AICHAT_MAX_CONNECTIONS_PER_CLIENT": "100000", "AICHAT_MAX_CONNECTIONS_PER_USER": "100000",
           "AICHAT_WORKER_HEALTH_URLS": "[]"}
    settings = base.model_copy(update={"topic_prefix": env["AICHAT_TOPIC_PREFIX"],
                                       "weaviate_collection": env["AICHAT_WEAVIATE_COLLECTION"]})
    results: dict[str, Any] = {"machine": machine_info(), "think_s": args.think, "seconds": args.seconds,
                               "concurrency": {}, "baseline": {}}
    workers = WorkerGroup("answer", 1, env, tmp / "logs")
    gateway = Child("gateway", [sys.executable, "-m", "streams.cli", "gateway"],
                    f"http://127.0.0.1:{gateway_port}/health/live", tmp / "logs" / "gateway.log")
    workers.start()
    gateway.start(env=workers.env)
    try:
        wait_ready(gateway, timeout_s=120)
        url = f"ws://127.0.0.1:{gateway_port}/ws?token={token}"
        for n in args.clients:
            samples, elapsed = await run_users(n, args.seconds, lambda s, rng, stop: websocket_user(
                url, questions, stop, args.think, s, rng))
            results["concurrency"][str(n)] = samples.summary(elapsed)
            print(f"gateway N={n}: {results['concurrency'][str(n)]}", flush=True)
    finally:
        gateway.stop()
        workers.stop()
    answer, close = await in_process_answerer(settings)
    try:
        for n in args.clients:
            samples, elapsed = await run_users(n, args.seconds, lambda s, rng, stop: baseline_user(
                answer, questions, stop, args.think, s, rng))
            results["baseline"][str(n)] = samples.summary(elapsed)
            print(f"in-process N={n}: {results['baseline'][str(n)]}", flush=True)
    finally:
        await close()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=(EVAL_ROOT / "scifact"))
    parser.add_argument("--index", default="scifact")
    parser.add_argument("--clients", type=int, nargs="+", default=[10, 50, 200])
    parser.add_argument("--seconds", type=float, default=30.0, help="per concurrency level")
    parser.add_argument("--think", type=float, default=1.0, help="mean think time between a user's queries")
    parser.add_argument("--out", type=Path, default=RESULTS / "query.json")
    args = parser.parse_args(argv)
    tmp = Path(f"/tmp/aichat-bench/{args.index}-query")
    secret_file = jwt_secret_file(tmp)
    token = mint(secret_file.read_text().strip(), user="bench", tenant="default", ttl_s=3600)
    result = asyncio.run(main_async(args, test_questions(args.data), tmp, secret_file, token))
    rows = []
    for n in args.clients:
        for label, key in (("gateway + Kafka", "concurrency"), ("in-process", "baseline")):
            r = result[key][str(n)]
            rows.append((n, label, r["answered"], r["qps"], r["first_token_ms"]["p50"], r["first_token_ms"]["p95"],
                         r["first_token_ms"]["p99"], r["done_ms"]["p50"], r["done_ms"]["p95"], r["done_ms"]["p99"],
                         r["errors"]))
    print_table(["N", "path", "answered", "q/s", "first p50", "first p95", "first p99",
                 "done p50", "done p95", "done p99", "errors"], rows)
    existing = orjson.loads(args.out.read_bytes()) if args.out.exists() else {}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(orjson.dumps({**existing, **result}, option=orjson.OPT_INDENT_2) + b"\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
