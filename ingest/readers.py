"""Sources → document events.

:func:`read_source` turns one path into events, yielding an :class:`UnreadableFile`
for what it cannot read (a JSON Lines file yields its good records *and* one error
per bad line); :func:`read_stream` does the same for stdin; :func:`read_document`
is the one-file, raise-on-error form. ``doc_id`` is stable per source: the resolved
path, the JSON Lines record id, or the id given. ``version`` comes from a
:class:`VersionClock`; ``content_hash`` from :func:`content_hash`.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

from pydantic import ValidationError

from ingest.errors import UnreadableFile
from ingest.formats import Extracted, Extractor
from ingest.formats.html import extract_html
from ingest.formats.jsonl import Record, iter_records
from ingest.formats.pdf import extract_pdf
from ingest.formats.text import extract_text
from schemas.events import DocumentEvent, Scalar

DEFAULT_MAX_BYTES = 10 * 1024 * 1024
JSONL = "application/x-ndjson"
JSONL_TYPES = frozenset({JSONL, "application/jsonl"})
CONTENT_TYPES = {
    ".txt": "text/plain",
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".html": "text/html",
    ".htm": "text/html",
    ".pdf": "application/pdf",
    ".jsonl": JSONL,
    ".ndjson": JSONL,
}
EXTRACTORS: dict[str, Extractor] = {
    "text/plain": extract_text,
    "text/markdown": extract_text,
    "text/html": extract_html,
    "application/pdf": extract_pdf,
}
#: what ``--content-type`` may name for stdin
STREAM_TYPES = (*EXTRACTORS, *sorted(JSONL_TYPES))


def content_hash(title: str, text: str, metadata: Mapping[str, Scalar]) -> str:
    """sha256 hex of the canonical JSON ``[title, text, [[key, value], …]]``.

    Keys sorted, no whitespace, non-ASCII as UTF-8 (not escaped): equal content
    gives the same hash in any process; ``1``, ``1.0``, ``"1"`` and ``true`` differ.
    """
    canonical = json.dumps(
        [title, text, sorted(metadata.items())], ensure_ascii=False, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


class VersionClock:
    """Microseconds since the epoch, strictly increasing within this process even
    when the clock stands still or steps back."""

    def __init__(self, now_ns: Callable[[], int] = time.time_ns) -> None:
        self._now_ns = now_ns
        self._last = 0
        self._lock = threading.Lock()

    def next(self) -> int:
        with self._lock:
            self._last = max(self._now_ns() // 1000, self._last + 1)
            return self._last


_CLOCK = VersionClock()


def content_type_of(path: Path) -> str:
    """By extension; a named file of another extension is read as plain text."""
    return CONTENT_TYPES.get(path.suffix.lower(), "text/plain")


def iter_files(paths: Sequence[Path], *, recursive: bool = False) -> Iterator[Path]:
    """Files as given; folders expanded to their supported files (hidden ones skipped), sorted."""
    for path in paths:
        if not path.is_dir():
            yield path
        elif recursive:
            for folder, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                yield from (Path(folder, f) for f in sorted(files) if _wanted(f))
        else:
            yield from sorted(p for p in path.iterdir() if p.is_file() and _wanted(p.name))


def _wanted(filename: str) -> bool:
    return not filename.startswith(".") and Path(filename).suffix.lower() in CONTENT_TYPES


def read_source(
    path: Path,
    *,
    tenant: str = "default",
    metadata: Mapping[str, Scalar] | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    version: int | None = None,
    doc_id: str | None = None,
    clock: VersionClock | None = None,
) -> Iterator[DocumentEvent | UnreadableFile]:
    """The documents of one file, and an error for each part that cannot be read."""
    name, kind = str(path), content_type_of(path)
    build = _Builder(name, tenant, metadata, version, clock, source_uri=path.resolve().as_uri())
    try:
        size = path.stat().st_size
        if size == 0:
            raise UnreadableFile(name, "empty file")
        if kind in JSONL_TYPES:
            if doc_id is not None:
                raise UnreadableFile(
                    name, "a doc_id cannot be given for JSON Lines (records carry ids)"
                )
            with path.open("rb") as stream:
                yield from build.records(iter_records(stream, name, max_bytes=max_bytes))
            return
        if size > max_bytes:
            raise UnreadableFile(name, f"{size} bytes is over the limit of {max_bytes}")
        raw = path.read_bytes()
    except OSError as exc:
        yield UnreadableFile(name, exc.strerror or type(exc).__name__)
        return
    except UnreadableFile as exc:
        yield exc
        return
    yield build.one(raw, kind, doc_id or path.resolve().as_posix(), path.stem)


def read_stream(
    stream: BinaryIO,
    *,
    content_type: str = "text/plain",
    doc_id: str | None = None,
    title: str | None = None,
    tenant: str = "default",
    metadata: Mapping[str, Scalar] | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    version: int | None = None,
    clock: VersionClock | None = None,
    name: str = "<stdin>",
) -> Iterator[DocumentEvent | UnreadableFile]:
    """Like :func:`read_source` for a byte stream; ``doc_id`` is required unless JSON Lines."""
    build = _Builder(name, tenant, metadata, version, clock, source_uri="")
    if content_type in JSONL_TYPES:
        yield from build.records(iter_records(stream, name, max_bytes=max_bytes))
        return
    if content_type not in EXTRACTORS:
        raise ValueError(f"content type {content_type!r} is not one of {', '.join(STREAM_TYPES)}")
    if not doc_id:
        raise ValueError("a doc_id is required for a document read from a stream")
    raw = stream.read(max_bytes + 1)
    if not raw:
        yield UnreadableFile(name, "empty input")
    elif len(raw) > max_bytes:
        yield UnreadableFile(name, f"more than {max_bytes} bytes (the limit)")
    else:
        yield build.one(raw, content_type, doc_id, doc_id, title=title)


def read_document(
    path: Path,
    *,
    tenant: str = "default",
    metadata: Mapping[str, Scalar] | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    version: int | None = None,
    doc_id: str | None = None,
) -> DocumentEvent:
    """One file as one document; raises :class:`UnreadableFile` (also for JSON Lines: use
    :func:`read_source`)."""
    if content_type_of(path) in JSONL_TYPES:
        raise UnreadableFile(str(path), "JSON Lines hold many documents (use read_source)")
    (result,) = read_source(
        path, tenant=tenant, metadata=metadata, max_bytes=max_bytes, version=version, doc_id=doc_id
    )
    if isinstance(result, UnreadableFile):
        raise result
    return result


def delete_event(
    doc_id: str,
    *,
    tenant: str = "default",
    version: int | None = None,
    clock: VersionClock | None = None,
) -> DocumentEvent:
    """A delete of ``doc_id``; its fresh version beats every version published before."""
    version = version if version is not None else (clock or _CLOCK).next()
    return DocumentEvent(op="delete", doc_id=doc_id, tenant=tenant, version=version)


class _Builder:
    """Extracted content + the source's settings → a validated event with its hash."""

    def __init__(
        self,
        name: str,
        tenant: str,
        metadata: Mapping[str, Scalar] | None,
        version: int | None,
        clock: VersionClock | None,
        *,
        source_uri: str,
    ) -> None:
        self.name, self.tenant, self.source_uri = name, tenant, source_uri
        self.metadata = dict(metadata or {})
        self.version, self.clock = version, clock or _CLOCK

    def one(
        self,
        raw: bytes,
        content_type: str,
        doc_id: str,
        fallback_title: str,
        *,
        title: str | None = None,
    ) -> DocumentEvent | UnreadableFile:
        try:
            extracted = EXTRACTORS[content_type](raw, self.name, fallback_title)
        except UnreadableFile as exc:
            return exc
        return self.event(doc_id, title or extracted.title, extracted, content_type, self.metadata)

    def records(
        self, records: Iterable[Record | UnreadableFile]
    ) -> Iterator[DocumentEvent | UnreadableFile]:
        """Record metadata wins over the source's (``--meta``) on the same key."""
        seen = False
        for record in records:
            seen = True
            if isinstance(record, UnreadableFile):
                yield record
                continue
            extracted = Extracted(record.title, record.text)
            metadata = {**self.metadata, **record.metadata}
            yield self.event(
                record.doc_id, record.title, extracted, "text/plain", metadata, line=record.line
            )
        if not seen:
            yield UnreadableFile(self.name, "no records")

    def event(
        self,
        doc_id: str,
        title: str,
        extracted: Extracted,
        content_type: str,
        metadata: dict[str, Scalar],
        *,
        line: int | None = None,
    ) -> DocumentEvent | UnreadableFile:
        try:
            event = DocumentEvent(
                doc_id=doc_id,
                tenant=self.tenant,
                version=self.version if self.version is not None else self.clock.next(),
                title=title,
                text=extracted.text,
                content_type=content_type,
                source_uri=self.source_uri,
                metadata=metadata,
            )
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()
            )
            return UnreadableFile(self.name, f"invalid document: {problems}", line=line)
        # hashed after validation: exactly the values that travel
        digest = content_hash(event.title, event.text, event.metadata)
        return event.model_copy(update={"content_hash": digest})
