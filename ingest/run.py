"""One ``aichat ingest`` run: read the plan's sources, publish, report.

:func:`ingest_paths` makes the :class:`~ingest.plan.Plan`, reads its sources in a
thread (a batch at a time, off the event loop), publishes through an
:class:`~ingest.sdk.EventPublisher` with a bounded window and counts every
acknowledgement on the :class:`~ingest.progress.Progress` line. What was skipped and
what failed go to stderr, the summary to stdout; it returns the exit status.
``publisher_factory`` is the seam tests use to publish into memory.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from typing import BinaryIO, TextIO, TypeVar

from ingest.errors import PublishFailed, UnreadableFile, UsageError
from ingest.events import delete_event
from ingest.formats.pdf import PdfLimits
from ingest.plan import Plan, make_plan
from ingest.progress import MIB, Progress
from ingest.readers import read_source, read_stream
from ingest.sdk import DocumentPublisher, EventPublisher
from ingest.walk import LINK_NOT_FOLLOWED
from schemas.events import DocumentEvent
from streams.config import KafkaSettings

T = TypeVar("T")
PublisherFactory = Callable[[KafkaSettings], EventPublisher]
#: documents read per hop to the reading thread
_READ_BATCH = 32


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
