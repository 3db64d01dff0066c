"""1,000 idle authenticated websockets held by one gateway: its RSS, and queries answered meanwhile.

    .venv/bin/aichat stack up
    .venv/bin/python -m bench.gateway_idle [--connections 1000] [--queries 20]

On the real Kafka and Weaviate, with its own topics and collection: one ``pipeline``
worker (the answerer) and one gateway process with JWT auth on. Each connection
authenticates with its own user's token and proves it is open with a ``ping``.
While all of them are held, ``--queries`` questions are asked by other users
(default rate limits apply), one after the other. Printed as a table and merged into ``bench/results/query.json`` under
``idle_connections`` and ``gateway_rss_mb`` (plus ``gateway_idle`` with the
details); the goal is RSS < 300 MB with every query answered.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
from websockets.asyncio.client import ClientConnection

from bench.common import (
    RESULTS,
    drop_state,
    free_port,
    machine_info,
    percentile,
    print_table,
    rss_mb,
)
from infra.kafka.topics import ensure_topics
from infra.up import Child, wait_ready
from ingest.sdk import DocumentPublisher
from query_gateway.client import ask, connect_gateway
from query_gateway.dev_jwt import mint
from schemas.events import DocumentEvent
from streams.config import WorkerSettings, load_settings

GOAL_RSS_MB = 300.0
DOCS = {
    "idle/vacation": ("Vacation policy", "Every employee receives 25 days of paid vacation per year."),
    "idle/on-call": ("On-call rotation", "The on-call engineer acknowledges a page within 15 minutes."),
}
QUESTION = "How many days of paid vacation does an employee receive?"


async def hold(url: str, token: str) -> ClientConnection:
    ws = await connect_gateway(url, token=token, open_timeout_s=30, ping_interval=None)
    await ws.send('{"type":"ping"}')
    reply = orjson.loads(await asyncio.wait_for(ws.recv(), 30))
    if reply != {"type": "pong"}:
        raise RuntimeError(f"unexpected first frame {reply}")
    return ws


async def alive(ws: ClientConnection) -> bool:
    try:
        await ws.send('{"type":"ping"}')
        return orjson.loads(await asyncio.wait_for(ws.recv(), 30)) == {"type": "pong"}
    except Exception:
        return False


async def open_connections(url: str, secret: str, n: int, batch: int = 50) -> list[ClientConnection]:
    held: list[ClientConnection] = []
    for start in range(0, n, batch):
        tokens = [mint(secret, user=f"idle-{i}", ttl_s=3600) for i in range(start, min(n, start + batch))]
        held += await asyncio.gather(*(hold(url, t) for t in tokens))
    return held


async def open_gauge(http_base: str) -> float:
    async with httpx.AsyncClient(timeout=10) as http:
        text = (await http.get(f"{http_base}/metrics")).text
    return next(float(line.split()[1]) for line in text.splitlines()
                if line.startswith("aichat_gateway_open_connections "))


async def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    unique = uuid.uuid4().hex[:8]
    secret_file = tmp / "jwt.secret"
    secret_file.write_text(secrets.token_urlsafe(48), encoding="utf-8")
    secret = secret_file.read_text(encoding="utf-8").strip()
    worker_port, gateway_port, ops_port = free_port(), free_port(), free_port()
    env = {
        "AICHAT_TOPIC_PREFIX": f"bidle{unique}.",
        "AICHAT_TOPIC_PARTITIONS": "1",
        "AICHAT_WEAVIATE_COLLECTION": f"Bidle{unique}",
        "AICHAT_GATEWAY_AUTH": "jwt",
        "AICHAT_JWT_ALGORITHM": "HS256",
        "AICHAT_JWT_SECRET_FILE": str(secret_file),
        "AICHAT_GATEWAY_PORT": str(gateway_port),
        "AICHAT_GATEWAY_OPS_PORT": str(ops_port),  # /metrics lives on the operator listener
        # every idle client comes from this one address: the per-address cap would refuse them
        "AICHAT_MAX_CONNECTIONS_PER_CLIENT": str(args.connections + 100),
        "AICHAT_WORKER_HEALTH_URLS": f'["http://127.0.0.1:{worker_port}/health/ready"]',
        "AICHAT_WORKER_DATA_DIR": str(tmp / "worker"),
        "AICHAT_LOG_LEVEL": "WARNING",
        "AICHAT_LOG_FORMAT": "json",
    }
    settings = load_settings(WorkerSettings, **{k[7:].lower(): v for k, v in env.items()
                                                if k[7:].lower() in WorkerSettings.model_fields})
    await ensure_topics(settings)
    child_env = {**os.environ, **env}
    worker = Child("pipeline", [sys.executable, "-m", "streams.cli", "worker", "--role", "pipeline",
                                "--web-port", str(worker_port)],
                   f"http://127.0.0.1:{worker_port}/health/ready", tmp / "logs" / "pipeline.log")
    gateway = Child("gateway", [sys.executable, "-m", "streams.cli", "gateway"],
                    f"http://127.0.0.1:{gateway_port}/health/live", tmp / "logs" / "gateway.log")
    held: list[ClientConnection] = []
    try:
        worker.start(env=child_env)
        gateway.start(env=child_env)
        await asyncio.to_thread(wait_ready, gateway, 120)
        await asyncio.to_thread(wait_ready, worker, 300)
        assert gateway.proc is not None
        http_base = f"http://127.0.0.1:{ops_port}"
        url = f"ws://127.0.0.1:{gateway_port}/ws"
        async with DocumentPublisher(settings) as publisher:
            for doc_id, (title, text) in DOCS.items():
                await publisher.publish(DocumentEvent(doc_id=doc_id, version=1, title=title, text=text))
        token = mint(secret, user="asker", ttl_s=3600)
        deadline = time.monotonic() + 120
        while True:  # until the sample documents are searchable
            frames = [f async for f in ask(url, QUESTION, token=token, idle_timeout_s=30)]
            if any(s["doc_id"] == "idle/vacation" for f in frames if f["type"] == "sources" for s in f["sources"]):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("the sample documents did not become searchable")
            await asyncio.sleep(1)
        await asyncio.sleep(2)
        rss_before = rss_mb(gateway.proc.pid)

        started = time.monotonic()
        held = await open_connections(url, secret, args.connections)
        connect_s = time.monotonic() - started
        await asyncio.sleep(args.settle_s)
        open_now = await open_gauge(http_base)
        rss_held = rss_mb(gateway.proc.pid)

        done_ms: list[float] = []
        failures: list[str] = []
        for i in range(args.queries):  # other users than the idle ones, within their budgets
            sent = time.perf_counter()
            asker = mint(secret, user=f"asker-{i}", ttl_s=600)
            frames = [f async for f in ask(url, QUESTION, token=asker, client_id=f"b{i}", idle_timeout_s=30)]
            if frames[-1]["type"] == "done":
                done_ms.append((time.perf_counter() - sent) * 1000)
            else:
                failures.append(str(frames[-1]))
        rss_peak = max(rss_held, rss_mb(gateway.proc.pid))
        still_open = sum(await asyncio.gather(*(alive(ws) for ws in held)))
        return {
            "idle_connections": still_open,
            "gateway_rss_mb": round(rss_peak, 1),
            "gateway_idle": {
                "connections_requested": args.connections,
                "connections_open_gauge": open_now,
                "connections_alive_after_queries": still_open,
                "connect_s": round(connect_s, 2),
                "rss_mb_before": round(rss_before, 1),
                "rss_mb_held": round(rss_held, 1),
                "rss_mb_peak": round(rss_peak, 1),
                "rss_kb_per_connection": round((rss_held - rss_before) * 1024 / max(1, len(held)), 1),
                "queries": args.queries,
                "answered": len(done_ms),
                "failures": failures[:5],
                "done_ms_p50": round(percentile(done_ms, 50), 1),
                "done_ms_p95": round(percentile(done_ms, 95), 1),
                "goal_rss_mb": GOAL_RSS_MB,
                "meets_goal": rss_peak < GOAL_RSS_MB and len(done_ms) == args.queries
                and still_open == args.connections,
            },
        }
    finally:
        for ws in held:
            with contextlib.suppress(Exception):
                await ws.close()
        gateway.stop()
        worker.stop()
        await drop_state(settings)


def merge(path: Path, result: dict[str, Any]) -> None:
    data: dict[str, Any] = {}
    if path.exists():
        data = orjson.loads(path.read_bytes())
    data.setdefault("machine", machine_info())
    data.update(result)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gateway_idle", description=__doc__.split("\n")[0])
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=20, help="asked while the connections are held")
    parser.add_argument("--settle-s", type=float, default=5.0, help="idle time before measuring RSS")
    parser.add_argument("--out", type=Path, default=RESULTS / "query.json")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-idle-") as tmp:
        result = asyncio.run(run(args, Path(tmp)))
    detail = result["gateway_idle"]
    print_table(
        ("connections", "alive", "RSS before MB", "RSS held MB", "RSS peak MB", "KB/conn",
         "queries", "answered", "done p50 ms", "done p95 ms", "goal"),
        [(detail["connections_requested"], result["idle_connections"], detail["rss_mb_before"],
          detail["rss_mb_held"], detail["rss_mb_peak"], detail["rss_kb_per_connection"], detail["queries"],
          detail["answered"], detail["done_ms_p50"], detail["done_ms_p95"],
          "met" if detail["meets_goal"] else f"MISSED (< {GOAL_RSS_MB:g} MB)")],
    )
    merge(args.out, result)
    print(f"merged into {args.out}")
    return 0 if detail["meets_goal"] else 1


if __name__ == "__main__":
    sys.exit(main())
