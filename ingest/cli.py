"""``aichat ingest PATH… [--recursive] [--tenant T] [--meta K=V] [--delete DOC_ID]``.

Reads every source (``-`` is stdin), publishes with a bounded window of
un-acknowledged sends and waits for every acknowledgement. Progress and failures
go to stderr, the summary to stdout. Exit status: 0 when every document was
acknowledged, 1 when any source or document failed, 2 for usage errors.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import re
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, TextIO, TypeVar

from pydantic import TypeAdapter, ValidationError

from ingest.errors import PublishFailed, UnreadableFile, UsageError
from ingest.formats.jsonl import MAX_KEY_CHARS, count_lines
from ingest.progress import MIB, Progress
from ingest.readers import (
    DEFAULT_MAX_BYTES,
    JSONL_TYPES,
    STREAM_TYPES,
    content_type_of,
    delete_event,
    iter_files,
    read_source,
    read_stream,
)
from ingest.sdk import DEFAULT_WINDOW, DocumentPublisher, EventPublisher
from schemas.events import DocumentEvent, Scalar, Tenant
from streams.config import KafkaSettings, load_settings

log = logging.getLogger(__name__)

T = TypeVar("T")
PublisherFactory = Callable[[KafkaSettings], EventPublisher]
_SIZE = re.compile(r"(\d+)\s*([kmg]?)(?:i?b)?", re.IGNORECASE)
#: documents read per hop to the reading thread
_READ_BATCH = 32


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "ingest",
        help="publish files as document events",
        description="Publish documents (.txt .md .markdown .html .htm .pdf .jsonl .ndjson); "
        "exit 1 when any failed, 2 on usage errors.",
    )
    p.add_argument("paths", nargs="*", type=Path, help="files or folders; '-' reads stdin")
    p.add_argument("--recursive", "-r", action="store_true", help="descend into folders")
    p.add_argument("--tenant", default="default")
    p.add_argument(
        "--meta", action="append", default=[], metavar="K=V", help="metadata, repeatable"
    )
    p.add_argument(
        "--delete",
        action="append",
        default=[],
        metavar="DOC_ID",
        help="delete a document, repeatable",
    )
    p.add_argument(
        "--id", dest="doc_id", metavar="DOC_ID", help="doc_id of the document read from stdin"
    )
    p.add_argument("--title", help="title of the document read from stdin")
    p.add_argument("--content-type", choices=STREAM_TYPES, help="of stdin (default text/plain)")
    p.add_argument(
        "--max-bytes",
        type=parse_size,
        default=DEFAULT_MAX_BYTES,
        metavar="SIZE",
        help="refuse larger files (JSON Lines: larger lines); 10MiB, 512k, … (default 10MiB)",
    )
    p.add_argument(
        "--window", type=_positive, default=DEFAULT_WINDOW, help="un-acknowledged sends in flight"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = load_settings(KafkaSettings)
    return asyncio.run(ingest_paths(settings, args))


def parse_size(text: str) -> int:
    """``1048576``, ``512k``, ``10MiB``, ``1g``: binary units."""
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 10MiB, 512k)")
    return int(match[1]) * 1024 ** " kmg".index(match[2].lower() or " ")


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def parse_meta(pairs: list[str]) -> dict[str, Scalar]:
    meta: dict[str, Scalar] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--meta expects K=V, got {pair!r}")
        if len(key) > MAX_KEY_CHARS:
            raise UsageError(f"--meta key longer than {MAX_KEY_CHARS} characters: {key[:40]!r}…")
        meta[key] = value
    return meta


@dataclass
class Plan:
    """What a run will do; ``None`` in ``sources`` is stdin."""

    tenant: str
    meta: dict[str, Scalar]
    deletes: list[str]
    sources: list[Path | None] = field(default_factory=list)
    total: int = 0


def make_plan(args: argparse.Namespace) -> Plan:
    """Check the arguments, expand folders, estimate the number of documents."""
    try:
        TypeAdapter(Tenant).validate_python(args.tenant)
    except ValidationError:
        raise UsageError(f"--tenant must be 1-64 of A-Z a-z 0-9 _ -, got {args.tenant!r}") from None
    plan = Plan(args.tenant, parse_meta(args.meta), list(args.delete))
    stdin_args = [str(p) for p in args.paths].count("-")
    if stdin_args > 1:
        raise UsageError("'-' (stdin) may be given once")
    if not stdin_args and (args.doc_id or args.title or args.content_type):
        raise UsageError("--id, --title and --content-type describe stdin: give '-' as a PATH")
    stdin_jsonl = args.content_type in JSONL_TYPES
    if stdin_args and not args.doc_id and not stdin_jsonl:
        raise UsageError("reading stdin ('-') needs --id DOC_ID")
    if not args.paths and not args.delete:
        raise UsageError("nothing to do: give PATH… or --delete DOC_ID")
    for arg in args.paths:
        if str(arg) == "-":
            plan.sources.append(None)
            plan.total += 0 if stdin_jsonl else 1
            continue
        found = list(iter_files([arg], recursive=args.recursive))
        if not found:
            log.warning(
                "%s: no supported files%s", arg, "" if args.recursive else " (try --recursive)"
            )
        plan.sources.extend(found)
        plan.total += sum(_estimate(path) for path in found)
    plan.total += len(plan.deletes)
    return plan


def _estimate(path: Path) -> int:
    if content_type_of(path) not in JSONL_TYPES:
        return 1
    try:
        with path.open("rb") as stream:
            return count_lines(stream)
    except OSError:
        return 1


def read_all(
    plan: Plan, args: argparse.Namespace, stdin: BinaryIO
) -> Iterator[DocumentEvent | UnreadableFile]:
    """Deletes first, then every source in the order given."""
    for doc_id in plan.deletes:
        yield delete_event(doc_id, tenant=plan.tenant)
    for path in plan.sources:
        if path is None:
            yield from read_stream(
                stdin,
                content_type=args.content_type or "text/plain",
                doc_id=args.doc_id,
                title=args.title,
                tenant=plan.tenant,
                metadata=plan.meta,
                max_bytes=args.max_bytes,
            )
        else:
            yield from read_source(
                path, tenant=plan.tenant, metadata=plan.meta, max_bytes=args.max_bytes
            )


async def ingest_paths(
    settings: KafkaSettings,
    args: argparse.Namespace,
    *,
    publisher_factory: PublisherFactory = DocumentPublisher,
    stdin: BinaryIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    out, err = stdout or sys.stdout, stderr or sys.stderr
    try:
        plan = await asyncio.to_thread(make_plan, args)
    except UsageError as exc:
        err.write(f"aichat ingest: {exc}\n")
        return 2
    progress = Progress(err, total=plan.total)
    failures: list[str] = []
    upserts = deletes = nbytes = 0

    async def events() -> AsyncIterator[DocumentEvent]:
        items = read_all(plan, args, stdin or sys.stdin.buffer)
        async for item in _in_thread(items):
            if isinstance(item, UnreadableFile):
                failures.append(str(item))
                progress.advance(failed=True)
            else:
                yield item

    try:
        async with publisher_factory(settings) as publisher:
            async for delivery in publisher.publish_many(events(), window=args.window):
                if delivery.error is not None:
                    failures.append(str(delivery.error))
                    progress.advance(failed=True)
                elif delivery.event.op == "delete":
                    deletes += 1
                    progress.advance()
                else:
                    upserts += 1
                    size = len(delivery.event.text.encode("utf-8"))
                    nbytes += size
                    progress.advance(nbytes=size)
    except PublishFailed as exc:
        failures.append(str(exc))
    finally:
        progress.close()
    elapsed = progress.elapsed_s
    rate = (upserts + deletes) / elapsed if elapsed > 0 else 0.0
    out.write(
        f"{upserts} documents published, {deletes} deleted, {nbytes / MIB:.1f} MiB "
        f"in {elapsed:.1f}s ({rate:.1f} docs/s); {len(failures)} failed\n"
    )
    if failures:
        err.write("failed:\n" + "".join(f"  - {failure}\n" for failure in failures))
    return 1 if failures else 0


async def _in_thread(items: Iterator[T], batch: int = _READ_BATCH) -> AsyncIterator[T]:
    """Advance a blocking iterator off the event loop, a batch at a time."""
    while chunk := await asyncio.to_thread(lambda: list(itertools.islice(items, batch))):
        for item in chunk:
            yield item
