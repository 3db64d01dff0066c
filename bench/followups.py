"""Follow-up retrieval quality: no conversation context / the offline method / the LLM rewrite.

    .venv/bin/python -m bench.followups            # → bench/results/followups.json

The set (``bench/data/followups/``): 24 short handbook documents (12 English, 12 Korean)
and 24 three-turn conversations, the document that answers each turn written beside it:
24 first turns that stand alone and 48 follow-ups ("Can I carry them over?", "숙박은요?").

1. The corpus is published onto ``followups.documents`` and indexed by a real ``ingest``
   worker (once; ``--reingest`` forces it).
2. Per method, a real ``answer`` worker runs with ``AICHAT_FOLLOWUP`` = ``off`` (the
   question alone), ``offline`` (streams/followups.py) or ``rewrite`` (streams/rewrite.py).
   Each conversation is asked turn by turn as ``QueryEvent``s with its own
   ``conversation_id``, each turn after the previous one's ``done``: the worker keeps the
   turns in the ``conversations`` topic and searches the follow-up with them, exactly as
   for a websocket client.
3. hit@5 and nDCG@10 (one relevant document per turn) of each turn's ranked ``sources``,
   for first turns and follow-ups, by language.

The rewrite needs an OpenAI-compatible server. None with a model runs on this machine, so
``rewrite`` runs against a scripted one started here (the kind the tests use): it answers
the rewrite request mechanically with the previous question followed by the new one, and
answers are a fixed sentence. That measures the path (the rewrite is requested, recorded
on the ``sources`` event, and searched), not the quality of a model's rewrite;
``--llm-url`` points it at a real server instead.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import re
import sys
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson

from bench.common import RESULTS, WorkerGroup, drop_state, free_port, machine_info, print_table
from bench.eval import QueryPath
from bench.ingest import pipeline_chunks, run_pipeline
from infra.kafka.topics import ensure_topics
from infra.weaviate.provision import ensure_collections
from schemas.codec import decode, encode
from schemas.events import AnswerEvent, DocumentEvent, QueryEvent, utc_now
from streams.config import WorkerSettings, load_settings
from streams.vectorstore import WeaviateStore

DATA = Path(__file__).resolve().parent / "data" / "followups"
METHODS = ("off", "offline", "rewrite")


def load_corpus(folder: Path = DATA / "corpus") -> list[DocumentEvent]:
    docs = []
    for path in sorted(folder.glob("*.md")):
        text = path.read_text(encoding="utf-8")
        title = text.splitlines()[0].lstrip("# ").strip()
        docs.append(DocumentEvent(doc_id=path.name, version=1, title=title, text=text,
                                  content_type="text/markdown", source_uri=path.name))
    return docs


def load_conversations(path: Path = DATA / "conversations.json") -> list[dict[str, Any]]:
    conversations: list[dict[str, Any]] = orjson.loads(path.read_bytes())["conversations"]
    return conversations


def hit_at(ranked: list[str], doc: str, k: int = 5) -> float:
    return 1.0 if doc in ranked[:k] else 0.0


def ndcg_at(ranked: list[str], doc: str, k: int = 10) -> float:
    """One relevant document: 1 / log2(rank + 1) when it is in the first ``k``."""
    return 1.0 / math.log2(ranked.index(doc) + 2) if doc in ranked[:k] else 0.0


class ConversationPath(QueryPath):
    """Sends turns onto ``queries``; collects each one's ranked sources and follow-up, until done."""

    def __init__(self, settings: WorkerSettings) -> None:
        super().__init__(settings)
        self.turns: dict[str, tuple[dict[str, Any], asyncio.Future[dict[str, Any]]]] = {}

    async def _read(self) -> None:
        async for record in self.consumer:
            event = decode(AnswerEvent, record.value)
            held = self.turns.get(event.query_id)
            if held is None or held[1].done():
                continue
            seen, fut = held
            if event.kind == "sources":
                seen["ranked"] = [s.doc_id for s in event.sources]
                seen["followup"] = event.followup.model_dump() if event.followup else None
            elif event.kind == "done":
                fut.set_result(seen)
            elif event.kind == "error" and event.error is not None:
                fut.set_exception(RuntimeError(f"{event.error.code}: {event.error.message}"))

    async def ask(self, text: str, conversation_id: str) -> dict[str, Any]:
        query = QueryEvent(text=text, top_k=10, reply_to=self.route, user="bench",
                           deadline=utc_now() + timedelta(seconds=60),
                           conversation_id=conversation_id)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.turns[query.query_id] = ({}, fut)
        try:
            await self.producer.send_and_wait(self.settings.topic("queries"), encode(query),
                                              key=query.query_id.encode())
            return await asyncio.wait_for(fut, 90)
        finally:
            self.turns.pop(query.query_id, None)


