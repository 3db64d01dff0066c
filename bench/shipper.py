"""Sustained throughput of the shipper into Elasticsearch.

    .venv/bin/aichat stack up
    .venv/bin/python -m bench.shipper [--events 40000] [--bulk 500 2000]

The topics of an isolated prefix are filled first with a realistic mix — per
document: one document event, chunks, embeddings (with 384-float vectors, which
the shipper drops), one ``indexed`` ack; per question: the query, sources, ~30
tokens, done (so the summaries are built too), and log records — then one
``aichat worker --role shipper`` starts and drains them. Events/s is counted
from the first to the last record visible in Elasticsearch (start-up excluded).
Results are printed and written to ``bench/results/shipper.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import orjson
from aiokafka import AIOKafkaProducer

from bench.common import RESULTS, WorkerGroup, drop_state, machine_info, print_table
from infra.kafka.topics import ensure_topics
from schemas.codec import encode, pack_vector
from schemas.events import (
    AnswerEvent,
    ChunkEvent,
    DocumentEvent,
    DocumentIndexed,
    EmbeddedChunk,
    Event,
    QueryEvent,
    ReplyRoute,
    Source,
    chunk_uuid,
)
from streams.config import WorkerSettings, load_settings
from streams.ecs_logging import EcsJsonFormatter
from streams.endpoints import elastic_http_options


def records(settings: WorkerSettings, n_events: int) -> list[tuple[str, bytes, bytes]]:
    """(topic, key, value) — about ``n_events`` of them, in a realistic mix."""
    out: list[tuple[str, bytes, bytes]] = []
    vector = pack_vector(np.random.default_rng(7).random(384, dtype=np.float32))
    fmt = EcsJsonFormatter(service_name="aichat-pipeline")
    n = 0
    while len(out) < n_events:
        n += 1
        doc_id = f"bench/{n}"
        doc = DocumentEvent(doc_id=doc_id, version=1, title=f"Doc {n}", text="lorem ipsum " * 150)
        events: list[tuple[str, Event]] = [("documents", doc)]
        for seq in range(4):
            chunk = dict(chunk_id=chunk_uuid(doc_id, 1, seq), doc_id=doc_id, version=1, seq=seq,
                         n_chunks=4, text="lorem ipsum " * 35, trace_id=doc.trace_id)
            events.append(("chunks", ChunkEvent(**chunk)))
            events.append(("embeddings", EmbeddedChunk(**chunk, vector=vector, dim=384,
                                                       model="all-MiniLM-L6-v2")))
        events.append(("indexed", DocumentIndexed(doc_id=doc_id, version=1, outcome="indexed",
                                                  n_chunks=4, freshness_ms=350.0, trace_id=doc.trace_id)))
        out += [(settings.topic(t), doc_id.encode(), encode(e)) for t, e in events]
        if n % 2 == 0:  # a question every other document
            qid = str(uuid.uuid4())
            q = QueryEvent(query_id=qid, trace_id=qid, text="How many vacation days?",
                           reply_to=ReplyRoute(topic=settings.topic("answers"), partition=0),
                           deadline=datetime.now(UTC) + timedelta(seconds=10))
            answers = [AnswerEvent(trace_id=qid, query_id=qid, seq=0, kind="sources",
                                   sources=[Source(doc_id=doc_id, chunk_id="c", score=0.5, snippet="x" * 200)])]
            answers += [AnswerEvent(trace_id=qid, query_id=qid, seq=i, kind="token", delta="word ")
                        for i in range(1, 31)]
            answers.append(AnswerEvent(trace_id=qid, query_id=qid, seq=31, kind="done",
                                       timings_ms={"embed": 20.0, "search": 4.0, "total": 60.0}))
            out.append((settings.topic("queries"), qid.encode(), encode(q)))
            out += [(settings.topic("answers"), qid.encode(), encode(a)) for a in answers]
            record = logging.LogRecord("streams.agents.answerer", logging.INFO, __file__, 1,
                                       "answered %s", (qid,), None)
            record.trace_id, record.query_id = qid, qid
            out.append((settings.topic("logs"), b"aichat-pipeline", fmt.format(record).encode()))
    return out


async def fill(settings: WorkerSettings, recs: list[tuple[str, bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all",
                                linger_ms=20, max_batch_size=1 << 20)
    await producer.start()
    try:
        futures = [await producer.send(t, v, key=k) for t, k, v in recs]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def es_count(settings: WorkerSettings) -> int:
    async with httpx.AsyncClient(**elastic_http_options(settings), timeout=30) as http:
        response = await http.get(f"/{settings.elastic_index_prefix}-*/_count",
                                  params={"q": "kafka.offset:*"})
        return int(response.json().get("count", 0)) if response.status_code == 200 else 0


async def one_run(base: WorkerSettings, n_events: int, bulk: int, logs: Path) -> dict[str, object]:
    unique = uuid.uuid4().hex[:8]
    env = {"AICHAT_TOPIC_PREFIX": f"b{unique}.", "AICHAT_ELASTIC_INDEX_PREFIX": f"bench-{unique}",
           "AICHAT_ELASTIC_BULK_SIZE": str(bulk), "AICHAT_TOPIC_PARTITIONS": "4",
           "AICHAT_LOG_SHIP": "false", "AICHAT_LOG_FORMAT": "json",
           "AICHAT_WORKER_DATA_DIR": str(logs / unique)}
    settings = base.model_copy(update={"topic_prefix": env["AICHAT_TOPIC_PREFIX"],
                                       "elastic_index_prefix": env["AICHAT_ELASTIC_INDEX_PREFIX"],
                                       "topic_partitions": 4})
    await ensure_topics(settings)
    recs = records(settings, n_events)
    await fill(settings, recs)
    group = WorkerGroup("shipper", 1, env, logs)
    started = time.monotonic()
    group.start()
    try:
        first_at = None
        count = 0
        while count < len(recs):
            count = await es_count(settings)
            if count and first_at is None:
                first_at = time.monotonic()
            if time.monotonic() - started > 900:
                raise SystemExit(f"shipper did not finish: {count}/{len(recs)}")
            await asyncio.sleep(0.25)
        done_at = time.monotonic()
    finally:
        group.stop()
        await drop_state(settings)
    assert first_at is not None
    seconds = done_at - first_at
    return {"events": len(recs), "bulk_size": bulk, "seconds": round(seconds, 1),
            "events_per_s": round(len(recs) / seconds), "peak_rss_mb": group.peak_rss_mb()[0]}


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.shipper")
    parser.add_argument("--events", type=int, default=40_000)
    parser.add_argument("--bulk", type=int, nargs="+", default=[500, 2000])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("aiokafka").setLevel(logging.ERROR)  # leader elections of the new topics
    base = load_settings(WorkerSettings)
    logs = Path(os.environ.get("TMPDIR", "/tmp")) / "bench-shipper"
    rows = [await one_run(base, args.events, bulk, logs) for bulk in args.bulk]
    print_table(["events", "bulk size", "seconds", "events/s", "shipper peak RSS MiB"],
                [[r["events"], r["bulk_size"], r["seconds"], r["events_per_s"], r["peak_rss_mb"]]
                 for r in rows])
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "shipper.json"
    out.write_text(orjson.dumps({"machine": machine_info(), "runs": rows},
                                option=orjson.OPT_INDENT_2).decode())
    print(f"\nwritten to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
