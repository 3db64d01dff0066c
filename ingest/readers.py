"""Sources → document events.

:func:`read_source` turns one path into events, yielding an :class:`UnreadableFile`
for what it cannot read (a JSON Lines file yields its good records *and* one error
per bad line); :func:`read_stream` does the same for stdin; :func:`read_document`
is the one-file, raise-on-error form. ``version`` comes from a :class:`VersionClock`;
``content_hash`` from :func:`content_hash`.

``doc_id`` is the id given, the JSON Lines record id, or the file's path relative to
``root`` — the folder the caller named (``aichat ingest ./docs`` → ``guide/setup.md``),
by default the file's own folder (a file named alone is its name) — never a path of
the host: the same tree ingested from another checkout, machine or mount point keeps
its ids. ``source_uri`` is that relative path as a relative URI reference
(``guide/setup%20notes.md``), for a JSON Lines record its file's; empty for a stream.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote

from pydantic import ValidationError

from ingest.errors import UnreadableFile
from ingest.formats import Extracted, Extractor
from ingest.formats.html import extract_html
from ingest.formats.jsonl import Record, iter_records
from ingest.formats.pdf import DEFAULT_LIMITS, PdfLimits, extract_pdf
from ingest.formats.text import extract_text
from ingest.walk import Found
from ingest.walk import iter_files as _iter_files
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


def iter_files(
    paths: Sequence[Path], *, recursive: bool = False, follow_symlinks: bool = False
) -> Iterator[Found]:
    """Files as given; folders expanded to their supported files (hidden ones skipped), sorted;
    symbolic links inside folders reported as skipped unless followed (:mod:`ingest.walk`)."""
    return _iter_files(paths, recursive=recursive, follow_symlinks=follow_symlinks, wanted=_wanted)


def source_name(path: Path, root: Path | None = None) -> str:
    """``path`` relative to ``root`` (default: its folder), ``/``-separated: the default doc_id.

    Lexical, like the walk that joined ``root`` and the names under it: links are not
    resolved, so a file reached through a followed link is named by the link's path.
    """
    return path.relative_to(path.parent if root is None else root).as_posix()


def _is_text(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # bytes the OS handed over as surrogates
        return False
    return True


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
    root: Path | None = None,
    pdf: PdfLimits = DEFAULT_LIMITS,
) -> Iterator[DocumentEvent | UnreadableFile]:
    """The documents of one file, and an error for each part that cannot be read.

    ``root``: the folder ``doc_id`` and ``source_uri`` are relative to (see the module
    docstring); ``path`` must lie under it.
    """
    name, kind = str(path), content_type_of(path)
    relative = source_name(path, root)
    if doc_id is None and kind not in JSONL_TYPES and not _is_text(relative):
        yield UnreadableFile(name, "file name is not valid UTF-8, so it cannot be a doc_id")
        return
    # the bytes of a name that is not UTF-8 are percent-encoded as they are
    source_uri = quote(relative, errors="surrogateescape")
    build = _Builder(name, tenant, metadata, version, clock, source_uri=source_uri, pdf=pdf)
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
    yield build.one(raw, kind, doc_id or relative, path.stem)


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
    pdf: PdfLimits = DEFAULT_LIMITS,
) -> Iterator[DocumentEvent | UnreadableFile]:
    """Like :func:`read_source` for a byte stream; ``doc_id`` is required unless JSON Lines."""
    build = _Builder(name, tenant, metadata, version, clock, source_uri="", pdf=pdf)
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
    root: Path | None = None,
    pdf: PdfLimits = DEFAULT_LIMITS,
) -> DocumentEvent:
    """One file as one document; raises :class:`UnreadableFile` (also for JSON Lines: use
    :func:`read_source`)."""
    if content_type_of(path) in JSONL_TYPES:
        raise UnreadableFile(str(path), "JSON Lines hold many documents (use read_source)")
    (result,) = read_source(
        path,
        tenant=tenant,
        metadata=metadata,
        max_bytes=max_bytes,
        version=version,
        doc_id=doc_id,
        root=root,
        pdf=pdf,
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
        pdf: PdfLimits,
    ) -> None:
        self.name, self.tenant, self.source_uri = name, tenant, source_uri
        self.pdf = pdf
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
        extract = EXTRACTORS[content_type]
        if extract is extract_pdf:
            extract = partial(extract_pdf, limits=self.pdf)
        try:
            extracted = extract(raw, self.name, fallback_title)
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
