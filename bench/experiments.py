"""An A/B test over the real system, with simulated feedback, and its report.

    python -m bench.experiments [--users 80] [--questions 4] [--variants default bm25]

It starts its own isolated system on the local stack (topic prefix, collection and
index prefix of its own; one ``pipeline`` worker, a shipper, a gateway with an
experiments file of the two variants at equal weight), ingests the sample corpus
(``ingest/sample``, Korean and English), and lets ``--users`` simulated users (each
their own JWT, so the gateway assigns each a variant by the hash of (tenant, user))
ask ``--questions`` questions each over the websocket. A user rates an answer with
probability ``--rate-prob``: thumbs up when the document the question is about (written
down beside each question below) is the first source, else thumbs down — so the ratings
follow each variant's real retrieval, nothing is scripted per variant. Then it waits
until the shipper has merged every rating into the summaries and prints the report
``aichat experiments report`` prints (infra/experiments/report.py), and saves it with
the run's facts in ``bench/results/experiments.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from websockets.asyncio.client import connect

from bench.common import RESULTS, free_port, machine_info, save_result
from infra.cleanup import drop_isolated_state
from infra.experiments.report import build_report, fetch_summaries, render
from infra.up import Child, wait_ready
from query_gateway.dev_jwt import mint
from streams.config import WorkerSettings
from streams.elastic_sink import elastic_client
from streams.es_documents import summary_index

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT = "bench-ab"

#: question → the title of the sample document that answers it
QUESTIONS = {
    "How many days of paid vacation does an employee get?": "Vacation policy",
    "Can unused vacation days be carried over?": "Vacation policy",
    "How far in advance must a long vacation be requested?": "Vacation policy",
    "What is the daily meal allowance on business trips?": "Expense reports",
    "Within how many days must receipts be submitted?": "Expense reports",
    "Which class are short flights booked in?": "Expense reports",
    "How quickly must the on-call engineer acknowledge a page?": "On-call rotation",
    "When does the on-call rotation start?": "On-call rotation",
    "What compensation does an on-call week give?": "On-call rotation",
    "원격 근무는 일주일에 며칠 가능한가요?": "원격 근무 정책",
    "핵심 협업 시간은 언제인가요?": "원격 근무 정책",
    "비밀번호는 얼마나 자주 바꿔야 하나요?": "정보 보안 수칙",
    "노트북을 잃어버리면 어디에 신고하나요?": "정보 보안 수칙",
    "배우자 출산 휴가는 며칠인가요?": "출산 및 육아 휴가",
    "육아 휴직은 언제까지 신청해야 하나요?": "출산 및 육아 휴가",
    "자격증 응시료는 얼마까지 지원되나요?": "교육 및 자기계발 지원",
    "도서 구입비 지원 한도는 얼마인가요?": "교육 및 자기계발 지원",
}


def experiments_file(path: Path, variants: list[str]) -> Path:
    arms = "".join(f'[[experiment.variant]]\nvariant = "{v}"\nweight = 1\n' for v in variants)
    path.write_text(f'[[experiment]]\nname = "{EXPERIMENT}"\n{arms}', encoding="utf-8")
    return path


def system_env(tmp: Path, variants: list[str]) -> dict[str, str]:
    unique = uuid.uuid4().hex[:8]
    secret = tmp / "jwt.secret"
    secret.write_text(secrets.token_urlsafe(48), encoding="utf-8")
    worker_port = free_port()
    return {
        "AICHAT_TOPIC_PREFIX": f"abx{unique}.", "AICHAT_TOPIC_PARTITIONS": "2",
        "AICHAT_WEAVIATE_COLLECTION": f"Abx{unique}", "AICHAT_ELASTIC_INDEX_PREFIX": f"abx{unique}",
        "AICHAT_GATEWAY_AUTH": "jwt", "AICHAT_JWT_ALGORITHM": "HS256", "AICHAT_JWT_SECRET_FILE": str(secret),
        "AICHAT_RATE_LIMIT_PER_MINUTE": "100000", "AICHAT_RATE_LIMIT_BURST": "10000",
        "AICHAT_GATEWAY_PORT": str(free_port()), "AICHAT_GATEWAY_OPS_PORT": str(free_port()),
        "AICHAT_WORKER_WEB_PORT": str(worker_port), "AICHAT_SHIPPER_WEB_PORT": str(free_port()),
        "AICHAT_WORKER_HEALTH_URLS": f'["http://127.0.0.1:{worker_port}/health/ready"]',
        "AICHAT_WORKER_DATA_DIR": str(tmp / "worker"), "AICHAT_LOG_FORMAT": "json",
        "AICHAT_LOG_LEVEL": "WARNING",
        "AICHAT_EXPERIMENTS_FILE": str(experiments_file(tmp / "experiments.toml", variants)),
    }


async def one_user(url: str, questions: list[str], rate_prob: float, rng: random.Random,
                   out: dict[str, Any]) -> None:
    async with connect(url) as ws:
        for n, text in enumerate(questions):
            await ws.send(orjson.dumps({"type": "query", "id": f"q{n}", "text": text}).decode())
            query_id, first = None, None
            while True:
                frame = orjson.loads(await ws.recv())
                if frame["type"] == "ack":
                    query_id = frame["query_id"]
                elif frame["type"] == "sources":
                    first = frame["sources"][0]["title"] if frame["sources"] else None
                elif frame["type"] in ("done", "error"):
                    break
            out["asked"] += 1
            if frame["type"] != "done" or query_id is None or rng.random() >= rate_prob:
                continue
            rating = 1 if first == QUESTIONS[text] else -1
            await ws.send(orjson.dumps({"type": "feedback", "id": f"f{n}", "query_id": query_id,
                                        "rating": rating}).decode())
            reply = orjson.loads(await ws.recv())
            out["rated" if reply["type"] == "feedback_ack" else "refused"] += 1


async def rated_summaries(settings: WorkerSettings) -> int:
    es = elastic_client(settings)
    try:
        result = await es.count(index=summary_index(settings.elastic_index_prefix),
                                query={"exists": {"field": "aichat.feedback.rating"}},
                                ignore_unavailable=True)
        return int(result["count"])
    finally:
        await es.close()


async def wait_indexed(settings: WorkerSettings, documents: int, timeout_s: float = 120) -> None:
    """Until the indexer has said ``indexed`` for every sample document (shipped events)."""
    es = elastic_client(settings)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            result = await es.count(index=f"{settings.elastic_index_prefix}-2*", ignore_unavailable=True,
                                    allow_no_indices=True, query={"bool": {"filter": [
                                        {"term": {"event.dataset": "aichat.indexed"}},
                                        {"term": {"aichat.outcome": "indexed"}}]}})
            if int(result["count"]) >= documents:
                return
            await asyncio.sleep(1)
        raise TimeoutError(f"the {documents} sample documents were not indexed within {timeout_s:g} s")
    finally:
        await es.close()


async def run(args: argparse.Namespace, env: dict[str, str], settings: WorkerSettings,
              secret: str, documents: int) -> dict[str, Any]:
    await wait_indexed(settings, documents)
    url = f"ws://127.0.0.1:{env['AICHAT_GATEWAY_PORT']}/ws"
    rng = random.Random(args.seed)
    counts = {"asked": 0, "rated": 0, "refused": 0}
    pool = list(QUESTIONS)
    started = time.monotonic()
    users = [f"user-{i:04d}" for i in range(args.users)]
    for batch in range(0, len(users), args.concurrency):
        await asyncio.gather(*(
            one_user(f"{url}?token={mint(secret, user=u, tenant='default', ttl_s=3600)}",
                     rng.sample(pool, args.questions), args.rate_prob, random.Random(f"{args.seed}/{u}"),
                     counts)
            for u in users[batch:batch + args.concurrency]))
    asked_s = time.monotonic() - started
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # until the shipper merged every rating
        if await rated_summaries(settings) >= counts["rated"]:
            break
        await asyncio.sleep(1)
    await asyncio.sleep(2)  # the last answer summaries of the same bulk window
    report = build_report(EXPERIMENT, await fetch_summaries(settings, EXPERIMENT), control=args.variants[0])
    return {"machine": machine_info(), "users": args.users, "questions_per_user": args.questions,
            "rate_prob": args.rate_prob, "variants": args.variants, "seed": args.seed,
            "asked": counts["asked"], "rated": counts["rated"], "refused": counts["refused"],
            "asking_s": round(asked_s, 1), "merged_ratings": await rated_summaries(settings),
            "report": report}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=80)
    parser.add_argument("--questions", type=int, default=4, help="questions per user")
    parser.add_argument("--rate-prob", type=float, default=0.7, help="chance a user rates an answer")
    parser.add_argument("--variants", nargs=2, default=["default", "bm25"], metavar="VARIANT")
    parser.add_argument("--concurrency", type=int, default=8, help="users asking at once")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--out", type=Path, default=RESULTS / "experiments.json")
    args = parser.parse_args(argv)
    tmp = Path(f"/tmp/aichat-bench/experiments-{uuid.uuid4().hex[:6]}")
    tmp.mkdir(parents=True)
    env = system_env(tmp, args.variants)
    settings = WorkerSettings(**{k[len("AICHAT_"):].lower(): v for k, v in env.items()
                                 if k[len("AICHAT_"):].lower() in WorkerSettings.model_fields})
    full_env = {**os.environ, **env}
    cli = [sys.executable, "-m", "streams.cli"]
    children = [
        Child("pipeline", [*cli, "worker", "--role", "pipeline", "--web-port", env["AICHAT_WORKER_WEB_PORT"]],
              f"http://127.0.0.1:{env['AICHAT_WORKER_WEB_PORT']}/health/ready", tmp / "pipeline.log"),
        Child("shipper", [*cli, "worker", "--role", "shipper", "--web-port", env["AICHAT_SHIPPER_WEB_PORT"]],
              f"http://127.0.0.1:{env['AICHAT_SHIPPER_WEB_PORT']}/health/ready", tmp / "shipper.log"),
        Child("gateway", [*cli, "gateway"], f"http://127.0.0.1:{env['AICHAT_GATEWAY_PORT']}/health/live",
              tmp / "gateway.log"),
    ]
    try:
        for child in children:
            child.start(env=full_env)
        for child in children:
            wait_ready(child, timeout_s=300)
        subprocess.run([*cli, "ingest", str(ROOT / "ingest" / "sample"), "--tenant", "default"],
                       env=full_env, check=True, timeout=300, stdout=subprocess.DEVNULL)
        secret = Path(env["AICHAT_JWT_SECRET_FILE"]).read_text(encoding="utf-8").strip()
        documents = len(list((ROOT / "ingest" / "sample").glob("*.md")))
        result = asyncio.run(run(args, env, settings, secret, documents))
    finally:
        for child in reversed(children):
            child.stop()
        asyncio.run(drop_isolated_state(settings))
    print(render(result["report"]))
    print(f"\n{result['asked']} questions asked by {args.users} users in {result['asking_s']} s; "
          f"{result['rated']} ratings sent, {result['merged_ratings']} merged into summaries")
    save_result(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
