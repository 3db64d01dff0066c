"""Retrieval quality on BEIR SciFact through the real query path.

    .venv/bin/python -m bench.ingest --keep-as scifact     # the corpus, through the real pipeline
    .venv/bin/python -m bench.eval_scifact

Queries go as ``QueryEvent``s onto ``scifact.queries``; an ``answer`` worker (the
real answerer: embed → Weaviate hybrid search → one result per document) replies on
``scifact.answers``; the ranked ``sources`` are scored against the qrels:
nDCG@10 and recall@100. The hybrid weight is tuned on the **train** split only,
then dense, BM25 and hybrid are reported once on the **test** split. Results go to
``bench/results/eval_scifact.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench.common import RESULTS, WorkerGroup, machine_info, print_table
from schemas.codec import decode, encode
from schemas.events import AnswerEvent, QueryEvent, ReplyRoute, utc_now
from streams.config import WorkerSettings, load_settings

EVAL_DIR = Path(__file__).resolve().parents[2] / "shared" / "eval" / "scifact"
ALPHAS = (0.2, 0.35, 0.5, 0.65, 0.8)


def load_queries(path: Path) -> dict[str, str]:
    return {str(q["_id"]): q["text"] for q in map(orjson.loads, path.read_bytes().splitlines()) if q}


def load_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    for line in path.read_text().splitlines()[1:]:
        if line.strip():
            qid, doc, score = line.split()
            qrels.setdefault(qid, {})[doc] = int(score)
    return qrels


def ndcg_at(ranked: Sequence[str], relevant: dict[str, int], k: int = 10) -> float:
    dcg = sum(relevant.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:k]))
    ideal = sorted(relevant.values(), reverse=True)[:k]
    idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def recall_at(ranked: Sequence[str], relevant: dict[str, int], k: int = 100) -> float:
    hits = {d for d in ranked[:k] if relevant.get(d, 0) > 0}
    wanted = {d for d, r in relevant.items() if r > 0}
    return len(hits) / len(wanted) if wanted else 0.0


class QueryPath:
    """Sends queries onto the queries topic and collects each one's ranked sources."""

    def __init__(self, settings: WorkerSettings, partition: int = 0) -> None:
        self.settings = settings
        self.route = ReplyRoute(topic=settings.topic("answers"), partition=partition)
        self.producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all",
                                         enable_idempotence=True)
        self.consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None,
                                         enable_auto_commit=False)
        self.waiting: dict[str, asyncio.Future[list[str]]] = {}
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.producer.start()
        await self.consumer.start()
        tp = TopicPartition(self.route.topic, self.route.partition)
        self.consumer.assign([tp])
        await self.consumer.seek_to_end(tp)
        await self.consumer.position(tp)
        self._reader = asyncio.create_task(self._read())

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        await self.consumer.stop()
        await self.producer.stop()

    async def _read(self) -> None:
        async for record in self.consumer:
            event = decode(AnswerEvent, record.value)
            fut = self.waiting.get(event.query_id)
            if fut is None or fut.done():
                continue
            if event.kind == "sources":
                fut.set_result([s.doc_id for s in event.sources])
            elif event.kind == "error" and event.error is not None:
                fut.set_exception(RuntimeError(f"{event.error.code}: {event.error.message}"))

    async def ranked(self, text: str, variant: str, top_k: int) -> list[str]:
        query = QueryEvent(text=text, top_k=top_k, variant=variant, reply_to=self.route,
                           deadline=utc_now() + timedelta(seconds=120), user="eval")
        fut: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()
        self.waiting[query.query_id] = fut
        try:
            await self.producer.send_and_wait(self.settings.topic("queries"), encode(query),
                                              key=query.query_id.encode())
            return await asyncio.wait_for(fut, 180)
        finally:
            self.waiting.pop(query.query_id, None)


