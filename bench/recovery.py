"""Restore drill: lose Weaviate, restore the last backup and replay ``documents``; against a rebuild.

    .venv/bin/python -m bench.recovery [--limit 1000] [--updates 100 --deletes 20 --adds 50]

Everything runs on a private stack (tests/faults/private_stack.py: its own stack dir,
Kafka, Elasticsearch and Weaviate on free ports, stopped at the end) with an ``ingest``
worker, a ``shipper`` and a gateway, each a real process, on the default model:

1. index ``--limit`` SciFact abstracts; the fault suite's checker passes;
2. ``backup create`` (infra/backup): Weaviate's filesystem backup, an Elasticsearch
   snapshot, the Kafka offsets;
3. change the corpus: new versions (new text) of ``--updates`` documents, ``--deletes``
   deletes, ``--adds`` new abstracts; wait until indexed; keep the index's content (every
   chunk's id, text, version and vector, every document state): the *live* index;
4. destroy: SIGKILL Weaviate and delete its data directory; **detect**: until the gateway's
   readiness check (its operator ``/health/ready``, polled every 0.1 s) reports Weaviate down;
5. **restore**: stop the ingest worker, start Weaviate on the empty directory, ``restore``
   the backup's Weaviate part (Elasticsearch was not lost) and the ingest group's offsets,
   start the worker again;
6. **caught up**: until the checker passes against everything published, then the index
   must equal the live index (same chunk ids, texts, states; vectors to cosine ≥ 0.9999);
7. the same loss again, recovered by a **full rebuild** (infra/rebuild.py: ``documents``
   replayed from its beginning), caught up and compared the same way.

RTO = detect + every recovery step + caught up. Per million chunks: the fixed steps (detect,
Weaviate start, worker start) stay, the backup's restore scales with the chunks it holds,
the catch-up with the share of the corpus changed since the backup (taken as in this
drill), a rebuild's replay with the whole corpus. Results: ``bench/results/recovery.json``
(``rto_s`` at the top level).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson

from bench.common import RESULTS, machine_info, print_table
from bench.ingest import DEFAULT_CORPUS, load_corpus
from infra.backup import BackupSettings, create_backup, restore_backup
from infra.rebuild import rebuild
from ingest.events import content_hash
from schemas.events import DocumentEvent
from streams.config import WorkerSettings
from streams.weaviate_connect import weaviate_client
from tests.faults.checker import check_index, until_ok
from tests.faults.private_stack import PrivateStack, publish, start_again, system_on
from tests.support import RunningSystem

MILLION = 1_000_000
Content = tuple[dict[str, tuple[Any, ...]], dict[tuple[str, str], tuple[Any, ...]], dict[str, np.ndarray]]


class Clock:
    """Named phases, each timed and printed as it ends."""

    def __init__(self) -> None:
        self.s: dict[str, float] = {}
        self.load: dict[str, float] = {}  # the machine's 1-minute load average as each phase ended

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        print(f"{name} …", flush=True)
        yield
        self.s[name] = round(time.perf_counter() - started, 2)
        self.load[name] = round(os.getloadavg()[0], 1)
        print(f"  {name}: {self.s[name]:.1f}s (load {self.load[name]})", flush=True)


async def index_content(settings: WorkerSettings) -> Content:
    """Every chunk (id → tenant, doc_id, version, seq, text), its vector, every document state."""
    client = weaviate_client(settings)
    await client.connect()
    try:
        rows, vectors, states = {}, {}, {}
        chunks = client.collections.use(settings.weaviate_collection)
        async for o in chunks.iterator(include_vector=True,
                                       return_properties=["tenant", "doc_id", "version", "seq", "text"]):
            p = o.properties
            rows[str(o.uuid)] = (p["tenant"], p["doc_id"], int(p["version"]), int(p["seq"]), p["text"])
            vector = o.vector.get("default") if isinstance(o.vector, dict) else o.vector
            vectors[str(o.uuid)] = np.asarray(vector, dtype=np.float32)
        docs = client.collections.use(f"{settings.weaviate_collection}Docs")
        async for o in docs.iterator(return_properties=["tenant", "doc_id", "version", "status", "n_chunks"]):
            p = o.properties
            states[(str(p["tenant"]), str(p["doc_id"]))] = (int(p["version"]), p["status"], int(p["n_chunks"]))
        return rows, states, vectors
    finally:
        await client.close()


def compare(live: Content, now: Content) -> dict[str, Any]:
    """How the index now differs from the live one (``equal`` when in nothing)."""
    (rows, states, vectors), (rows2, states2, vectors2) = live, now
    both = rows.keys() & rows2.keys()
    cosines = [float(vectors[k] @ vectors2[k] / (np.linalg.norm(vectors[k]) * np.linalg.norm(vectors2[k])))
               for k in both]
    result = {"chunks": len(rows2), "missing": len(rows.keys() - rows2.keys()),
              "unexpected": len(rows2.keys() - rows.keys()),
              "differing": sum(rows[k] != rows2[k] for k in both),
              "states_differing": sum(states.get(k) != states2.get(k) for k in states.keys() | states2.keys()),
              "min_vector_cosine": round(min(cosines, default=1.0), 6)}
    result["equal"] = (not (result["missing"] or result["unexpected"] or result["differing"]
                            or result["states_differing"]) and result["min_vector_cosine"] >= 0.9999)
    return result


def mutations(base: list[DocumentEvent], extra: list[DocumentEvent], updates: int, deletes: int,
              seed: int) -> list[DocumentEvent]:
    rng = random.Random(seed)
    chosen = rng.sample(base, updates + deletes)
    out = []
    for doc in chosen[:updates]:
        text = doc.text + " Revised after review: the findings above were replicated."
        out.append(doc.model_copy(update={"version": doc.version + 1, "text": text,
                                          "content_hash": content_hash(doc.title, text, doc.metadata)}))
    out += [DocumentEvent(op="delete", doc_id=d.doc_id, tenant=d.tenant, version=d.version + 1)
            for d in chosen[updates:]]
    return out + extra


async def weaviate_down(url: str, timeout_s: float = 120.0) -> float:
    """When (``perf_counter``) the gateway's readiness first reports its Weaviate check failed."""
    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=5) as http:
        while time.perf_counter() - started < timeout_s:
            checks = (await http.get(f"{url}/health/ready")).json().get("checks", {})
            if not checks.get("weaviate", {}).get("ok", True):
                return time.perf_counter()
            await asyncio.sleep(0.1)
    raise AssertionError(f"the gateway still reports Weaviate ready after {timeout_s:.0f}s")


