"""Soak: mixed ingest and chat for a while under a chaos schedule, then the fault checker.

    .venv/bin/aichat stack up
    .venv/bin/python -m bench.soak [--minutes 20] [--docs-per-s 2] [--users 4]

The system under test is real and whole: its own 3-broker KRaft cluster (started by the
stack code on free ports, replication factor 3, ``min.insync.replicas`` 2), the main
stack's Elasticsearch and Weaviate, two ``pipeline`` workers in one group, a ``shipper``
and a gateway, each a process. While documents are published (new ones, new versions,
deletes) and users ask over websockets, every ``--fault-every`` seconds one fault from the
schedule lasts ``--fault-s`` seconds, in turn:

* ``broker``: kill -9 the Kafka node leading ``documents``[0], then start it again;
* ``worker``: kill -9 the second pipeline worker (a rebalance), then start it again;
* ``weaviate`` / ``elasticsearch``: stop the service (the stack's SIGTERM), then start it.

After the load stops and the system has drained, the checker of tests/faults/checker.py
compares: every published (tenant, doc_id, version) against Weaviate (each chunk exactly
once) and the ``indexed`` acknowledgements; every query against its frames (one ``done``
or ``error``, tokens complete and in order); every record of every topic against
Elasticsearch (exactly once). It prints what was sent, what arrived, what was lost or
duplicated, the longest stall (the longest time without an acknowledgement while documents
were outstanding) and, per fault, the recovery time (service back → every document
published before that indexed). Results: ``bench/results/soak.json`` (``lost``,
``duplicated`` at the top level). Elasticsearch and Weaviate of the main stack are
restarted during the run: do not run it beside other tests.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
import random
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer

from bench.common import RESULTS, machine_info, percentile, print_table
from infra import stack
from infra.config import StackSettings
from ingest.sdk import DocumentPublisher
from query_gateway.client import ask
from query_gateway.errors import GatewayError
from schemas.codec import decode
from schemas.events import DocumentEvent, DocumentIndexed
from streams.agents.shipper import SHIPPED_TOPICS
from streams.config import load_settings
from tests.faults.checker import (
    check_answers,
    check_event_log,
    check_index,
    read_answer_events,
    until_ok,
)
from tests.faults.cluster import Cluster
from tests.faults.support import FAST_MODEL, start_worker
from tests.support import RunningSystem, drop_isolated_state, isolated_env

FAULTS = ("broker", "worker", "weaviate", "elasticsearch")
WORDS = ("vacation", "security", "password", "travel", "expense", "laptop", "badge", "parking",
         "휴가", "보안", "출장", "비용")


def document(rng: random.Random, doc_id: str, version: int) -> DocumentEvent:
    words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 60)))
    return DocumentEvent(doc_id=doc_id, version=version, title=f"soak {doc_id} v{version}",
                         text=f"Policy {doc_id}, version {version}. {words}.")


@dataclass
class Run:
    """What the load generators did, with wall-clock times (``time.time()``)."""

    published: list[DocumentEvent] = field(default_factory=list)
    published_at: dict[tuple[str, str, int], float] = field(default_factory=dict)
    publish_retries: int = 0
    acked_at: dict[tuple[str, str, int], float] = field(default_factory=dict)
    answers: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    refused: int = 0  # queries the gateway could not take (connection refused / closed)
    faults: list[dict[str, Any]] = field(default_factory=list)


async def publish_load(publisher: DocumentPublisher, run: Run, rate: float, stop: asyncio.Event,
                       rng: random.Random) -> None:
    """New documents, new versions of earlier ones (15 %) and deletes (5 %), at ``rate``/s.

    A publish that Kafka does not confirm is sent again, the same event, until it is:
    the pipeline takes a repeated version as unchanged, so nothing is counted twice."""
    versions: dict[str, int] = {}
    for n in itertools.count():
        if stop.is_set():
            return
        roll = rng.random()
        if versions and roll < 0.20:
            doc_id = rng.choice(sorted(versions))
            version = versions[doc_id] + 1
            event = (DocumentEvent(op="delete", doc_id=doc_id, version=version) if roll < 0.05
                     else document(rng, doc_id, version))
        else:
            doc_id, version = f"soak/{n}", 1
            event = document(rng, doc_id, version)
        versions[doc_id] = version
        while True:
            try:
                await publisher.publish(event)
                break
            except Exception:  # noqa: BLE001 - any refusal: the same event again, later
                run.publish_retries += 1
                await asyncio.sleep(1.0)
        run.published.append(event)
        run.published_at[(event.tenant, event.doc_id, event.version)] = time.time()
        await asyncio.sleep(1.0 / rate)


async def follow_acks(system: RunningSystem, run: Run, stop: asyncio.Event) -> None:
    settings = system.settings()
    consumer = AIOKafkaConsumer(settings.topic("indexed"), bootstrap_servers=settings.kafka_bootstrap,
                                group_id=None, auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=500, max_records=5000)
            for records in batch.values():
                for record in records:
                    ack = decode(DocumentIndexed, record.value)
                    run.acked_at.setdefault((ack.tenant, ack.doc_id, ack.version), time.time())
    finally:
        await consumer.stop()


async def chat_load(system: RunningSystem, run: Run, user: int, think_s: float,
                    stop: asyncio.Event) -> None:
    url = system.ws_url_for(f"soak-{user}")
    for n in itertools.count():
        if stop.is_set():
            return
        key = f"u{user}-q{n}"
        frames: list[dict[str, Any]] = []
        try:
            async for frame in ask(url, f"How often must the {WORDS[n % len(WORDS)]} be changed?",
                                   client_id=key, idle_timeout_s=60):
                frames.append(frame)
        except GatewayError:
            if not frames:  # never taken: the client would retry; not a lost query
                run.refused += 1
                await asyncio.sleep(think_s)
                continue
        run.answers[key] = frames
        await asyncio.sleep(think_s)


async def chaos(cluster: Cluster, system: RunningSystem, second: Any, main: StackSettings,
                run: Run, every_s: float, fault_s: float, stop: asyncio.Event) -> None:
    for kind in itertools.cycle(FAULTS):
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)
        if stop.is_set():
            return
        started = time.time()
        detail = ""
        if kind == "broker":
            leader = await cluster.leader(system.settings().topic("documents"))
            detail = cluster.node_of(leader)
            await asyncio.to_thread(cluster.kill9, detail)
        elif kind == "worker":
            detail = second.name
            second.kill9()
        else:
            await asyncio.to_thread(stack.down, main, services=[kind])
        await asyncio.sleep(fault_s)
        if kind == "broker":
            await asyncio.to_thread(cluster.restart, detail)
        elif kind == "worker":
            second.start()
            await second.ready()
        else:
            await asyncio.to_thread(stack.up, main, services=[kind])
        restored = time.time()
        run.faults.append({"fault": kind, "target": detail, "at_s": started,
                           "down_s": round(restored - started, 1), "restored": restored})
        print(f"  fault {kind} {detail}: down {restored - started:.1f}s", flush=True)


def summary(report: Any) -> dict[str, Any]:
    """The checker's counts of one report (its ``lost``/``duplicated`` are counts or lists)."""
    def count(value: Any) -> int:
        return value if isinstance(value, int) else len(value)

    return {"sent": report.sent, "arrived": report.arrived, "lost": count(report.lost),
            "duplicated": count(report.duplicated), "ok": report.ok, "report": str(report)}