async def run_method(path: ConversationPath, conversations: list[dict[str, Any]],
                     concurrency: int) -> list[dict[str, Any]]:
    """Every turn of every conversation, each conversation's turns in order."""
    limit = asyncio.Semaphore(concurrency)
    rows: list[dict[str, Any]] = []

    async def one(conv: dict[str, Any]) -> None:
        cid = f"bench-{uuid.uuid4().hex[:12]}"
        async with limit:
            for n, turn in enumerate(conv["turns"]):
                seen = await path.ask(turn["q"], cid)
                ranked = seen.get("ranked", [])
                rows.append({"conversation": conv["id"], "lang": conv["lang"], "turn": n,
                             "q": turn["q"], "doc": turn["doc"], "ranked": ranked[:10],
                             "followup": seen.get("followup"),
                             "hit@5": hit_at(ranked, turn["doc"]),
                             "ndcg@10": round(ndcg_at(ranked, turn["doc"]), 4)})

    await asyncio.gather(*(one(c) for c in conversations))
    return rows


def score(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    groups = {"first turns": [r for r in rows if r["turn"] == 0],
              "follow-ups": [r for r in rows if r["turn"] > 0],
              "follow-ups en": [r for r in rows if r["turn"] > 0 and r["lang"] == "en"],
              "follow-ups ko": [r for r in rows if r["turn"] > 0 and r["lang"] == "ko"]}
    return {name: {"n": len(g), "hit@5": round(sum(r["hit@5"] for r in g) / len(g), 4),
                   "ndcg@10": round(sum(r["ndcg@10"] for r in g) / len(g), 4)}
            for name, g in groups.items() if g}


def scripted_llm_app() -> Any:
    """An OpenAI-compatible streaming endpoint that knows nothing: the rewrite of a follow-up
    is the previous question and the new one joined; an answer is a fixed sentence."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import StreamingResponse
    from starlette.routing import Route

    async def completions(request: Request) -> StreamingResponse:
        payload = orjson.loads(await request.body())
        user = next((m["content"] for m in payload["messages"] if m["role"] == "user"), "")
        if "Last question: " in user:
            asked = re.findall(r"^Question: (.*)$", user, flags=re.MULTILINE)
            last = user.rsplit("Last question: ", 1)[1].strip()
            text = f"{asked[-1]} {last}" if asked else last
        else:
            text = "A scripted answer [1]."

        async def stream() -> AsyncIterator[bytes]:
            chunk = {"choices": [{"index": 0, "delta": {"content": text}}]}
            yield b"data: " + orjson.dumps(chunk) + b"\n\ndata: [DONE]\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream")

    return Starlette(routes=[Route("/v1/chat/completions", completions, methods=["POST"])])


@contextlib.asynccontextmanager
async def scripted_llm() -> AsyncIterator[str]:
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(scripted_llm_app(), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())
    for _ in range(200):
        if server.started or task.done():
            break
        await asyncio.sleep(0.05)
    if not server.started:
        raise RuntimeError(f"the scripted LLM did not start on port {port}")
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        await task


async def ensure_index(docs: list[DocumentEvent], env: dict[str, str], settings: WorkerSettings,
                       logs: Path, reingest: bool) -> dict[str, Any]:
    await ensure_collections(settings)
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
        await ensure_topics(settings)
        await ensure_collections(settings)
    result = await run_pipeline(docs, len(pipeline_chunks(docs, settings)), 1, env, settings,
                                logs / "ingest")
    return {"documents": result["documents"], "chunks": result["chunks"], "reused": False}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    base = load_settings(WorkerSettings)
    env = {"AICHAT_TOPIC_PREFIX": "followups.", "AICHAT_WEAVIATE_COLLECTION": "Followups",
           "AICHAT_ELASTIC_INDEX_PREFIX": "bench-followups", "AICHAT_LOG_FORMAT": "json",
           "AICHAT_WORKER_DATA_DIR": "/tmp/aichat-bench/followups"}
    settings = base.model_copy(update={"topic_prefix": env["AICHAT_TOPIC_PREFIX"],
                                       "weaviate_collection": env["AICHAT_WEAVIATE_COLLECTION"],
                                       "elastic_index_prefix": env["AICHAT_ELASTIC_INDEX_PREFIX"]})
    logs = Path(args.logs)
    docs, conversations = load_corpus(), load_conversations()
    await ensure_topics(settings)
    ingest = await ensure_index(docs, env, settings, logs, args.reingest)
    print(f"index {settings.weaviate_collection}: {ingest}", flush=True)
    results: dict[str, Any] = {}
    async with contextlib.AsyncExitStack() as stack:
        llm_url = args.llm_url or await stack.enter_async_context(scripted_llm())
        for method in args.methods:
            method_env = {**env, "AICHAT_FOLLOWUP": method}
            if method == "rewrite":
                method_env |= {"AICHAT_GENERATOR": "openai", "AICHAT_GENERATOR_BASE_URL": llm_url,
                               "AICHAT_GENERATOR_MODEL": args.llm_model}
            workers = WorkerGroup("answer", 1, method_env, logs / method)
            workers.start()
            path = ConversationPath(settings)
            await path.start()
            try:
                started = time.perf_counter()
                rows = await run_method(path, conversations, args.concurrency)
            finally:
                await path.stop()
                workers.stop()
            results[method] = {"scores": score(rows), "seconds": round(time.perf_counter() - started, 1),
                               "followups_with_rewrite": sum(
                                   1 for r in rows if (r["followup"] or {}).get("rewrite")),
                               "turns": sorted(rows, key=lambda r: (r["conversation"], r["turn"]))}
            print(f"{method}: {results[method]['scores']}", flush=True)
    first = {m: results[m]["scores"]["first turns"] for m in results}
    return {
        "set": {"documents": len(docs), "conversations": len(conversations),
                "first_turns": len(conversations),
                "followups": sum(len(c["turns"]) - 1 for c in conversations)},
        "methods": {m: results[m]["scores"] for m in results},
        "first_turns_unchanged": len({orjson.dumps(v) for v in first.values()}) == 1,
        "rewrite_llm": ("scripted (path test: previous question + follow-up, not a model)"
                        if not args.llm_url else f"{args.llm_url} model {args.llm_model}"),
        "details": {m: {k: v for k, v in results[m].items() if k != "scores"} for m in results},
        "config": {"model": base.embed_model, "followup_turns": base.followup_turns,
                   "followup_decay": base.followup_decay,
                   "alpha": {"en": base.hybrid_alpha, "ko": base.hybrid_alpha_ko},
                   "fusion": base.hybrid_fusion},
        "ingest": ingest,
        "machine": machine_info(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--reingest", action="store_true", help="index the corpus again")
    parser.add_argument("--concurrency", type=int, default=6, help="conversations at once")
    parser.add_argument("--llm-url", default=None, help="a real OpenAI-compatible server for rewrite")
    parser.add_argument("--llm-model", default="scripted")
    parser.add_argument("--logs", default="/tmp/aichat-bench/followups-logs")
    parser.add_argument("--out", type=Path, default=RESULTS / "followups.json")
    args = parser.parse_args(argv)
    out = asyncio.run(main_async(args))
    print()
    rows = [[m, g, s["n"], s["hit@5"], s["ndcg@10"]]
            for m, groups in out["methods"].items() for g, s in groups.items()]
    print_table(["method", "turns", "n", "hit@5", "nDCG@10"], rows)
    print(f"\nfirst turns unchanged across methods: {out['first_turns_unchanged']}")
    print(f"rewrite LLM: {out['rewrite_llm']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(orjson.dumps(out, option=orjson.OPT_INDENT_2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
