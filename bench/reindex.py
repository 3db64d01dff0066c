"""Zero-downtime re-index under load: SciFact re-indexed twice and switched while questions come.

    .venv/bin/aichat stack up
    .venv/bin/python -m bench.reindex [--docs 1000] [--rate 5] [--hold 30] [--chunk-max-tokens 128]

On a topic prefix, serving name and consumer groups of its own (all dropped afterwards):

1. ``answer`` + ``ingest`` workers and a gateway, the way ``aichat up`` runs them; ``--docs``
   SciFact abstracts are published, then a twentieth of them updated and a fiftieth deleted,
   into a real collection under the serving name (a deployment from before aliases);
2. from then on ``--rate`` questions/s (Poisson arrivals, SciFact test queries, each over its
   own authenticated websocket) until the end;
3. ``aichat reindex start --collection <name>_v1`` (same settings) and, once caught up,
   ``switch --replace-collection`` (the migration: the real collection gives way to the alias);
4. ``start <name>_v2 --chunk-max-tokens N``; once caught up ``switch``, ``--hold`` seconds,
   ``rollback``, ``--hold`` seconds, ``switch`` again, ``drop <name>_v1``.

Reported per phase: questions answered, failed (an ``error`` frame, a timeout, a refused
connection), empty (``done`` without sources), done p50/p95; per step the command's wall
time and the alias move inside it; per generation the catch-up time, chunks, and whether
its (document, version) set equals what a clean ingest of the final documents gives.
Results in ``bench/results/reindex.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

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
from infra.generations import weaviate_rest
from infra.reindex.cli import status_of
from infra.reindex.workers import stop_workers
from infra.up import Child, wait_ready
from ingest.events import content_hash
from ingest.sdk import DocumentPublisher
from query_gateway.client import ask
from query_gateway.dev_jwt import mint
from schemas.events import DocumentEvent
from streams.config import WorkerSettings, load_settings

QUIET = Path("/tmp/aichat-quiet")


@dataclass(frozen=True)
class Asked:
    sent: float  # time.monotonic()
    outcome: str  # answered | empty | failed:<why>
    ms: float


class Load:
    """Open-model question load: Poisson arrivals, each question on a websocket of its own."""

    def __init__(self, url: str, questions: list[str], rate: float) -> None:
        self.url, self.questions, self.rate = url, questions, rate
        self.asked: list[Asked] = []
        self._running = True
        self._tasks: set[asyncio.Task[None]] = set()

    async def _one(self, n: int, question: str) -> None:
        sent = time.monotonic()
        outcome = "failed:no final frame"
        try:
            frames = [f async for f in ask(self.url, question, top_k=5, client_id=f"q{n}", idle_timeout_s=30)]
            last = frames[-1] if frames else {}
            sources = next((f["sources"] for f in frames if f["type"] == "sources"), [])
            if last.get("type") == "error":
                outcome = f"failed:{last.get('code', '?')}"
            elif last.get("type") == "done":
                outcome = "answered" if sources else "empty"
        except Exception as exc:  # noqa: BLE001 - every way a question can fail is counted
            outcome = f"failed:{type(exc).__name__}"
        self.asked.append(Asked(sent, outcome, (time.monotonic() - sent) * 1000))

    async def run(self, seed: int = 11) -> None:
        rng, n = random.Random(seed), 0
        while self._running:
            n += 1
            task = asyncio.create_task(self._one(n, rng.choice(self.questions)))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            await asyncio.sleep(rng.expovariate(self.rate))

    def halt(self) -> None:
        self._running = False

    async def stop(self) -> None:
        self.halt()
        await asyncio.gather(*list(self._tasks))

    def between(self, start: float, end: float) -> dict[str, Any]:
        part = [a for a in self.asked if start <= a.sent < end]
        counts = Counter("failed" if a.outcome.startswith("failed") else a.outcome for a in part)
        reasons = Counter(a.outcome[len("failed:"):] for a in part if a.outcome.startswith("failed"))
        done = [a.ms for a in part if a.outcome == "answered"]
        return {"asked": len(part), "answered": counts["answered"], "failed": counts["failed"],
                "empty": counts["empty"], "failed_by_reason": dict(reasons), "done_ms": percentiles(done)}


async def reindex(env: dict[str, str], *args: str) -> dict[str, Any]:
    """Run ``aichat reindex ARGS``; its wall time, and the alias move it reports."""
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "streams.cli", "--log-level", "WARNING", "reindex", *args,
        env={**os.environ, **env}, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 900)
    if proc.returncode != 0:
        raise RuntimeError(f"aichat reindex {' '.join(args)}: rc {proc.returncode}\n{out.decode()}\n{err.decode()[-3000:]}")
    text = out.decode()
    moved = re.search(r"(create|update|replace) in ([\d.]+) ms(?:, ([\d.]+) ms without either)?", text)
    step = {"command": " ".join(args), "wall_s": round(time.perf_counter() - started, 2)}
    if moved:
        step |= {"action": moved.group(1), "alias_move_ms": float(moved.group(2)),
                 "gap_ms": float(moved.group(3)) if moved.group(3) else 0.0}
    print(f"  {step}", flush=True)
    return step


async def caught_up(settings: WorkerSettings, name: str, documents: int, timeout_s: float = 1800) -> float:
    """Seconds until generation ``name`` holds ``documents`` and its group has nothing left."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        state = await status_of(settings)
        row = next(g for g in state["generations"] if g["collection"] == name)
        if row["behind"] == 0 and row["documents"] == documents:
            return round(time.monotonic() - started, 1)
        await asyncio.sleep(2)
    raise RuntimeError(f"{name} did not catch up within {timeout_s:.0f}s")


