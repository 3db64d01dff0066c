"""``aichat ingest PATH… [--recursive] [--tenant T] [--meta K=V] [--delete DOC_ID]``.

Reads every source (``-`` is stdin), publishes with a bounded window of
un-acknowledged sends and waits for every acknowledgement. Progress, failures and
what was skipped go to stderr, the summary to stdout. Exit status: 0 when every
document was acknowledged, 1 when any source or document failed, 2 for usage errors
(an argument that is not valid UTF-8 among them).

A file's doc_id is its path relative to the PATH given (``ingest/readers.py``); two
sources of one run that would share a doc_id are a usage error. Symbolic links found
in folders are skipped (listed, and counted in the summary) unless
``--follow-symlinks``; a PATH named on the command line is read even when it is one.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import os
import re
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, TextIO, TypeVar

from pydantic import TypeAdapter, ValidationError

from ingest.errors import PublishFailed, UnreadableFile, UsageError
from ingest.formats.jsonl import MAX_KEY_CHARS, count_lines
from ingest.formats.pdf import DEFAULT_MAX_CHARS, DEFAULT_TIMEOUT_S, PdfLimits
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
    source_name,
)
from ingest.sdk import DEFAULT_WINDOW, DocumentPublisher, EventPublisher
from ingest.walk import LINK_NOT_FOLLOWED, Skipped
from schemas.events import DocumentEvent, Scalar, Tenant
from streams.config import KafkaSettings, load_settings

log = logging.getLogger(__name__)

T = TypeVar("T")
PublisherFactory = Callable[[KafkaSettings], EventPublisher]
_SIZE = re.compile(r"(\d+)\s*([kmg]?)(?:i?b)?", re.IGNORECASE)
#: documents read per hop to the reading thread
_READ_BATCH = 32
#: how usage errors name an argument (others: ``--dest-with-dashes``)
_FLAGS = {"paths": "PATH", "doc_id": "--id"}


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "ingest",
        help="publish files as document events",
        description="Publish documents (.txt .md .markdown .html .htm .pdf .jsonl .ndjson); "
        "exit 1 when any failed, 2 on usage errors.",
    )
    p.add_argument("paths", nargs="*", type=Path, help="files or folders; '-' reads stdin")
    p.add_argument("--recursive", "-r", action="store_true", help="descend into folders")
    p.add_argument(
        "--follow-symlinks",
        action="store_true",
        help="follow symbolic links inside folders (each folder is still walked once); "
        "without it they are skipped and listed",
    )
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
        "--pdf-max-chars",
        type=_positive,
        default=DEFAULT_MAX_CHARS,
        metavar="N",
        help=f"refuse a PDF whose text is longer (default {DEFAULT_MAX_CHARS})",
    )
    p.add_argument(
        "--pdf-truncate",
        action="store_true",
        help="cut a PDF's text at --pdf-max-chars instead of refusing it (logged)",
    )
    p.add_argument(
        "--pdf-timeout",
        type=_positive_seconds,
        default=DEFAULT_TIMEOUT_S,
        metavar="SECONDS",
        help=f"refuse a PDF whose text takes longer to extract (default {DEFAULT_TIMEOUT_S:g})",
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


def _positive_seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return seconds


def check_decodable(args: argparse.Namespace) -> None:
    """Refuse an argument that is not valid UTF-8 (bytes the OS handed over as surrogates):
    doc_ids, tenants, titles and metadata travel as JSON text, and a path that cannot
    be one would fail later, and less clearly."""
    for dest, value in vars(args).items():
        for item in value if isinstance(value, list) else [value]:
            if not isinstance(item, str | Path):
                continue
            text = str(item)
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                flag = _FLAGS.get(dest, "--" + dest.replace("_", "-"))
                raise UsageError(f"{flag} {_shown(text)} is not valid UTF-8") from None


def _shown(text: str) -> str:
    """The bytes as given (``b'caf\\xe9.md'``) when the OS decoded them, else escaped."""
    try:
        return repr(os.fsencode(text))
    except UnicodeEncodeError:
        return ascii(text)


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


@dataclass(frozen=True)
class Source:
    """A file to read and the folder its doc_id is relative to."""

    path: Path
    root: Path


@dataclass
class Plan:
    """What a run will do; ``None`` in ``sources`` is stdin, an error a folder not listed."""

    tenant: str
    meta: dict[str, Scalar]
    deletes: list[str]
    sources: list[Source | UnreadableFile | None] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    total: int = 0


def make_plan(args: argparse.Namespace) -> Plan:
    """Check the arguments, expand folders, estimate the number of documents."""
    check_decodable(args)
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
        root = arg if arg.is_dir() else arg.parent
        found = 0
        for item in iter_files(
            [arg], recursive=args.recursive, follow_symlinks=args.follow_symlinks
        ):
            if isinstance(item, Skipped):
                plan.skipped.append(item)
            elif isinstance(item, UnreadableFile):
                plan.sources.append(item)
                plan.total += 1
            else:
                plan.sources.append(Source(item, root))
                plan.total += _estimate(item)
                found += 1
        if not found:
            log.warning(
                "%s: no supported files%s", arg, "" if args.recursive else " (try --recursive)"
            )
    _refuse_shared_ids(plan.sources)
    plan.total += len(plan.deletes)
    return plan


def _refuse_shared_ids(sources: list[Source | UnreadableFile | None]) -> None:
    """Two files of one run with one doc_id would overwrite each other: refuse the run."""
    seen: dict[str, Path] = {}
    for source in sources:
        if not isinstance(source, Source) or content_type_of(source.path) in JSONL_TYPES:
            continue
        doc_id = source_name(source.path, source.root)
        if doc_id in seen:
            raise UsageError(
                f"{seen[doc_id]} and {source.path} would both be doc_id {doc_id!r} (a doc_id "
                "is the path relative to the PATH given): name a folder that holds both"
            )
        seen[doc_id] = source.path


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
    pdf = PdfLimits(args.pdf_max_chars, args.pdf_timeout, args.pdf_truncate)
    for doc_id in plan.deletes:
        yield delete_event(doc_id, tenant=plan.tenant)
    for source in plan.sources:
        if isinstance(source, UnreadableFile):
            yield source
        elif source is None:
            yield from read_stream(
                stdin,
                content_type=args.content_type or "text/plain",
                doc_id=args.doc_id,
                title=args.title,
                tenant=plan.tenant,
                metadata=plan.meta,
                max_bytes=args.max_bytes,
                pdf=pdf,
            )
        else:
            yield from read_source(
                source.path,
                tenant=plan.tenant,
                metadata=plan.meta,
                max_bytes=args.max_bytes,
                root=source.root,
                pdf=pdf,
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
    if plan.skipped:
        links = any(item.reason.startswith(LINK_NOT_FOLLOWED) for item in plan.skipped)
        err.write(
            ("skipped (--follow-symlinks follows symbolic links):\n" if links else "skipped:\n")
            + "".join(f"  - {item}\n" for item in plan.skipped)
        )
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
        f"in {elapsed:.1f}s ({rate:.1f} docs/s); {len(failures)} failed"
        + (f", {len(plan.skipped)} skipped\n" if plan.skipped else "\n")
    )
    if failures:
        err.write("failed:\n" + "".join(f"  - {failure}\n" for failure in failures))
    return 1 if failures else 0


async def _in_thread(items: Iterator[T], batch: int = _READ_BATCH) -> AsyncIterator[T]:
    """Advance a blocking iterator off the event loop, a batch at a time."""
    while chunk := await asyncio.to_thread(lambda: list(itertools.islice(items, batch))):
        for item in chunk:
            yield item
