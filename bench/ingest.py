"""Ingestion throughput and freshness on SciFact, through the real pipeline.

    .venv/bin/aichat stack up
    .venv/bin/python -m bench.ingest [--corpus ../shared/eval/scifact/corpus.jsonl] [--limit N]

Measured in one run on one machine (results printed and written to
``bench/results/ingest.json``; about 6 minutes on 2 cores with e5-small on torch at
the default 200 abstracts):

* ``raw_chunks_per_s``: the configured model and backend (``backend``) encoding exactly
  the chunks the pipeline produces, in this process, through the embedder's own
  ``embed_sync`` at the best of a few batch sizes (the ceiling);
* ``pipeline_chunks_per_s``: first publish → last document acknowledged as indexed
  (searchable in Weaviate), through Kafka and the ``ingest`` workers (chunker, embedder,
  indexer), with 1 and with 2 workers in one consumer group (by worker count);
* ``ratio`` = pipeline / raw, by worker count (``{"1": …, "2": …}``);
* freshness (publish → searchable) p50/p95 at a steady rate, by default half the
  1-worker pipeline's measured capacity in documents/s (``freshness_p95_ms``);
* peak RSS of each worker process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import platform
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer

from bench.common import (
    RESULTS,
    WorkerGroup,
    drop_state,
    machine_info,
    percentile,
    print_table,
    save_result,
)
from ingest.readers import read_source
from ingest.sdk import DocumentPublisher
from schemas.codec import decode
from schemas.events import DocumentEvent, DocumentIndexed, utc_now
from streams.agents.chunker import make_chunks
from streams.chunking import load_token_counter
from streams.config import WorkerSettings, load_settings

DEFAULT_LIMIT = 200  # SciFact abstracts: ~260 chunks, the whole run in ~6 minutes on 2 cores
DEFAULT_CORPUS = Path(__file__).resolve().parents[2] / "shared" / "eval" / "scifact" / "corpus.jsonl"


def load_corpus(path: Path, limit: int | None) -> list[DocumentEvent]:
    """The corpus as document events; any unreadable record stops the benchmark."""
    docs = []
    for item in read_source(path):
        if not isinstance(item, DocumentEvent):
            raise SystemExit(f"corpus: {item}")
        docs.append(item)
    if not docs:
        raise SystemExit(f"corpus {path} has no documents")
    return docs[:limit] if limit else docs


def pipeline_chunks(docs: list[DocumentEvent], settings: WorkerSettings) -> list[str]:
    counter = load_token_counter(settings.embed_model, settings.model_cache_dir)
    texts: list[str] = []
    for doc in docs:
        texts.extend(c.text for c in make_chunks(doc, counter=counter, max_tokens=settings.chunk_max_tokens,
                                                  overlap_tokens=settings.chunk_overlap_tokens))
    return texts


def load_embedder(settings: WorkerSettings) -> Any:
    """The embedder the worker would load for these settings (whichever backend)."""
    from streams.embedding import create_embedder

    embedder = create_embedder(settings)
    embedder.load()
    return embedder


def raw_throughput(texts: list[str], settings: WorkerSettings, batch_sizes: list[int],
                   sample_size: int = 96) -> dict[str, Any]:
    """Best batch size on a sample, then the whole chunk list at that size, through the
    embedder's own ``embed_sync`` (the passage prompt the embedder agent sends)."""
    embedder = load_embedder(settings)

    def encode(items: list[str], size: int) -> None:
        embedder.settings = settings.model_copy(update={"embed_batch_size": size})
        embedder.embed_sync(items)

    encode(texts[:32], 16)  # warm-up
    sample = texts[: min(len(texts), sample_size)]
    by_size = {}
    for size in batch_sizes:
        started = time.perf_counter()
        encode(sample, size)
        by_size[size] = len(sample) / (time.perf_counter() - started)
    best = max(by_size, key=lambda k: by_size[k])
    started = time.perf_counter()
    encode(texts, best)
    elapsed = time.perf_counter() - started
    # the same model calls the embedder makes: windows of embed_max_events at its batch size
    window, rows = settings.embed_max_events, settings.embed_batch_size
    started = time.perf_counter()
    for i in range(0, len(texts), window):
        encode(texts[i:i + window], rows)
    windowed = time.perf_counter() - started
    return {"chunks": len(texts), "embedder": type(embedder).__name__, "best_batch_size": best,
            "seconds": round(elapsed, 2),
            "windowed": {"window": window, "batch_size": rows,
                         "chunks_per_s": round(len(texts) / windowed, 1)},
            "chunks_per_s": round(len(texts) / elapsed, 1),
            "sample_chunks": len(sample),
            "sample_chunks_per_s_by_batch": {str(k): round(v, 1) for k, v in by_size.items()},
            **query_latency(embedder)}