def longest_stall(run: Run) -> float:
    """The longest time without any acknowledgement while some document was outstanding."""
    events = sorted([(t, "pub") for t in run.published_at.values()] + [(t, "ack") for t in run.acked_at.values()])
    outstanding, last_progress, worst = 0, None, 0.0
    for t, kind in events:
        if kind == "pub":
            if outstanding == 0:
                last_progress = t
            outstanding += 1
        else:
            if last_progress is not None and outstanding > 0:
                worst = max(worst, t - last_progress)
            outstanding = max(0, outstanding - 1)
            last_progress = t
    return round(worst, 1)


def recoveries(run: Run) -> list[dict[str, Any]]:
    """Per fault: service back → every document published before then acknowledged."""
    out = []
    for fault in run.faults:
        before = [k for k, t in run.published_at.items() if t <= fault["restored"]]
        acked = [run.acked_at[k] for k in before if k in run.acked_at]
        caught_up = max(acked, default=fault["restored"]) if len(acked) == len(before) else None
        out.append({**{k: v for k, v in fault.items() if k not in ("at_s", "restored")},
                    "recovery_s": None if caught_up is None else round(max(0.0, caught_up - fault["restored"]), 1)})
    return out


async def main_async(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    main = load_settings(StackSettings)
    cluster = Cluster.on_free_ports(tmp / "kafka")
    print(f"starting a 3-broker cluster at {cluster.bootstrap} …", flush=True)
    await asyncio.to_thread(cluster.up)
    unique = uuid.uuid4().hex[:8]
    env = {**isolated_env(f"soak{unique}", tmp), "AICHAT_KAFKA_BOOTSTRAP": cluster.bootstrap,
           "AICHAT_LOG_LEVEL": "WARNING"}
    if args.fast_model:
        env["AICHAT_EMBED_MODEL"] = FAST_MODEL
    logs = tmp / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    system = RunningSystem(env, logs)
    run = Run()
    stop, drained = asyncio.Event(), asyncio.Event()
    try:
        print("starting workers (2 pipeline, shipper) and a gateway …", flush=True)
        await asyncio.to_thread(system.start, "pipeline", "shipper")
        second = start_worker(system, "pipeline", "pipeline-2")
        await second.ready()
        settings = system.settings()
        rng = random.Random(args.seed)
        started = time.time()
        async with DocumentPublisher(settings) as publisher:
            acks = asyncio.create_task(follow_acks(system, run, drained))
            load = [asyncio.create_task(publish_load(publisher, run, args.docs_per_s, stop, rng))]
            load += [asyncio.create_task(chat_load(system, run, u, args.think_s, stop)) for u in range(args.users)]
            faults = asyncio.create_task(chaos(cluster, system, second, main, run, args.fault_every,
                                               args.fault_s, stop))
            print(f"load for {args.minutes} min, a fault every {args.fault_every:.0f}s …", flush=True)
            await asyncio.sleep(args.minutes * 60)
            stop.set()
            await faults
            await asyncio.gather(*load)
        load_s = time.time() - started
        print("draining, then checking …", flush=True)
        index = await until_ok(lambda: check_index(settings, run.published), timeout_s=args.drain_s)
        drained.set()
        await acks
        answers = check_answers(run.answers, await read_answer_events(settings))
        event_log = await until_ok(lambda: check_event_log(settings, list(SHIPPED_TOPICS)),
                                   timeout_s=args.drain_s)
    except BaseException:
        print(system.log_tails())
        raise
    finally:
        stop.set()
        drained.set()
        system.stop()
        await drop_isolated_state(system.settings())
        await asyncio.to_thread(cluster.down)
    waits = [run.acked_at[k] - t for k, t in run.published_at.items() if k in run.acked_at]
    return {
        "machine": machine_info(), "minutes": args.minutes, "load_seconds": round(load_s, 1),
        "model": FAST_MODEL if args.fast_model else "default",
        "documents": {"events_sent": len(run.published), "publish_retries": run.publish_retries,
                      **summary(index)},
        "queries": {"refused_before_taken": run.refused, **summary(answers)},
        "event_log": summary(event_log),
        "lost": sum(summary(r)["lost"] for r in (index, answers, event_log)),
        "duplicated": sum(summary(r)["duplicated"] for r in (index, answers, event_log)),
        "longest_stall_s": longest_stall(run),
        "publish_to_indexed_ms": {"p50": round(1000 * percentile(waits, 50)),
                                  "p95": round(1000 * percentile(waits, 95)),
                                  "max": round(1000 * max(waits, default=0.0))},
        "faults": recoveries(run),
        "ok": index.ok and answers.ok and event_log.ok,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--docs-per-s", type=float, default=2.0)
    parser.add_argument("--users", type=int, default=4)
    parser.add_argument("--think-s", type=float, default=2.0, help="pause of each user between questions")
    parser.add_argument("--fault-every", type=float, default=120.0)
    parser.add_argument("--fault-s", type=float, default=20.0, help="how long each fault lasts")
    parser.add_argument("--drain-s", type=float, default=600.0, help="how long the checks wait for the system to catch up")
    parser.add_argument("--fast-model", action="store_true", help=f"workers use {FAST_MODEL} instead of the default")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=RESULTS / "soak.json")
    args = parser.parse_args(argv)
    # the bench's own consumer reports every broker kill; the report below says what it cost
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    with tempfile.TemporaryDirectory(prefix="aichat-soak-") as tmp:
        result = asyncio.run(main_async(args, Path(tmp)))
    d, q, e = result["documents"], result["queries"], result["event_log"]
    print_table(["what", "sent", "arrived", "lost", "duplicated"], [
        ("document versions", d["sent"], d.get("arrived", "-"), d.get("lost", "-"), d.get("duplicated", "-")),
        ("queries", q["sent"], q.get("arrived", "-"), q.get("lost", "-"), q.get("duplicated", "-")),
        ("records in Elasticsearch", e.get("sent", "-"), e.get("arrived", "-"), e.get("lost", "-"),
         e.get("duplicated", "-")),
    ])
    print_table(["fault", "target", "down s", "recovery s"],
                [(f["fault"], f["target"], f["down_s"], f["recovery_s"]) for f in result["faults"]])
    print(f"longest stall {result['longest_stall_s']}s; publish → indexed {result['publish_to_indexed_ms']} ms; "
          f"queries refused before taken {q['refused_before_taken']}; ok={result['ok']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    print(f"wrote {args.out}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
