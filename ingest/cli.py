"""``aichat ingest PATH… [--recursive] [--tenant T] [--meta k=v]``."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

from ingest.errors import IngestError
from ingest.readers import iter_files, read_document
from ingest.sdk import DocumentPublisher
from schemas.events import Scalar
from streams.config import KafkaSettings, load_settings


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("ingest", help="publish files as document events")
    p.add_argument("paths", nargs="+", type=Path, help="files or folders (.txt, .md)")
    p.add_argument("--recursive", "-r", action="store_true", help="descend into folders")
    p.add_argument("--tenant", default="default")
    p.add_argument("--meta", action="append", default=[], metavar="K=V", help="metadata, repeatable")
    p.set_defaults(func=run)


def parse_meta(pairs: list[str]) -> dict[str, Scalar]:
    meta: dict[str, Scalar] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--meta expects K=V, got {pair!r}")
        meta[key] = value
    return meta


async def ingest_paths(settings: KafkaSettings, args: argparse.Namespace) -> int:
    meta = parse_meta(args.meta)
    failures: list[str] = []
    published = 0
    nbytes = 0
    started = time.perf_counter()
    async with DocumentPublisher(settings) as publisher:
        for path in iter_files(args.paths, recursive=args.recursive):
            try:
                event = read_document(path, tenant=args.tenant, metadata=meta)
                await publisher.publish(event)
            except IngestError as exc:
                failures.append(str(exc))
                print(f"  failed: {exc}", file=sys.stderr)
                continue
            published += 1
            nbytes += len(event.text.encode())
            print(f"  published {event.doc_id} (v{event.version}, {len(event.text)} chars)")
    elapsed = time.perf_counter() - started
    print(f"{published} documents, {nbytes / 1024:.1f} KiB in {elapsed:.1f}s; {len(failures)} failed")
    for failure in failures:
        print(f"  - {failure}", file=sys.stderr)
    return 1 if failures else 0


def run(args: argparse.Namespace) -> int:
    settings = load_settings(KafkaSettings)
    return asyncio.run(ingest_paths(settings, args))