QUESTIONS = ["How many vacation days do employees get?", "원격 근무는 일주일에 며칠 가능한가요?",
             "Does vitamin D reduce the risk of fractures?", "비밀번호는 얼마나 자주 바꿔야 하나요?"]


def query_latency(embedder: Any, rounds: int = 25) -> dict[str, float]:
    """One question alone (p50 ms), and per question in a batch of 32 (ms): the answerer's cost."""
    alone = []
    for i in range(rounds):
        started = time.perf_counter()
        embedder.embed_sync([QUESTIONS[i % len(QUESTIONS)]], embedder.prompts.query)
        alone.append((time.perf_counter() - started) * 1000)
    batch = [QUESTIONS[i % len(QUESTIONS)] for i in range(32)]
    started = time.perf_counter()
    for _ in range(3):
        embedder.embed_sync(batch, embedder.prompts.query)
    per_question = (time.perf_counter() - started) * 1000 / (3 * 32)
    return {"query_embed_ms_p50": round(percentile(alone, 50), 1),
            "query_embed_ms_in_batch_of_32": round(per_question, 1)}


async def collect_acks(settings: WorkerSettings, wanted: int, timeout_s: float) -> list[DocumentIndexed]:
    """Read the ``indexed`` topic until ``wanted`` documents were indexed (or time runs out)."""
    consumer = AIOKafkaConsumer(settings.topic("indexed"), bootstrap_servers=settings.kafka_bootstrap,
                                group_id=None, auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    acks: dict[str, DocumentIndexed] = {}
    deadline = time.monotonic() + timeout_s
    try:
        while len(acks) < wanted and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500, max_records=5000)
            for records in batch.values():
                for record in records:
                    ack = decode(DocumentIndexed, record.value)
                    if ack.outcome == "indexed":
                        acks[ack.doc_id] = ack
    finally:
        await consumer.stop()
    return list(acks.values())


async def sample_lag(metrics_url: str, samples: list[float], stop: asyncio.Event) -> None:
    """Every 2 s: the shipper's total consumer lag, read from its own /metrics."""
    async with httpx.AsyncClient(timeout=5) as http:
        while not stop.is_set():
            try:
                text = (await http.get(metrics_url)).text
                samples.append(sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                                   if line.startswith("aichat_consumer_lag_messages{") and "shipper" in line))
            except (httpx.HTTPError, ValueError, IndexError):
                pass
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 2.0)


async def model_seconds(metrics_url: str) -> float:
    """Seconds the embedder agent's model spent encoding, from the worker's own /metrics."""
    async with httpx.AsyncClient(timeout=5) as http:
        text = (await http.get(metrics_url)).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith('aichat_embed_seconds_sum{agent="embedder"}'))


