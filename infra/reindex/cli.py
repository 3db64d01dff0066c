"""The ``aichat reindex`` command: start | status | switch | rollback | drop (infra/reindex.py).

Each sub-command reads the state it decides on (the serving alias, the generations' specs,
their pipelines' backlog in Kafka), lets infra/reindex.py plan or refuse, and only then acts.
A refusal exits 1 with the reason on stderr; ``status --json`` is for scripts and tests.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

import orjson

from infra.errors import StackError
from infra.generations import Generation, generation, generations, serving, weaviate_rest
from infra.reindex.ops import (
    collection_model,
    count,
    create_collections,
    drop_generation,
    group_state,
    move_alias,
    new_generation,
    pipeline_state,
    prepare_pipeline,
    taken,
)
from infra.reindex.plan import Refused, plan_drop, plan_start, plan_switch, rollback_target
from infra.reindex.workers import running, start_workers, stop_workers
from streams.app import app_id
from streams.config import WorkerSettings, load_settings
from streams.docstate import docs_collection_name
from streams.errors import DependencyUnavailable

#: how long ``drop`` waits for the group to lose the members of the workers it stopped
MEMBERS_GONE_S = 40.0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("reindex", help="re-index into a new collection while the old one "
                                   "answers, then switch the serving alias (and back)")
    commands = parser.add_subparsers(dest="reindex_command", required=True)
    start = commands.add_parser("start", help="create a generation and start its ingest workers "
                                "(again, to resume one)")
    start.add_argument("--collection", required=True, help="the new physical collection, e.g. Chunk_v2")
    start.add_argument("--model", dest="embed_model", help="embedding model (default: AICHAT_EMBED_MODEL)")
    start.add_argument("--chunk-max-tokens", type=int, help="default: AICHAT_CHUNK_MAX_TOKENS")
    start.add_argument("--chunk-overlap-tokens", type=int, help="default: AICHAT_CHUNK_OVERLAP_TOKENS")
    start.add_argument("--workers", type=int, default=1, help="ingest workers to start here "
                       "(0: only provision, and print their environment for a Deployment elsewhere)")
    start.add_argument("--nice", type=int, choices=range(20), metavar="0-19",
                       help="their CPU niceness (default AICHAT_INGEST_NICE if set, else 10)")
    status = commands.add_parser("status", help="the generations, their backlog and which one serves")
    status.add_argument("--json", action="store_true", help="print JSON")
    for name, text in (("switch", "point the serving alias at a generation that caught up"),
                       ("rollback", "point it back at the collection the serving generation replaced")):
        cmd = commands.add_parser(name, help=text)
        if name == "switch":
            cmd.add_argument("collection")
            cmd.add_argument("--replace-collection", action="store_true",
                             help="the serving name is still a real collection: delete it and put the alias there")
            cmd.add_argument("--model-change", action="store_true",
                             help="allow a generation of another embedding model (answer workers need a restart)")
        cmd.add_argument("--max-lag", type=int, default=0, help="records the generation may still be behind")
    drop = commands.add_parser("drop", help="stop a generation's workers, delete its collections and topics")
    drop.add_argument("collection")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = load_settings(WorkerSettings)
    commands = {"start": _start, "status": _status, "switch": _switch, "rollback": _switch, "drop": _drop}
    try:
        return asyncio.run(commands[args.reindex_command](settings, args))
    except Refused as exc:
        print(f"aichat reindex {args.reindex_command}: refused: {exc}", file=sys.stderr)
        return 1
    except (StackError, DependencyUnavailable) as exc:
        print(f"aichat reindex {args.reindex_command}: {exc}", file=sys.stderr)
        return 1


async def _start(settings: WorkerSettings, args: argparse.Namespace) -> int:
    name = args.collection
    given = {k: v for k in ("embed_model", "chunk_max_tokens", "chunk_overlap_tokens")
             if (v := getattr(args, k)) is not None}
    made = load_settings(WorkerSettings, **given)  # a bad value fails here, naming the key
    async with weaviate_rest(settings) as http:
        now = await serving(http, settings.weaviate_collection)
        found = await generation(http, name)
        fresh = plan_start(now, name, found=found, taken=found is None and await taken(http, name), given=given)
        spec = new_generation(made, name, now.target) if fresh else found
        assert spec is not None
        if fresh:
            await create_collections(http, settings, spec)
        else:  # resumed: reset only a pipeline that indexed nothing yet and has no members
            fresh = not await count(http, docs_collection_name(name)) and not (
                await pipeline_state(settings, spec)).members
    pending = await prepare_pipeline(settings, spec, fresh=fresh)
    verb = "created" if found is None else "resumed"
    print(f"generation {name} of {spec.alias} {verb} ({_settings_text(spec)}; replaces {spec.replaces or '-'})")
    if fresh:
        print(f"its group {app_id(settings.model_copy(update={'index_generation': name}), 'ingest')} "
              f"reads {pending} records of documents from the beginning")
    workers = start_workers(settings, spec, args.workers, nice=args.nice) if args.workers > 0 else []
    if workers:
        print(f"started {len(workers)} ingest worker(s): pids {' '.join(str(w.pid) for w in workers)}; "
              f"logs in {workers[0].log_path.parent}")
    print(f"its workers elsewhere: AICHAT_WEAVIATE_COLLECTION={spec.alias} {spec.env_line()} "
          "aichat worker --role ingest")
    print(f"next: `aichat reindex status`, then `aichat reindex switch {name}` once it caught up")
    return 0


def _settings_text(spec: Generation) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(spec.settings.items()))


async def status_of(settings: WorkerSettings) -> dict[str, Any]:
    """What ``status --json`` prints: the serving name, its legacy collection's ingest group
    (before the first switch), and each generation with its pipeline's backlog."""
    alias = settings.weaviate_collection
    async with weaviate_rest(settings) as http:
        now = await serving(http, alias)
        rows = []
        for spec in await generations(http, alias):
            pipeline = await pipeline_state(settings, spec)
            rows.append({"collection": spec.collection, "serving": spec.collection == now.target,
                         "replaces": spec.replaces, "settings": spec.settings, "created_at": spec.created_at,
                         "group": pipeline.group, "lag": pipeline.lag, "behind": pipeline.behind,
                         "members": pipeline.members, "local_workers": running(settings, spec.collection),
                         "documents": await count(http, docs_collection_name(spec.collection), "indexed"),
                         "chunks": await count(http, spec.collection)})
        legacy = None
        if now.kind == "collection":
            base = settings.model_copy(update={"index_generation": ""})
            pipeline = await group_state(base, app_id(base, "ingest"), ["documents", "chunks", "embeddings"])
            legacy = {"collection": alias, "group": pipeline.group, "behind": pipeline.behind,
                      "members": pipeline.members, "chunks": await count(http, alias)}
    return {"serving": {"name": now.name, "kind": now.kind, "target": now.target},
            "legacy": legacy, "generations": rows}