async def lose_weaviate(private: PrivateStack, system: RunningSystem, clock: Clock, tag: str) -> None:
    """Destroy Weaviate, time the detection, stop the ingest worker, start an empty Weaviate."""
    ready = (await asyncio.to_thread(httpx.get, f"{system.gateway_ops_url}/health/ready", timeout=5)).json()
    assert ready["checks"]["weaviate"]["ok"], ready
    watching = asyncio.create_task(weaviate_down(system.gateway_ops_url))
    await asyncio.sleep(0.5)  # the watcher is polling before the loss
    killed = time.perf_counter()
    await asyncio.to_thread(private.destroy_weaviate)
    clock.s[f"{tag}detect"] = round(await watching - killed, 2)
    print(f"  {tag}detect: {clock.s[tag + 'detect']:.2f}s", flush=True)
    ingest = next(c for c in system.children if c.name == "ingest")
    with clock.phase(f"{tag}stop_worker"):
        await asyncio.to_thread(ingest.stop)
    with clock.phase(f"{tag}weaviate_start"):
        await asyncio.to_thread(private.up, ["weaviate"])


async def start_worker(system: RunningSystem, clock: Clock, tag: str) -> None:
    ingest = [c for c in system.children if c.name == "ingest"]
    with clock.phase(f"{tag}worker_start"):
        await asyncio.to_thread(start_again, RunningSystem(system.env, system.logs, ingest))


