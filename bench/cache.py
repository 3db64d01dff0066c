"""Answer cache: time to first token of a hit against a miss, through the real gateway.

    .venv/bin/python -m bench.cache [--asks 400] [--zipf 1.1]

One ``pipeline`` worker and one gateway (isolated topics, collection and cache keys) on
the stack's Kafka, Weaviate and Redis, with the bundled sample corpus (``ingest/sample/``,
English and Korean). One websocket user asks a stream of questions drawn by a Zipf law from
a pool (16 questions × top_k 1–5 = 80 cache keys), each written with random case and
spacing (the key normalises them away), one after the other: client-measured time to the
first ``token`` frame and to ``done``, p50/p95, split by ``done.cached``, with the hit rate
and the answerer's own first-token time. Halfway, one cited document gets a new version:
the misses that follow are its invalidation. Results: ``bench/results/cache.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis
from websockets.asyncio.client import connect

from bench.common import (
    RESULTS,
    WorkerGroup,
    drop_state,
    free_port,
    machine_info,
    percentiles,
    print_table,
    save_result,
)
from bench.query import jwt_secret_file
from infra import stack
from infra.config import StackSettings
from infra.redis.launcher import DEFAULT_PORT
from infra.up import Child, wait_ready
from ingest.sdk import DocumentPublisher
from query_gateway.dev_jwt import mint
from schemas.events import DocumentEvent
from streams.config import WorkerSettings, load_settings

SAMPLE = Path(__file__).resolve().parents[1] / "ingest" / "sample"
REDIS_URL = f"redis://127.0.0.1:{DEFAULT_PORT}/0"
QUESTIONS = [
    "How many vacation days do employees get?", "Can unused vacation days be carried over?",
    "How fast must the on-call engineer acknowledge a page?", "Who gets paged after the secondary?",
    "How much are meals covered during business travel?", "When must receipts be submitted?",
    "Which class is booked for short flights?", "How is an on-call week compensated?",
    "원격 근무는 일주일에 며칠 가능한가요?", "핵심 협업 시간은 언제인가요?",
    "비밀번호는 얼마나 자주 바꿔야 하나요?", "노트북을 잃어버리면 어디에 신고하나요?",
    "배우자 출산 휴가는 며칠인가요?", "육아 휴직은 언제까지 신청해야 하나요?",
    "교육비는 연간 얼마까지 지원되나요?", "도서 구입비는 얼마까지 지원되나요?",
]


def spelled(text: str, rng: random.Random) -> str:
    """The same question as a user might type it: case and spacing changed at random."""
    words = [w.upper() if rng.random() < 0.2 else w for w in text.split()]
    return (" " * rng.randint(0, 2)) + ("  " if rng.random() < 0.3 else " ").join(words)


async def ask(ws: Any, n: int, text: str, top_k: int) -> dict[str, Any]:
    qid = f"q{n}"
    sent = time.perf_counter()
    await ws.send(orjson.dumps({"type": "query", "id": qid, "text": text, "top_k": top_k}).decode())
    first, docs = None, []
    while True:
        frame = orjson.loads(await asyncio.wait_for(ws.recv(), 30))
        if frame.get("id") != qid:
            continue
        if frame["type"] == "sources":
            docs = [s["doc_id"] for s in frame["sources"]]
        if frame["type"] == "token" and first is None:
            first = (time.perf_counter() - sent) * 1000
        if frame["type"] in ("done", "error"):
            done = (time.perf_counter() - sent) * 1000
            return {"type": frame["type"], "cached": bool(frame.get("cached")), "docs": docs,
                    "first_ms": first or done,
                    "done_ms": done, "answerer_first_ms": frame.get("timings_ms", {}).get("first_token")}


async def publish_sample(settings: WorkerSettings, version: int = 1) -> None:
    async with DocumentPublisher(settings) as publisher:
        for path in sorted(SAMPLE.glob("*.md")):
            await publisher.publish(DocumentEvent(doc_id=path.name, version=version, title=path.stem,
                                                  text=path.read_text(encoding="utf-8")))


async def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    unique = uuid.uuid4().hex[:8]
    secret = jwt_secret_file(tmp)
    gateway_port = free_port()
    env = {"AICHAT_TOPIC_PREFIX": f"bc{unique}.", "AICHAT_WEAVIATE_COLLECTION": f"Bc{unique}",
           "AICHAT_ELASTIC_INDEX_PREFIX": f"bc{unique}", "AICHAT_TOPIC_PARTITIONS": "2",
           "AICHAT_LOG_FORMAT": "json", "AICHAT_LOG_LEVEL": "WARNING",
           "AICHAT_WORKER_DATA_DIR": str(tmp / "worker"), "AICHAT_GATEWAY_AUTH": "jwt",
           "AICHAT_JWT_ALGORITHM": "HS256", "AICHAT_JWT_SECRET_FILE": str(secret),
           "AICHAT_GATEWAY_PORT": str(gateway_port), "AICHAT_GATEWAY_OPS_PORT": str(free_port()),
           "AICHAT_RATE_LIMIT_PER_MINUTE": "100000", "AICHAT_RATE_LIMIT_BURST": "10000",
           "AICHAT_WORKER_HEALTH_URLS": "[]", "AICHAT_REDIS_URL": REDIS_URL,
           "AICHAT_REDIS_KEY_PREFIX": f"bc{unique}:", "AICHAT_ANSWER_CACHE_KEY_PREFIX": f"bc{unique}:"}
    settings = load_settings(WorkerSettings, topic_prefix=env["AICHAT_TOPIC_PREFIX"],
                             weaviate_collection=env["AICHAT_WEAVIATE_COLLECTION"],
                             elastic_index_prefix=env["AICHAT_ELASTIC_INDEX_PREFIX"])
    stack.up(load_settings(StackSettings), services=["redis"])
    workers = WorkerGroup("pipeline", 1, env, tmp / "logs")
    gateway = Child("gateway", [sys.executable, "-m", "streams.cli", "gateway"],
                    f"http://127.0.0.1:{gateway_port}/health/live", tmp / "logs" / "gateway.log")
    rng = random.Random(7)
    keys = [(q, k) for q in QUESTIONS for k in range(1, 6)]
    rng.shuffle(keys)
    weights = [1 / (i + 1) ** args.zipf for i in range(len(keys))]
    samples: list[dict[str, Any]] = []
    try:
        workers.start()
        gateway.start(env=workers.env)
        wait_ready(gateway, timeout_s=120)
        await publish_sample(settings)
        token = mint(secret.read_text().strip(), user="bench", tenant="default", ttl_s=3600)
        async with connect(f"ws://127.0.0.1:{gateway_port}/ws?token={token}", max_size=None) as ws:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:  # the sample searchable: the last file answers
                probe = await ask(ws, 0, f"probe {uuid.uuid4().hex}: {QUESTIONS[-1]}", 5)
                if "training-ko.md" in probe["docs"]:
                    break
            await asyncio.sleep(3)
            for n in range(1, args.asks + 1):
                if n == args.asks // 2:
                    await publish_sample(settings, version=2)  # every document: a new version
                    await asyncio.sleep(2)
                text, top_k = rng.choices(keys, weights)[0]
                samples.append({**await ask(ws, n, spelled(text, rng), top_k), "n": n})
    finally:
        gateway.stop()
        workers.stop()
        await drop_state(settings)
        client = aioredis.Redis.from_url(REDIS_URL)
        try:
            found = [k async for k in client.scan_iter(match=f"bc{unique}:*")]
            if found:
                await client.delete(*found)
        finally:
            await client.aclose()
    answered = [s for s in samples if s["type"] == "done"]
    result: dict[str, Any] = {"machine": machine_info(), "asks": args.asks, "zipf": args.zipf,
                              "keys": len(keys), "errors": len(samples) - len(answered),
                              "hit_rate": round(sum(s["cached"] for s in answered) / max(1, len(answered)), 3),
                              "path": "websocket → gateway → Kafka → answerer (→ Redis) → Kafka → gateway"}
    for label, cached in (("hit", True), ("miss", False)):
        group = [s for s in answered if s["cached"] is cached]
        result[label] = {"n": len(group), "first_token_ms": percentiles([s["first_ms"] for s in group]),
                         "done_ms": percentiles([s["done_ms"] for s in group]),
                         "answerer_first_token_ms": percentiles(
                             [s["answerer_first_ms"] for s in group if s["answerer_first_ms"] is not None])}
    after = [s for s in answered if s["n"] >= args.asks // 2]
    result["after_update"] = {"asks": len(after), "misses": sum(not s["cached"] for s in after)}
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--asks", type=int, default=400)
    parser.add_argument("--zipf", type=float, default=1.1, help="exponent of the questions' popularity")
    parser.add_argument("--out", type=Path, default=RESULTS / "cache.json")
    args = parser.parse_args(argv)
    result = asyncio.run(run(args, Path(f"/tmp/aichat-bench/cache-{uuid.uuid4().hex[:6]}")))
    rows = [(label, result[label]["n"], result[label]["first_token_ms"]["p50"],
             result[label]["first_token_ms"]["p95"], result[label]["done_ms"]["p50"],
             result[label]["done_ms"]["p95"], result[label]["answerer_first_token_ms"]["p50"])
            for label in ("hit", "miss")]
    print_table(["answer", "n", "first p50 ms", "first p95 ms", "done p50 ms", "done p95 ms",
                 "answerer first p50 ms"], rows)
    print(f"hit rate {result['hit_rate']:.1%} over {result['asks']} asks ({result['keys']} keys); "
          f"after the update: {result['after_update']['misses']} misses in {result['after_update']['asks']}")
    save_result(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
