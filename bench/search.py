"""What one search costs Weaviate, and what its settings buy: HNSW ``ef``, the vector sent back, the fusion.

    .venv/bin/aichat stack up
    .venv/bin/python -m bench.search [--queries 300] [--ef -1 16 32 64 128]

The kept SciFact index of the default configuration (collection ``Scifact400``, built
through the real pipeline by ``bench.eval``) is searched with the SciFact **test**
questions, each embedded once beforehand by the default embedder, so that only the
search is timed. Every row calls the query path's own search (``WeaviateStore.hybrid_search``
with the candidates ``Retriever`` asks for, then one result per document) one question at
a time, and reports:

* Weaviate's CPU per search (user + system of its process group, from ``/proc``), the
  figure the load benchmark divides by every answered question;
* client-side latency p50/p95 (sequential, so it is the search alone);
* nDCG@10 on SciFact test for that setting, so that a cheaper setting is seen to cost
  nothing, or what it costs.

Rows: the default (hybrid, ``ef`` = -1: dynamic), keywords alone (alpha 0), vectors alone
(alpha 1), ranked fusion, each fixed ``ef`` (set on the collection, then restored); then
diagnostic rows, the same Weaviate calls asking for ids and scores only (no stored object
read) and a bare nearest-neighbour search, which show where Weaviate's time goes. Results: ``bench/results/search.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from bench.common import RESULTS, machine_info, percentiles, print_table
from bench.eval import EVAL_ROOT, load_qrels, load_queries, ndcg_at
from bench.load import CpuMeter, stack_groups
from streams.config import WorkerSettings, load_settings
from streams.embedding import create_embedder
from streams.keywords import keyword_field
from streams.retrieval import CANDIDATES_PER_RESULT, collapse_per_document, default_alpha
from streams.vectorstore import SEARCH_PROPS, WeaviateStore

COLLECTION = "Scifact400"
TENANT = "default"


async def set_ef(store: WeaviateStore, ef: int) -> None:
    from weaviate.classes.config import Reconfigure

    collection = store._collection  # noqa: SLF001 - the benchmark reconfigures the index it reads
    await collection.config.update(vector_index_config=Reconfigure.VectorIndex.hnsw(ef=ef))


async def current_ef(store: WeaviateStore) -> int:
    config = await store._collection.config.get()  # noqa: SLF001
    index = config.vector_index_config or next(iter(config.vector_config.values())).vector_index_config
    return int(index.ef)


async def run_row(store: WeaviateStore, settings: WorkerSettings, meter: CpuMeter, questions: Sequence[tuple[str, str, np.ndarray]],
                  qrels: dict[str, dict[str, int]], *, alpha: float | None, fusion: str,
                  top_k: int) -> dict[str, Any]:
    latencies, scores = [], []
    meter.lap()
    for qid, text, vector in questions:
        a = default_alpha(text, settings) if alpha is None else alpha
        started = time.perf_counter()
        passages = await store.hybrid_search(text, vector.tolist(), tenant=TENANT,
                                             top_k=top_k * CANDIDATES_PER_RESULT, alpha=a, fusion=fusion)
        latencies.append((time.perf_counter() - started) * 1000)
        ranked = [p.doc_id for p in collapse_per_document(passages, top_k)]
        scores.append(ndcg_at(ranked, qrels.get(qid, {})))
    cpu = meter.lap()
    n = len(questions)
    return {"searches": n, "weaviate_cpu_ms_per_search": round(1000 * cpu["weaviate"] / n, 2),
            "client_cpu_ms_per_search": round(1000 * cpu["client"] / n, 2),
            "latency_ms": percentiles(latencies), "ndcg_at_10": round(float(np.mean(scores)), 4)}


async def raw_row(store: WeaviateStore, meter: CpuMeter, questions: Sequence[tuple[str, str, np.ndarray]],
                  kind: str, limit: int) -> dict[str, Any]:
    """The Weaviate call alone, asking for no stored properties: the floor under the real search."""
    from weaviate.classes.query import MetadataQuery

    collection = store._collection  # noqa: SLF001
    latencies = []
    meter.lap()
    for _, text, vector in questions:
        started = time.perf_counter()
        if kind == "near_vector":
            await collection.query.near_vector(near_vector=vector.tolist(), limit=limit, return_properties=[])
        else:
            await collection.query.hybrid(query=keyword_field(text) or text, vector=vector.tolist(), limit=limit,
                                          alpha=0.0 if kind == "bm25" else 0.5, query_properties=SEARCH_PROPS,
                                          return_metadata=MetadataQuery(score=True), return_properties=[])
        latencies.append((time.perf_counter() - started) * 1000)
    cpu = meter.lap()
    n = len(questions)
    return {"searches": n, "weaviate_cpu_ms_per_search": round(1000 * cpu["weaviate"] / n, 2),
            "client_cpu_ms_per_search": round(1000 * cpu["client"] / n, 2),
            "latency_ms": percentiles(latencies), "ndcg_at_10": None}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    settings = load_settings(WorkerSettings, weaviate_collection=args.collection)
    queries = load_queries(args.data / "queries.jsonl")
    qrels = load_qrels(args.data / "qrels" / "test.tsv")
    ids = [q for q in qrels if q in queries][: args.queries]
    embedder = create_embedder(settings)
    await embedder.start()
    try:
        vectors = [await embedder.embed_query(queries[q]) for q in ids]
    finally:
        await embedder.stop()
    questions = [(q, queries[q], v) for q, v in zip(ids, vectors, strict=True)]
    store = WeaviateStore(settings)
    await store.start()
    groups = {"weaviate": stack_groups()["weaviate"]}
    meter = CpuMeter({**groups, "client": os.getpid()})
    fusion = settings.hybrid_fusion
    rows: list[dict[str, Any]] = []
    original_ef = await current_ef(store)
    try:
        await run_row(store, settings, meter, questions[:30], qrels, alpha=None, fusion=fusion, top_k=args.top_k)  # warm-up

        async def row(name: str, alpha: float | None, fusion: str = fusion, **recorded: Any) -> None:
            result = await run_row(store, settings, meter, questions, qrels, alpha=alpha, fusion=fusion,
                                   top_k=args.top_k)
            rows.append({"row": name, "alpha": alpha, "fusion": fusion, **recorded, **result})
            print(f"{name}: {result}", flush=True)

        await row(f"default: hybrid, ef {original_ef}", alpha=None)
        await row("keywords alone (alpha 0)", alpha=0.0)
        await row("vectors alone (alpha 1)", alpha=1.0)
        await row("hybrid, ranked fusion", alpha=None, fusion="ranked")
        for ef in args.ef:
            await set_ef(store, ef)
            await row(f"hybrid, ef {ef}", alpha=None, ef=ef)
        await set_ef(store, original_ef)
        # where Weaviate's time goes: the same searches returning ids and scores only
        # (no stored object read), and a bare nearest-neighbour search
        for name, kind in (("diagnostic: hybrid, ids and scores only", "hybrid"),
                           ("diagnostic: keywords alone, ids and scores only", "bm25"),
                           ("diagnostic: nearest neighbours, ids only", "near_vector")):
            result = await raw_row(store, meter, questions, kind, limit=args.top_k * CANDIDATES_PER_RESULT)
            rows.append({"row": name, **result})
            print(f"{name}: {result}", flush=True)
    finally:
        await set_ef(store, original_ef)
        await store.stop()
    print_table(["row", "Weaviate CPU ms/search", "p50 ms", "p95 ms", "nDCG@10"],
                [[r["row"], r["weaviate_cpu_ms_per_search"], r["latency_ms"]["p50"], r["latency_ms"]["p95"],
                  r["ndcg_at_10"]] for r in rows])
    return {"collection": args.collection, "questions": len(questions), "top_k": args.top_k,
            "candidates": args.top_k * CANDIDATES_PER_RESULT, "embed_backend": settings.embed_backend,
            "rows": rows, "machine": machine_info()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=EVAL_ROOT / "scifact")
    parser.add_argument("--collection", default=COLLECTION)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--ef", type=int, nargs="+", default=[16, 32, 64, 128])
    parser.add_argument("--out", type=Path, default=RESULTS / "search.json")
    args = parser.parse_args(argv)
    result = asyncio.run(main_async(args))
    args.out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