async def run_pipeline(docs: list[DocumentEvent], n_chunks: int, workers: int, env: dict[str, str],
                       settings: WorkerSettings, logs: Path, *, with_shipper: bool = False) -> dict[str, Any]:
    group = WorkerGroup("ingest", workers, env, logs)
    group.start()
    shipper = WorkerGroup("shipper", 1, env, logs) if with_shipper else None
    lag: list[float] = []
    stop_sampling = asyncio.Event()
    sampler = None
    if shipper is not None:
        shipper.start()
        url = shipper.children[0].health_url.replace("/health/ready", "/metrics")
        sampler = asyncio.create_task(sample_lag(url, lag, stop_sampling))
    try:
        started = time.time()
        async with DocumentPublisher(settings) as publisher:
            async for delivery in publisher.publish_many(docs, window=512):
                if not delivery.ok:
                    raise RuntimeError(f"publish failed: {delivery.error}")
        published = time.time()
        acks = await collect_acks(settings, len(docs), timeout_s=1800)
        if len(acks) < len(docs):
            raise RuntimeError(f"only {len(acks)} of {len(docs)} documents indexed; see {logs}")
        last = max(a.indexed_at.timestamp() for a in acks)
        elapsed = last - started
        busy = [await model_seconds(child.health_url.replace("/health/ready", "/metrics"))
                for child in group.children]
        result = {"workers": workers, "documents": len(docs), "chunks": n_chunks,
                  "publish_seconds": round(published - started, 2), "seconds": round(elapsed, 2),
                  "chunks_per_s": round(n_chunks / elapsed, 1), "peak_rss_mb": group.peak_rss_mb(),
                  # the share of the run each worker's model spent encoding: below 1, the
                  # model waited for the pipeline; near 1, the pipeline waited for the model
                  "model_busy": [round(s / elapsed, 3) for s in busy]}
        if shipper is not None:
            await asyncio.sleep(10)  # the shipper's last micro-batches after the last ack
            stop_sampling.set()
            if sampler is not None:
                await sampler
            result["shipper_lag_messages"] = {
                "samples": len(lag), "p50": percentile(lag, 50), "p95": percentile(lag, 95),
                "max": max(lag, default=math.nan), "last": lag[-1] if lag else math.nan,
                "peak_rss_mb": shipper.peak_rss_mb()}
        return result
    finally:
        stop_sampling.set()
        if shipper is not None:
            shipper.stop()
        group.stop()


async def run_freshness(docs: list[DocumentEvent], rate: float, env: dict[str, str],
                        settings: WorkerSettings, logs: Path) -> dict[str, Any]:
    group = WorkerGroup("ingest", 1, env, logs)
    group.start()
    try:
        async with DocumentPublisher(settings) as publisher:
            next_at = time.monotonic()
            for doc in docs:
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                fresh = doc.model_copy(update={"doc_id": f"fresh/{doc.doc_id}", "produced_at": utc_now()})
                await publisher.publish(fresh)
                next_at += 1.0 / rate
        acks = await collect_acks(settings, len(docs), timeout_s=300)
        values = sorted(a.freshness_ms for a in acks if a.freshness_ms is not None)
        return {"rate_docs_per_s": rate, "documents": len(values),
                "freshness_p50_ms": round(percentile(values, 50), 1),
                "freshness_p95_ms": round(percentile(values, 95), 1),
                "freshness_max_ms": round(values[-1], 1), "peak_rss_mb": group.peak_rss_mb()}
    finally:
        group.stop()


def isolated(settings: WorkerSettings, tag: str, name: str | None = None) -> tuple[dict[str, str], WorkerSettings]:
    """Topic prefix and collection of one run: unique, or ``name`` for an index kept afterwards."""
    unique = name or f"b{tag}{uuid.uuid4().hex[:8]}"
    env = {"AICHAT_TOPIC_PREFIX": f"{unique}.", "AICHAT_WEAVIATE_COLLECTION": unique.capitalize(),
           "AICHAT_ELASTIC_INDEX_PREFIX": unique.lower(),
           "AICHAT_LOG_FORMAT": "json", "AICHAT_WORKER_DATA_DIR": f"/tmp/aichat-bench/{unique}"}
    return env, settings.model_copy(update={"topic_prefix": env["AICHAT_TOPIC_PREFIX"],
                                            "weaviate_collection": env["AICHAT_WEAVIATE_COLLECTION"],
                                            "elastic_index_prefix": env["AICHAT_ELASTIC_INDEX_PREFIX"]})


