"""Retrieval quality on any set of ../shared/eval through the real pipeline and query path.

    .venv/bin/python -m bench.eval --data ../shared/eval/belebele_kor
    .venv/bin/python -m bench.eval --data ../shared/eval/scifact

1. The corpus is published onto ``<name>.documents`` and indexed by a real ``ingest``
   worker (chunker → embedder → indexer → Weaviate collection ``<Name>``), unless that
   index already holds it (``--reingest`` forces it).
2. Queries go as ``QueryEvent``s onto ``<name>.queries``; a real ``answer`` worker
   (embed the question → Weaviate hybrid search → one result per document) replies on
   ``<name>.answers``; the ranked ``sources`` are scored against the qrels: nDCG@10 and
   recall@100.
3. The fixed hybrid weight is tuned on the **train** split only; then vector alone
   (``dense``), keywords alone (``bm25``), the tuned ``hybrid`` and the **default**
   configuration (the weight of each question's language, from the settings) are
   reported once on **test** — and on **all** queries where the set has ``qrels/all.tsv``
   (Belebele), beside the published figures of the set's README.

Results: ``bench/results/eval_<name>.json`` (``dense``, ``bm25``, ``hybrid``, ``default``
on test; ``all`` for Belebele).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import re
import sys
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench.common import RESULTS, WorkerGroup, drop_state, machine_info, print_table
from bench.ingest import load_corpus, pipeline_chunks, run_pipeline
from infra.kafka.topics import ensure_topics
from infra.weaviate.provision import ensure_collections
from schemas.codec import decode, encode
from schemas.events import AnswerEvent, QueryEvent, ReplyRoute, utc_now
from streams.config import WorkerSettings, load_settings
from streams.keywords import ANALYSER_VERSION
from streams.vectorstore import SEARCH_PROPS, WeaviateStore

EVAL_ROOT = Path(__file__).resolve().parents[2] / "shared" / "eval"
ALPHAS = (0.2, 0.35, 0.5, 0.65, 0.8)
#: published nDCG@10 of each set (its README), for the table
PUBLISHED = {
    "scifact": {"dense_minilm_whole_docs": 0.645, "bm25_multifield": 0.665, "bm25_flat": 0.679,
                "bm25s": 0.687},
    "belebele_kor": {"bm25s": 0.609, "multilingual-e5-small": 0.905, "multilingual-e5-base": 0.929,
                     "bge-m3": 0.932, "multilingual-e5-large": 0.945, "KURE-v1": 0.950},
}


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


async def per_query(path: QueryPath, queries: dict[str, str], qrels: dict[str, dict[str, int]],
                    variant: str, concurrency: int, top_k: int) -> dict[str, tuple[float, float]]:
    """(nDCG@10, recall@top_k) of each query of ``qrels`` with ``variant``."""
    ids = [q for q in qrels if q in queries]
    limit = asyncio.Semaphore(concurrency)
    scores: dict[str, tuple[float, float]] = {}

    async def one(qid: str) -> None:
        async with limit:
            ranked = await path.ranked(queries[qid], variant, top_k=top_k)
        scores[qid] = (ndcg_at(ranked, qrels[qid]), recall_at(ranked, qrels[qid], top_k))

    await asyncio.gather(*(one(q) for q in ids))
    return scores


def summary(scores: dict[str, tuple[float, float]], ids: Sequence[str]) -> dict[str, float]:
    rows = [scores[q] for q in ids if q in scores]
    return {"ndcg@10": round(sum(r[0] for r in rows) / len(rows), 4),
            "recall@100": round(sum(r[1] for r in rows) / len(rows), 4), "queries": len(rows)}


async def evaluate(path: QueryPath, queries: dict[str, str], qrels: dict[str, dict[str, int]],
                   variant: str, concurrency: int, top_k: int = 100) -> dict[str, float]:
    started = time.perf_counter()
    scores = await per_query(path, queries, qrels, variant, concurrency, top_k)
    return {**summary(scores, list(qrels)), "seconds": round(time.perf_counter() - started, 1)}


async def ensure_index(data: Path, name: str, env: dict[str, str], settings: WorkerSettings,
                       logs: Path, reingest: bool) -> dict[str, Any]:
    """The corpus in the index through the real pipeline (once): documents → … → Weaviate."""
    docs = load_corpus(data / "corpus.jsonl", None)
    await ensure_collections(settings)  # creates the collections when missing
    store = WeaviateStore(settings)
    await store.start()
    try:
        held = 0 if reingest else await store.registry.count()
    finally:
        await store.stop()
    if held >= len(docs):
        return {"documents": len(docs), "reused": True}
    if held or reingest:
        await drop_state(settings)
    n_chunks = len(pipeline_chunks(docs, settings))
    result = await run_pipeline(docs, n_chunks, 1, env, settings, logs / "ingest")
    return {**result, "reused": False}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    base = load_settings(WorkerSettings)
    set_name = args.data.name
    name = args.index or re.sub(r"[^a-z0-9]", "", set_name.lower())
    env = {"AICHAT_TOPIC_PREFIX": f"{name}.", "AICHAT_WEAVIATE_COLLECTION": name.capitalize(),
           "AICHAT_ELASTIC_INDEX_PREFIX": f"bench-{name}",
           "AICHAT_TOP_K_MAX": "100", "AICHAT_LOG_FORMAT": "json", "AICHAT_ANSWER_CONCURRENCY": "16",
           "AICHAT_WORKER_DATA_DIR": f"/tmp/aichat-bench/{name}-eval"}
    settings = base.model_copy(update={"topic_prefix": env["AICHAT_TOPIC_PREFIX"],
                                       "weaviate_collection": env["AICHAT_WEAVIATE_COLLECTION"],
                                       "elastic_index_prefix": env["AICHAT_ELASTIC_INDEX_PREFIX"]})
    logs = Path(args.logs) / name
    await ensure_topics(settings)
    ingest = await ensure_index(args.data, name, env, settings, logs, args.reingest)
    print(f"index {settings.weaviate_collection}: {ingest}", flush=True)
    queries = load_queries(args.data / "queries_all.jsonl")
    fuse = f"{args.fusion}:" if args.fusion else ""  # the tuned hybrid's fusion (default: the setting's)
    splits = {s: load_qrels(args.data / "qrels" / f"{s}.tsv") for s in ("train", "test", "all")
              if (args.data / "qrels" / f"{s}.tsv").is_file()}
    workers = WorkerGroup("answer", 1, env, logs)
    workers.start()
    path = QueryPath(settings)
    await path.start()
    try:
        tuning = {}  # nDCG@10 needs the first 10 documents only: a cheaper pass
        for alpha in args.alphas:
            tuning[str(alpha)] = await evaluate(path, queries, splits["train"], f"{fuse}alpha={alpha}",
                                                args.concurrency, top_k=10)
            print(f"train alpha={alpha}: {tuning[str(alpha)]}", flush=True)
        best = float(max(tuning, key=lambda a: tuning[a]["ndcg@10"]))
        variants = {"dense": "dense", "bm25": "bm25", "hybrid": f"{fuse}alpha={best}", "default": "default"}
        reported = {**splits["test"], **splits.get("all", {})}  # each query asked once per variant
        results: dict[str, dict[str, Any]] = {s: {} for s in ("test", "all") if s in splits}
        for label, variant in variants.items():
            scores = await per_query(path, queries, reported, variant, args.concurrency, 100)
            for split in results:
                results[split][label] = summary(scores, list(splits[split]))
                print(f"{split} {label}: {results[split][label]}", flush=True)
    finally:
        await path.stop()
        workers.stop()
    test = results["test"]
    out: dict[str, Any] = {
        "set": set_name, "split": "test",
        **{label: test[label]["ndcg@10"] for label in variants},
        "recall@100": {label: test[label]["recall@100"] for label in variants},
        "default_not_below_its_halves": test["default"]["ndcg@10"] >= max(test["dense"]["ndcg@10"], test["bm25"]["ndcg@10"]),
        "details": results,
        "config": {"tuned_hybrid_alpha": best, "tuned_on": "train",
                   "train_ndcg@10_by_alpha": {a: t["ndcg@10"] for a, t in tuning.items()},
                   "default_alpha": {"en": base.hybrid_alpha, "ko": base.hybrid_alpha_ko},
                   "model": base.embed_model, "embed_backend": base.embed_backend,
                   "chunk_max_tokens": base.chunk_max_tokens,
                   "chunk_overlap_tokens": base.chunk_overlap_tokens,
                   "fusion": {"tuned_hybrid": args.fusion or base.hybrid_fusion, "default": base.hybrid_fusion},
                   "bm25_properties": SEARCH_PROPS,
                   "keyword_analyser": ANALYSER_VERSION, "collapse": "best chunk per document"},
        "ingest": ingest,
        "published": PUBLISHED.get(set_name, {}),
        "machine": machine_info(),
    }
    if "all" in results:
        out["all"] = {label: results["all"][label]["ndcg@10"] for label in variants}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=EVAL_ROOT / "scifact", help="a set of ../shared/eval")
    parser.add_argument("--index", default=None, help="topic prefix / collection name (default: the set's)")
    parser.add_argument("--reingest", action="store_true", help="index the corpus again even if present")
    parser.add_argument("--alphas", type=float, nargs="+", default=list(ALPHAS))
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--fusion", choices=["relative_score", "ranked"], default=None,
                        help="the fusion of the tuned hybrid (default: AICHAT_HYBRID_FUSION)")
    parser.add_argument("--logs", default="/tmp/aichat-bench/logs/eval")
    parser.add_argument("--out", type=Path, default=None, help="default bench/results/eval_<set>.json")
    args = parser.parse_args(argv)
    result = asyncio.run(main_async(args))
    for split in result["details"]:
        rows = [(k, v["ndcg@10"], v["recall@100"]) for k, v in result["details"][split].items()]
        print_table([f"{result['set']} {split}", "nDCG@10", "recall@100"], rows)
    print_table(["published", "nDCG@10"], [(k, v) for k, v in result["published"].items()])
    out = args.out or RESULTS / f"eval_{result['set']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
    print(f"wrote {out} (tuned hybrid alpha {result['config']['tuned_hybrid_alpha']}, on train)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