async def until(probe: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not await probe():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        await asyncio.sleep(1)


async def indexed(settings: WorkerSettings, collection: str) -> tuple[set[tuple[str, int]], int]:
    """The (doc_id, version) pairs of every chunk in ``collection``, and how many chunks (REST:
    GraphQL's Int has 32 bits, and SciFact's versions are microsecond timestamps)."""
    pairs: set[tuple[str, int]] = set()
    chunks, after = 0, ""
    async with weaviate_rest(settings) as http:
        while True:
            params: dict[str, str | int] = {"class": collection, "limit": 1000, **({"after": after} if after else {})}
            rows = (await http.get("/v1/objects", params=params)).json().get("objects") or []
            if not rows:
                return pairs, chunks
            chunks += len(rows)
            pairs |= {(r["properties"]["doc_id"], int(r["properties"]["version"])) for r in rows}
            after = rows[-1]["id"]


def corpus_events(args: argparse.Namespace) -> tuple[list[DocumentEvent], dict[str, int]]:
    """The documents, then a newer version of every 20th (new text) and a delete of every
    50th; the final version of each document left."""
    docs = load_corpus(args.corpus, args.docs)
    events = list(docs)
    final = {d.doc_id: d.version for d in docs}
    for i, doc in enumerate(docs):
        if i % 50 == 7:
            events.append(DocumentEvent(op="delete", doc_id=doc.doc_id, version=doc.version + 1))
            del final[doc.doc_id]
        elif i % 20 == 3:
            text = doc.text + " (Revised abstract.)"
            events.append(doc.model_copy(update={"version": doc.version + 1, "text": text,
                                                 "content_hash": content_hash(doc.title, text, doc.metadata)}))
            final[doc.doc_id] = doc.version + 1
    return events, final


async def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    unique = uuid.uuid4().hex[:8]
    serving, v1, v2 = f"Rx{unique}", f"Rx{unique}_v1", f"Rx{unique}_v2"
    secret_file = jwt_secret_file(tmp)
    gateway_port = free_port()
    env = {"AICHAT_TOPIC_PREFIX": f"rx{unique}.", "AICHAT_WEAVIATE_COLLECTION": serving,
           "AICHAT_ELASTIC_INDEX_PREFIX": f"rx{unique}", "AICHAT_LOG_FORMAT": "json",
           "AICHAT_LOG_LEVEL": "WARNING", "AICHAT_WORKER_DATA_DIR": str(tmp / unique / "worker"),
           "AICHAT_GATEWAY_AUTH": "jwt", "AICHAT_JWT_ALGORITHM": "HS256",
           "AICHAT_JWT_SECRET_FILE": str(secret_file), "AICHAT_GATEWAY_PORT": str(gateway_port),
           "AICHAT_GATEWAY_OPS_PORT": str(free_port()), "AICHAT_RATE_LIMIT_PER_MINUTE": "100000",
           "AICHAT_RATE_LIMIT_BURST": "10000", "AICHAT_MAX_CONNECTIONS_PER_CLIENT": "100000",
           "AICHAT_MAX_CONNECTIONS_PER_USER": "100000", "AICHAT_WORKER_HEALTH_URLS": "[]"}
    settings = load_settings(WorkerSettings).model_copy(update={
        "topic_prefix": env["AICHAT_TOPIC_PREFIX"], "weaviate_collection": serving,
        "elastic_index_prefix": env["AICHAT_ELASTIC_INDEX_PREFIX"], "worker_data_dir": tmp / unique / "worker"})
    logs = tmp / unique / "logs"
    groups = [WorkerGroup(role, 1, env, logs) for role in ("answer", "ingest")]
    gateway = Child("gateway", [sys.executable, "-m", "streams.cli", "gateway"],
                    f"http://127.0.0.1:{gateway_port}/health/live", logs / "gateway.log")
    token = mint(secret_file.read_text().strip(), user="bench", tenant="default", ttl_s=7200)
    load = Load(f"ws://127.0.0.1:{gateway_port}/ws?token={token}", test_questions(EVAL_ROOT / "scifact"), args.rate)
    marks: list[tuple[str, float]] = []
    steps: list[dict[str, Any]] = []
    generations: dict[str, dict[str, Any]] = {}
    try:
        for group in groups:
            group.start()
        gateway.start(env=groups[0].env)
        wait_ready(gateway, timeout_s=120)
        events, final = corpus_events(args)
        started = time.monotonic()
        async with DocumentPublisher(settings) as publisher:
            async for delivery in publisher.publish_many(events, window=512):
                if not delivery.ok:
                    raise RuntimeError(f"publish failed: {delivery.error}")
        async def legacy_done() -> bool:
            return (await indexed(settings, serving))[0] == set(final.items())

        print(f"published {len(events)} events ({len(final)} documents left after updates and deletes)", flush=True)
        await until(legacy_done, 1800, "the documents indexed")
        print(f"{len(events)} events, {len(final)} documents indexed in {time.monotonic() - started:.0f}s; "
              f"{args.rate:g} questions/s from now on", flush=True)
        driver = asyncio.create_task(load.run())
        marks.append(("serving the real collection", time.monotonic()))
        steps.append(await reindex(env, "start", "--collection", v1))
        generations[v1] = {"catch_up_s": await caught_up(settings, v1, len(final))}
        groups[1].stop()  # the real collection's own ingest worker: the switch deletes what it writes
        async def left() -> bool:  # its member leaves the group (or times out)
            return not (await status_of(settings))["legacy"]["members"]

        await until(left, 60, "the stopped ingest worker out of its group")
        marks.append((f"migration: {v1} replaces the collection", time.monotonic()))
        steps.append(await reindex(env, "switch", v1, "--replace-collection"))
        marks.append((f"{v1} serves, {v2} builds", time.monotonic()))
        steps.append(await reindex(env, "start", "--collection", v2, "--chunk-max-tokens", str(args.chunk_max_tokens),
                                   "--chunk-overlap-tokens", str(args.chunk_max_tokens // 8)))
        generations[v2] = {"catch_up_s": await caught_up(settings, v2, len(final))}
        for name in (v1, v2):
            pairs, chunks = await indexed(settings, name)
            generations[name] |= {"chunks": chunks, "equals_clean_ingest": pairs == set(final.items())}
        for label, command in ((f"switched to {v2}", ("switch", v2)), (f"rolled back to {v1}", ("rollback",)),
                               (f"switched to {v2} again", ("switch", v2))):
            marks.append((label, time.monotonic()))
            steps.append(await reindex(env, *command))
            await asyncio.sleep(args.hold)
        marks.append((f"{v1} dropped", time.monotonic()))
        steps.append(await reindex(env, "drop", v1))
        await asyncio.sleep(args.hold)
        await load.stop()
        await driver
        ends = [t for _, t in marks[1:]] + [time.monotonic()]
        phases = [{"phase": label, "seconds": round(end - start, 1), **load.between(start, end)}
                  for (label, start), end in zip(marks, ends, strict=True)]
        total = load.between(marks[0][1], ends[-1])
        return {"docs": args.docs, "events": len(events), "documents_final": len(final), "rate_qps": args.rate,
                "hold_s": args.hold, "chunk_max_tokens_v2": args.chunk_max_tokens, "phases": phases,
                "total": total, "steps": steps, "generations": generations}
    finally:
        load.halt()
        gateway.stop()
        for group in reversed(groups):
            group.stop()
        for name in (v1, v2):
            stop_workers(settings, name)
        async with weaviate_rest(settings) as http:
            await http.delete(f"/v1/aliases/{serving}")
            for name in (v1, v2):
                for collection in (name, f"{name}Docs"):
                    await http.delete(f"/v1/schema/{collection}")
        await drop_state(settings)


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=EVAL_ROOT / "scifact" / "corpus.jsonl")
    parser.add_argument("--docs", type=int, default=1000, help="SciFact abstracts")
    parser.add_argument("--rate", type=float, default=5.0, help="questions per second (Poisson)")
    parser.add_argument("--hold", type=float, default=30.0, help="seconds of load after each switch")
    parser.add_argument("--chunk-max-tokens", type=int, default=128, help="the second generation's chunks")
    parser.add_argument("--out", type=Path, default=RESULTS / "reindex.json")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)  # `timeout` must still stop the workers and drop the state
    tmp = Path("/tmp/aichat-bench/reindex")
    quiet = not QUIET.exists()
    if quiet:
        QUIET.touch()  # others wait with their tests and benchmarks while this measures
    try:
        result = asyncio.run(run(args, tmp))
    finally:
        if quiet:
            QUIET.unlink(missing_ok=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(orjson.dumps({"machine": machine_info(), **result}, option=orjson.OPT_INDENT_2) + b"\n")
    print_table(["phase", "s", "asked", "answered", "failed", "empty", "done p50", "done p95"],
                [(p["phase"], p["seconds"], p["asked"], p["answered"], p["failed"], p["empty"],
                  p["done_ms"]["p50"], p["done_ms"]["p95"]) for p in result["phases"]])
    t = result["total"]
    print(f"total: {t['asked']} asked, {t['answered']} answered, {t['failed']} failed {t['failed_by_reason']}, "
          f"{t['empty']} empty")
    print_table(["step", "wall s", "alias move ms", "gap ms"],
                [(s["command"], s["wall_s"], s.get("alias_move_ms", "-"), s.get("gap_ms", "-"))
                 for s in result["steps"]])
    print_table(["generation", "catch-up s", "chunks", "= clean ingest"],
                [(name, g["catch_up_s"], g["chunks"], g["equals_clean_ingest"])
                 for name, g in result["generations"].items()])
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