async def _status(settings: WorkerSettings, args: argparse.Namespace) -> int:
    state = await status_of(settings)
    if args.json:
        print(orjson.dumps(state, option=orjson.OPT_INDENT_2).decode())
        return 0
    now = state["serving"]
    kind = {"alias": f"an alias of {now['target']}", "collection": "a collection (not an alias yet)",
            "none": "nothing yet"}[now["kind"]]
    print(f"serving name {now['name']}: {kind}")
    if state["legacy"]:
        legacy = state["legacy"]
        print(f"  its own ingest group {legacy['group']}: {legacy['members']} member(s), "
              f"{legacy['behind']} behind, {legacy['chunks']} chunks")
    headers = ("GENERATION", "SERVES", "BEHIND", "MEMBERS", "HERE", "DOCUMENTS", "CHUNKS", "REPLACES", "SETTINGS")
    table = [headers] + [
        (g["collection"], "*" if g["serving"] else "", str(g["behind"]), str(g["members"]),
         str(len(g["local_workers"])), str(g["documents"]), str(g["chunks"]), g["replaces"] or "-",
         ", ".join(f"{k}={v}" for k, v in sorted(g["settings"].items())))
        for g in state["generations"]]
    widths = [max(len(row[i]) for row in table) for i in range(len(headers))]
    for row in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0


async def _switch(settings: WorkerSettings, args: argparse.Namespace) -> int:
    alias = settings.weaviate_collection
    base = settings.model_copy(update={"index_generation": ""})
    async with weaviate_rest(settings) as http:
        now = await serving(http, alias)
        name = args.collection if args.reindex_command == "switch" else rollback_target(
            now, await generation(http, now.target) if now.target else None)
        spec = await generation(http, name)
        pipeline = await pipeline_state(settings, spec) if spec is not None else None
        legacy = (await group_state(base, app_id(base, "ingest"), ["documents"])).members \
            if now.kind == "collection" else 0
        action = plan_switch(now, name, spec, pipeline, max_lag=args.max_lag,
                             replace_collection=getattr(args, "replace_collection", False),
                             model_change=getattr(args, "model_change", False),
                             serving_model=await collection_model(http, now.target) if now.target else None,
                             legacy_members=legacy)
        if action is None:
            print(f"{name} already serves {alias}: nothing to do")
            return 0
        started = time.perf_counter()
        gap = await move_alias(http, alias, name, action)
        took = time.perf_counter() - started
    print(f"{alias} now serves {name} (was {now.target or 'nothing'}; {action} in {took * 1000:.1f} ms"
          + (f", {gap * 1000:.1f} ms without either" if action == "replace" else "") + ")")
    if action == "replace":
        print(f"collection {alias} and {alias}Docs were deleted; restart its old ingest workers as "
              f"{name}'s (`aichat reindex status` shows the settings) or let {name}'s own carry on")
    else:
        print(f"{now.target or '-'} stays current while its workers run: `aichat reindex rollback` moves back")
    return 0


async def _drop(settings: WorkerSettings, args: argparse.Namespace) -> int:
    name = args.collection
    async with weaviate_rest(settings) as http:
        now = await serving(http, settings.weaviate_collection)
        spec = await generation(http, name)
        plan_drop(now, name, spec, members=0)  # refuse what serves before stopping anything
        assert spec is not None
        stopped = stop_workers(settings, name)
        members = await _members_after(settings, spec, MEMBERS_GONE_S if stopped else 0.0)
        plan_drop(now, name, spec, members=members)
        gone = await drop_generation(http, settings, spec)
        orphans = [g.collection for g in await generations(http, spec.alias) if g.replaces == name]
    print(f"stopped {stopped} worker(s) of {name}; deleted {', '.join(gone)}")
    if orphans:
        print(f"{', '.join(orphans)} can no longer roll back to {name}")
    return 0


async def _members_after(settings: WorkerSettings, spec: Generation, wait_s: float) -> int:
    """The group's members, waiting up to ``wait_s`` for stopped workers to leave it."""
    deadline = time.monotonic() + wait_s
    while True:
        members = (await pipeline_state(settings, spec)).members
        if not members or time.monotonic() >= deadline:
            return members
        await asyncio.sleep(1.0)