async def drill(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    corpus = load_corpus(args.corpus, None)
    base, extra = corpus[: args.limit], corpus[args.limit : args.limit + args.adds]
    private = PrivateStack.on_free_ports(tmp / "stack")
    clock = Clock()
    with clock.phase("stack_up"):
        await asyncio.to_thread(private.up)
    system = system_on(private, f"rec{uuid.uuid4().hex[:8]}", tmp, **({"AICHAT_EMBED_MODEL": args.model} if args.model else {}))
    try:
        with clock.phase("workers_up"):
            await asyncio.to_thread(system.start, "ingest", "shipper")
        settings = system.settings()
        backup_settings = BackupSettings(**settings.model_dump())
        with clock.phase("ingest"):
            published = await publish(settings, base)
            report = await until_ok(lambda: check_index(settings, published), timeout_s=args.timeout_s, interval_s=5)
        assert report.ok, report
        chunks_backed_up = report.chunks
        with clock.phase("backup"):
            manifest = await create_backup(backup_settings, backup_id=f"drill-{uuid.uuid4().hex[:8]}")
        changes = mutations(base, extra, args.updates, args.deletes, args.seed)
        with clock.phase("mutations_indexed"):
            published += await publish(settings, changes)
            report = await until_ok(lambda: check_index(settings, published), timeout_s=args.timeout_s, interval_s=2)
        assert report.ok, report
        live = await index_content(settings)

        await lose_weaviate(private, system, clock, "")
        with clock.phase("restore"):
            restored = await restore_backup(backup_settings, manifest.id, parts=("weaviate",))
        await start_worker(system, clock, "")
        with clock.phase("catch_up"):
            restored_report = await until_ok(lambda: check_index(settings, published), timeout_s=args.timeout_s, interval_s=1)
        after_restore = compare(live, await index_content(settings))

        await lose_weaviate(private, system, clock, "rebuild_")
        with clock.phase("rebuild_reset"):
            replayed = await rebuild(settings, "ingest")
        await start_worker(system, clock, "rebuild_")
        with clock.phase("rebuild_catch_up"):
            rebuilt_report = await until_ok(lambda: check_index(settings, published), timeout_s=args.timeout_s, interval_s=2)
        after_rebuild = compare(live, await index_content(settings))
    except BaseException:
        print(system.log_tails())
        print(private.log_tails())
        raise
    finally:
        system.stop()
        await asyncio.to_thread(private.down)
    result = summarise(args, clock.s, manifest.weaviate.objects if manifest.weaviate else {}, chunks_backed_up,
                       live, restored, replayed, changes,
                       {"restore": (restored_report, after_restore), "rebuild": (rebuilt_report, after_rebuild)})
    return {**result, "backup_seconds": manifest.seconds, "load_average_1m": clock.load}


def summarise(args: argparse.Namespace, s: dict[str, float], objects: dict[str, int], chunks_backed_up: int,
              live: Content, restored: Any, replayed: int, changes: list[DocumentEvent],
              checks: dict[str, tuple[Any, dict[str, Any]]]) -> dict[str, Any]:
    chunks = len(live[0])
    changed = {(d.tenant, d.doc_id, d.version) for d in changes if d.op == "upsert"}
    changed_chunks = sum((row[0], row[1], row[2]) in changed for row in live[0].values())
    fixed = s["detect"] + s["stop_worker"] + s["weaviate_start"] + s["worker_start"]
    rebuild_fixed = (s["rebuild_detect"] + s["rebuild_stop_worker"] + s["rebuild_weaviate_start"]
                     + s["rebuild_reset"] + s["rebuild_worker_start"])
    restore_per_m = s["restore"] * MILLION / chunks_backed_up
    catch_up_rate = changed_chunks / s["catch_up"]  # chunks re-embedded and indexed per second
    rebuild_rate = chunks / s["rebuild_catch_up"]
    share = changed_chunks / chunks
    return {
        "machine": machine_info(), "corpus": str(args.corpus), "documents": args.limit,
        "model": args.model or "default (multilingual-e5-small)",
        "changes_after_backup": {"updates": args.updates, "deletes": args.deletes, "adds": args.adds,
                                 "documents_replayed": restored.documents_to_replay,
                                 "chunks_embedded_again": changed_chunks},
        "chunks": {"backed_up": chunks_backed_up, "live": chunks, "weaviate_objects": objects},
        "seconds": s,
        "rto_s": round(fixed + s["restore"] + s["catch_up"], 1),
        "rebuild_rto_s": round(rebuild_fixed + s["rebuild_catch_up"], 1),
        "restore_steps_s": {k: round(v, 2) for k, v in restored.seconds.items()},
        "rebuild_documents_replayed": replayed,
        "rates_chunks_per_s": {"catch_up": round(catch_up_rate, 2), "rebuild": round(rebuild_rate, 2),
                               "weaviate_restore": round(chunks_backed_up / restored.seconds["weaviate"], 1)},
        "per_million_chunks": {
            "restore_s": round(restore_per_m),
            "rto_s_at_this_share_of_changes": round(fixed + restore_per_m + share * MILLION / catch_up_rate),
            "rto_s_at_1_percent_changed": round(fixed + restore_per_m + 0.01 * MILLION / catch_up_rate),
            "rebuild_rto_s": round(rebuild_fixed + MILLION / rebuild_rate),
            "assumption": "the fixed steps (detect, worker stop, Weaviate start, worker start, rebuild's "
                          "offset reset) stay; the backup's restore scales with the chunks it holds, the "
                          "catch-up with the chunks changed since the backup (re-embedded at the drill's "
                          f"rate; {share:.1%} of the corpus here), a rebuild with every chunk",
        },
        "checks": {name: {"checker_ok": report.ok, "checker": str(report), "equal_to_live_index": diff}
                   for name, (report, diff) in checks.items()},
        "ok": all(report.ok and diff["equal"] for report, diff in checks.values()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--limit", type=int, default=1000, help="SciFact abstracts indexed before the backup")
    parser.add_argument("--updates", type=int, default=100, help="new versions after the backup")
    parser.add_argument("--deletes", type=int, default=20)
    parser.add_argument("--adds", type=int, default=50, help="abstracts first published after the backup")
    parser.add_argument("--model", default=None, help="AICHAT_EMBED_MODEL of the worker (default: the project's)")
    parser.add_argument("--timeout-s", type=float, default=3600.0, help="longest wait for each catch-up")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=RESULTS / "recovery.json")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="aichat-recovery-") as tmp:
        result = asyncio.run(drill(args, Path(tmp)))
    s, per = result["seconds"], result["per_million_chunks"]
    print_table(["recovery", "detect s", "stop worker s", "Weaviate start s", "restore / reset s",
                 "worker start s", "caught up s", "RTO s", "per 1M chunks s", "per 1M, 1 % changed s"], [
        ("restore backup + replay", s["detect"], s["stop_worker"], s["weaviate_start"], s["restore"],
         s["worker_start"], s["catch_up"], result["rto_s"], per["rto_s_at_this_share_of_changes"],
         per["rto_s_at_1_percent_changed"]),
        ("full rebuild by replay", s["rebuild_detect"], s["rebuild_stop_worker"], s["rebuild_weaviate_start"],
         s["rebuild_reset"], s["rebuild_worker_start"], s["rebuild_catch_up"], result["rebuild_rto_s"],
         per["rebuild_rto_s"], per["rebuild_rto_s"]),
    ])
    print_table(["after", "checker", "chunks", "missing", "unexpected", "differing", "states differing",
                 "min cosine", "equal to live index"], [
        (name, c["checker_ok"], d["chunks"], d["missing"], d["unexpected"], d["differing"], d["states_differing"],
         d["min_vector_cosine"], d["equal"]) for name, c in result["checks"].items()
        for d in [c["equal_to_live_index"]]])
    c, r = result["changes_after_backup"], result["rates_chunks_per_s"]
    print(f"ingest {s['ingest']:.0f}s, backup {s['backup']:.1f}s ({result['chunks']['backed_up']} chunks, "
          f"{result['backup_seconds']}); replayed after the restore: {c['documents_replayed']} document "
          f"records, {c['chunks_embedded_again']} chunks ({r['catch_up']} chunks/s); by the rebuild "
          f"{result['rebuild_documents_replayed']} records ({r['rebuild']} chunks/s); Weaviate restore "
          f"{r['weaviate_restore']} chunks/s; ok={result['ok']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    print(f"wrote {args.out}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
