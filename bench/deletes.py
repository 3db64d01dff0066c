"""The indexer's delete step: removing older chunks of a batch of tiny documents.

    .venv/bin/python -m bench.deletes [--docs 128] [--rounds 3]

Each round writes one version-1 chunk for each of ``--docs`` documents (the shape of a
batch of one-chunk documents all moving to version 2), then removes the old chunks in
one of three ways and reports documents/s (median of the rounds):

* ``sequential``: one ``delete_chunks`` per document, one after the other (the indexer
  before issue 10);
* ``concurrent``: the same calls, ``DELETE_CONCURRENCY`` at once (the indexer now);
* ``one_or_filter``: one ``delete_many`` with an Or over the documents' (tenant, doc_id,
  version < 2) conditions (for comparison: no per-document counts).

Runs in its own collection, dropped afterwards; results in ``bench/results/deletes.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
from weaviate.classes.query import Filter

from bench.common import RESULTS, machine_info, print_table
from infra.weaviate.provision import ensure_collections
from schemas.codec import pack_vector
from schemas.events import EmbeddedChunk, chunk_uuid
from streams.agents.indexer import DELETE_CONCURRENCY
from streams.config import WorkerSettings, load_settings
from streams.endpoints import weaviate_http_options
from streams.filters import document_filter
from streams.vectorstore import ChunkVector, WeaviateStore


def _chunk(doc_id: str, tenant: str) -> ChunkVector:
    vector = np.ones(8, dtype=np.float32) / np.sqrt(8)
    chunk = EmbeddedChunk(
        chunk_id=chunk_uuid(tenant, doc_id, 1, 0), doc_id=doc_id, tenant=tenant, version=1, seq=0,
        n_chunks=1, text=f"text of {doc_id}", char_start=0, char_end=10, title=doc_id,
        vector=pack_vector(vector), dim=8, model="bench",
    )
    return ChunkVector(chunk, vector.tolist())


async def measure(store: WeaviateStore, docs: int, rounds: int) -> dict[str, Any]:
    limit = asyncio.Semaphore(DELETE_CONCURRENCY)

    async def one(key: tuple[str, str]) -> int:
        return await store.delete_chunks(*key, versions_below=2)

    async def bounded(key: tuple[str, str]) -> int:
        async with limit:
            return await one(key)

    async def sequential(keys: list[tuple[str, str]]) -> int:
        return sum([await one(k) for k in keys])

    async def concurrent(keys: list[tuple[str, str]]) -> int:
        return sum(await asyncio.gather(*map(bounded, keys)))

    async def one_or_filter(keys: list[tuple[str, str]]) -> int:
        where = Filter.any_of([document_filter(t, d) & Filter.by_property("version").less_than(2)
                               for t, d in keys])
        result = await store._collection.data.delete_many(where=where)
        return int(result.successful)

    ways: dict[str, Callable[[list[tuple[str, str]]], Awaitable[int]]] = {
        "sequential": sequential, "concurrent": concurrent, "one_or_filter": one_or_filter}
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    for r in range(rounds):
        for name, way in ways.items():
            keys = [(f"t{i % 3}", f"{name}-{r}-{i}") for i in range(docs)]
            await store.upsert([_chunk(d, t) for t, d in keys])
            started = time.perf_counter()
            removed = await way(keys)
            seconds[name].append(time.perf_counter() - started)
            if removed != docs:
                raise RuntimeError(f"{name}: removed {removed} of {docs}")
    return {name: {"seconds_median": round(statistics.median(s), 3),
                   "docs_per_s": round(docs / statistics.median(s), 1)} for name, s in seconds.items()}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    base = load_settings(WorkerSettings)
    settings = base.model_copy(update={"weaviate_collection": f"Bdel{uuid.uuid4().hex[:8]}"})
    await ensure_collections(settings)
    store = WeaviateStore(settings)
    await store.start()
    try:
        ways = await measure(store, args.docs, args.rounds)
    finally:
        await store.stop()
        async with httpx.AsyncClient(**weaviate_http_options(settings), timeout=60) as http:
            for collection in (settings.weaviate_collection, f"{settings.weaviate_collection}Docs"):
                await http.delete(f"/v1/schema/{collection}")
    return {"machine": machine_info(), "docs_per_batch": args.docs, "rounds": args.rounds,
            "concurrency": DELETE_CONCURRENCY, "ways": ways}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=128, help="documents per batch (batch_max_events)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS / "deletes.json")
    args = parser.parse_args(argv)
    result = asyncio.run(main_async(args))
    print_table(["delete of a batch's old chunks", "docs", "seconds (median)", "docs/s"],
                [(name, args.docs, w["seconds_median"], w["docs_per_s"]) for name, w in result["ways"].items()])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