async def compare_model(name: str, docs: list[DocumentEvent], base: WorkerSettings,
                        logs: Path) -> dict[str, Any]:
    """Raw encode and one pipeline worker with another model, on the same documents."""
    model_settings = base.model_copy(update={"embed_model": name})
    texts = pipeline_chunks(docs, model_settings)
    raw = raw_throughput(texts, model_settings, [16, 32])
    env, settings = isolated(model_settings, "cmp")
    env["AICHAT_EMBED_MODEL"] = name
    try:
        result = await run_pipeline(docs, len(texts), 1, env, settings, logs / f"cmp-{name}")
    finally:
        await drop_state(settings)
    result["ratio"] = round(result["chunks_per_s"] / raw["chunks_per_s"], 3)
    print(f"{name}: raw {raw['chunks_per_s']} chunks/s, pipeline {result['chunks_per_s']} "
          f"(ratio {result['ratio']})", flush=True)
    return {"model": name, "raw": raw, "pipeline": result}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    base = load_settings(WorkerSettings)
    docs = load_corpus(args.corpus, args.limit)
    texts = pipeline_chunks(docs, base)
    print(f"corpus: {len(docs)} documents → {len(texts)} chunks "
          f"(max {base.chunk_max_tokens} tokens, overlap {base.chunk_overlap_tokens})", flush=True)
    backend = str(getattr(base, "embed_backend", "torch"))
    raw = raw_throughput(texts, base, [16, 32, 64])
    print(f"raw encode ({base.embed_model}, {backend}): {raw['chunks_per_s']} chunks/s "
          f"(batch {raw['best_batch_size']})", flush=True)
    logs = Path(args.logs)
    pipeline = []
    for n, workers in enumerate(args.workers):
        keep = args.keep_as if n == 0 else None
        env, settings = isolated(base, f"w{workers}", keep)
        if keep:
            await drop_state(settings)  # a previous run's copy
        if workers > 1:  # one torch thread per worker: the workers share the machine's cores
            env["AICHAT_EMBED_THREADS"] = str(max(1, (os.cpu_count() or 1) // workers))
        try:
            result = await run_pipeline(docs, len(texts), workers, env, settings, logs / f"w{workers}",
                                        with_shipper=args.with_shipper and n == 0)
        finally:
            if not keep:
                await drop_state(settings)
        result["ratio"] = round(result["chunks_per_s"] / raw["chunks_per_s"], 3)
        # to the model calls the embedder makes (windows of embed_max_events): the two raw
        # figures differ by the machine's noise as much as by the calls
        result["ratio_to_windowed"] = round(result["chunks_per_s"] / raw["windowed"]["chunks_per_s"], 3)
        pipeline.append(result)
        print(f"pipeline, {workers} worker(s): {result['chunks_per_s']} chunks/s, ratio {result['ratio']}", flush=True)
    compared = [await compare_model(name, docs, base, logs) for name in args.compare_model]
    rate, capacity = fresh_rate(args.fresh_rate, pipeline, args.fresh_load)
    env, settings = isolated(base, "fresh")
    try:
        fresh = await run_freshness(docs[: max(1, int(args.fresh_seconds * rate))], rate,
                                    env, settings, logs / "fresh")
    finally:
        await drop_state(settings)
    fresh.update(capacity_docs_per_s=capacity, load=None if args.fresh_rate else args.fresh_load)
    return {"machine": machine_info(), "model": base.embed_model, "backend": backend,
            "device": base.embed_device,
            "chunking": {"max_tokens": base.chunk_max_tokens, "overlap_tokens": base.chunk_overlap_tokens},
            "batch": {"max_events": base.batch_max_events, "max_wait_ms": base.batch_max_wait_ms,
                      "embed_max_events": base.embed_max_events,
                      "embed_batch_size": base.embed_batch_size},
            "raw": raw, "raw_chunks_per_s": raw["chunks_per_s"], "pipeline": pipeline,
            "compared_models": compared,
            "pipeline_chunks_per_s": {str(p["workers"]): p["chunks_per_s"] for p in pipeline},
            "ratio": {str(p["workers"]): p["ratio"] for p in pipeline},
            "ratio_to_windowed": {str(p["workers"]): p["ratio_to_windowed"] for p in pipeline},
            "freshness": fresh, "freshness_p50_ms": fresh["freshness_p50_ms"],
            "freshness_p95_ms": fresh["freshness_p95_ms"],
            "python": platform.python_version(), "pid": os.getpid()}


def fresh_rate(explicit: float | None, pipeline: list[dict[str, Any]], load: float) -> tuple[float, float | None]:
    """The freshness run's rate (documents/s): ``explicit``, or ``load`` times the
    capacity the 1-worker run measured (documents / seconds); and that capacity."""
    one = next((p for p in pipeline if p["workers"] == 1), None)
    capacity = round(one["documents"] / one["seconds"], 2) if one else None
    if explicit:
        return explicit, capacity
    if capacity is None:
        raise SystemExit("--fresh-rate is needed when no 1-worker run measures the capacity")
    return round(load * capacity, 2), capacity


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--limit", type=int, default=None,
                        help="first N documents (0: all; default 200, ~6 min on 2 cores, or all "
                             "with --keep-as)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--fresh-rate", type=float, default=None,
                        help="documents/s for the freshness run (default: --fresh-load of the "
                             "1-worker capacity)")
    parser.add_argument("--fresh-load", type=float, default=0.5,
                        help="the freshness run's rate as a share of the 1-worker capacity")
    parser.add_argument("--fresh-seconds", type=float, default=30.0)
    parser.add_argument("--logs", default="/tmp/aichat-bench/logs")
    parser.add_argument("--with-shipper", action="store_true",
                        help="run a shipper beside the first pipeline run and record its consumer lag")
    parser.add_argument("--keep-as", default=None, metavar="NAME",
                        help="keep the first run's index as topic prefix NAME. and collection Name "
                             "(bench.query uses 'scifact')")
    parser.add_argument("--compare-model", nargs="*", default=[], metavar="MODEL",
                        help="also measure these models (raw encode, one pipeline worker) on the same documents")
    parser.add_argument("--out", type=Path, default=RESULTS / "ingest.json")
    args = parser.parse_args(argv)
    if args.limit is None:  # a kept index (bench.query) holds the whole corpus
        args.limit = 0 if args.keep_as else DEFAULT_LIMIT
    result = asyncio.run(main_async(args))
    raw = result["raw"]
    rows = [("raw encode (in process)", "-", raw["chunks"], raw["chunks_per_s"], "1.000", "-", "-"),
            (f"raw encode, windows of {raw['windowed']['window']}", "-", raw["chunks"],
             raw["windowed"]["chunks_per_s"], f"{raw['windowed']['chunks_per_s'] / raw['chunks_per_s']:.3f}",
             "-", "-")]
    rows += [(f"pipeline, {p['workers']} worker(s)", p["documents"], p["chunks"], p["chunks_per_s"],
              f"{p['ratio']:.3f}", " / ".join(f"{v:.2f}" for v in p["model_busy"]),
              " / ".join(f"{v:.0f}" for v in p["peak_rss_mb"])) for p in result["pipeline"]]
    print_table(["run", "docs", "chunks", "chunks/s", "ratio", "model busy", "peak RSS MB"], rows)
    f = result["freshness"]
    print_table(["freshness at", "docs", "p50 ms", "p95 ms", "max ms"],
                [(f"{f['rate_docs_per_s']} docs/s (capacity {f['capacity_docs_per_s']})", f["documents"], f["freshness_p50_ms"],
                  f["freshness_p95_ms"], f["freshness_max_ms"])])
    if result["compared_models"]:
        rows = [(result["model"], result["raw"]["chunks"], result["raw"]["chunks_per_s"],
                 result["pipeline"][0]["chunks_per_s"], result["pipeline"][0]["ratio"],
                 f"{result['pipeline'][0]['peak_rss_mb'][0]:.0f}", result["raw"]["query_embed_ms_p50"],
                 result["raw"]["query_embed_ms_in_batch_of_32"])]
        rows += [(c["model"], c["raw"]["chunks"], c["raw"]["chunks_per_s"], c["pipeline"]["chunks_per_s"],
                  c["pipeline"]["ratio"], f"{c['pipeline']['peak_rss_mb'][0]:.0f}",
                  c["raw"]["query_embed_ms_p50"], c["raw"]["query_embed_ms_in_batch_of_32"])
                 for c in result["compared_models"]]
        print_table(["model", "chunks", "raw chunks/s", "pipeline (1 worker)", "ratio", "worker RSS MB",
                     "question alone ms", "ms/question in 32"], rows)
    lagged = [p for p in result["pipeline"] if "shipper_lag_messages" in p]
    if lagged:
        lag = lagged[0]["shipper_lag_messages"]
        print_table(["shipper beside the ingest", "samples", "lag p50", "lag p95", "lag max", "lag at end"],
                    [("records behind", lag["samples"], lag["p50"], lag["p95"], lag["max"], lag["last"])])
    print(f"machine: {result['machine']['cpu']} ({result['machine']['cores']} cores); "
          f"model {result['model']}, backend {result['backend']}")
    save_result(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())