async def evaluate(path: QueryPath, queries: dict[str, str], qrels: dict[str, dict[str, int]],
                   variant: str, concurrency: int) -> dict[str, float]:
    ids = [q for q in qrels if q in queries]
    limit = asyncio.Semaphore(concurrency)
    ndcg: list[float] = []
    recall: list[float] = []

    async def one(qid: str) -> None:
        async with limit:
            ranked = await path.ranked(queries[qid], variant, top_k=100)
        ndcg.append(ndcg_at(ranked, qrels[qid]))
        recall.append(recall_at(ranked, qrels[qid]))

    started = time.perf_counter()
    await asyncio.gather(*(one(q) for q in ids))
    return {"ndcg@10": round(sum(ndcg) / len(ndcg), 4), "recall@100": round(sum(recall) / len(recall), 4),
            "queries": len(ids), "seconds": round(time.perf_counter() - started, 1)}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    base = load_settings(WorkerSettings)
    name = args.index
    env = {"AICHAT_TOPIC_PREFIX": f"{name}.", "AICHAT_WEAVIATE_COLLECTION": name.capitalize(),
           "AICHAT_TOP_K_MAX": "100", "AICHAT_LOG_FORMAT": "json",
           "AICHAT_WORKER_DATA_DIR": f"/tmp/aichat-bench/{name}-eval"}
    settings = base.model_copy(update={"topic_prefix": env["AICHAT_TOPIC_PREFIX"],
                                       "weaviate_collection": env["AICHAT_WEAVIATE_COLLECTION"]})
    queries = load_queries(args.data / "queries_all.jsonl")
    train, test = load_qrels(args.data / "qrels" / "train.tsv"), load_qrels(args.data / "qrels" / "test.tsv")
    workers = WorkerGroup("answer", 1, env, Path(args.logs))
    workers.start()
    path = QueryPath(settings)
    await path.start()
    try:
        tuning = {}
        for alpha in args.alphas:
            tuning[str(alpha)] = await evaluate(path, queries, train, f"alpha={alpha}", args.concurrency)
            print(f"train alpha={alpha}: {tuning[str(alpha)]}", flush=True)
        best = float(max(tuning, key=lambda a: tuning[a]["ndcg@10"]))
        results = {}
        for label, variant in (("dense", "dense"), ("bm25", "bm25"), ("hybrid", f"alpha={best}")):
            results[label] = await evaluate(path, queries, test, variant, args.concurrency)
            print(f"test {label}: {results[label]}", flush=True)
    finally:
        await path.stop()
        workers.stop()
    return {
        "split": "test",
        "dense": results["dense"]["ndcg@10"], "bm25": results["bm25"]["ndcg@10"],
        "hybrid": results["hybrid"]["ndcg@10"],
        "recall@100": {k: v["recall@100"] for k, v in results.items()},
        "details": results,
        "config": {"hybrid_alpha": best, "tuned_on": "train", "train_ndcg@10_by_alpha": {a: t["ndcg@10"] for a, t in tuning.items()},
                   "model": base.embed_model, "chunk_max_tokens": base.chunk_max_tokens,
                   "chunk_overlap_tokens": base.chunk_overlap_tokens, "fusion": "Weaviate relativeScoreFusion",
                   "bm25_properties": ["title", "text", "text_ko"], "collapse": "best chunk per document"},
        "published": {"dense_minilm_whole_docs": 0.645, "bm25_multifield": 0.665, "bm25_flat": 0.679, "bm25s": 0.687},
        "machine": machine_info(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=EVAL_DIR)
    parser.add_argument("--index", default="scifact", help="the index kept by bench.ingest --keep-as")
    parser.add_argument("--alphas", type=float, nargs="+", default=list(ALPHAS))
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--logs", default="/tmp/aichat-bench/logs/eval")
    parser.add_argument("--out", type=Path, default=RESULTS / "eval_scifact.json")
    args = parser.parse_args(argv)
    result = asyncio.run(main_async(args))
    rows = [(k, result["details"][k]["ndcg@10"], result["details"][k]["recall@100"]) for k in ("dense", "bm25", "hybrid")]
    print_table(["test split", "nDCG@10", "recall@100"], rows)
    print_table(["published", "nDCG@10"], [(k, v) for k, v in result["published"].items()])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
    print(f"wrote {args.out} (hybrid alpha {result['config']['hybrid_alpha']}, tuned on train)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
