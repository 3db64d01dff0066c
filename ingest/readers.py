"""Sources → document events.

:func:`read_source` turns one path into events, yielding an :class:`UnreadableFile`
for what it cannot read (a JSON Lines file yields its good records *and* one error
per bad line); :func:`read_stream` does the same for stdin; :func:`read_document`
is the one-file, raise-on-error form. The content type picks the extractor
(:mod:`ingest.content_types`); :mod:`ingest.events` builds the events.

``doc_id`` is the id given, the JSON Lines record id, or the file's path relative to
``root`` — the folder the caller named (``aichat ingest ./docs`` → ``guide/setup.md``),
by default the file's own folder (a file named alone is its name) — never a path of
the host: the same tree ingested from another checkout, machine or mount point keeps
its ids. ``source_uri`` is that relative path as a relative URI reference
(``guide/setup%20notes.md``), for a JSON Lines record its file's; empty for a stream.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote

from ingest.content_types import EXTRACTORS, JSONL_TYPES, STREAM_TYPES, content_type_of
from ingest.errors import UnreadableFile
from ingest.events import EventBuilder, VersionClock
from ingest.formats.jsonl import iter_records
from ingest.formats.pdf import DEFAULT_LIMITS, PdfLimits
from schemas.events import DocumentEvent, Scalar

DEFAULT_MAX_BYTES = 10 * 1024 * 1024


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
    build = EventBuilder(name, tenant, metadata, version, clock, source_uri=source_uri, pdf=pdf)
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
    build = EventBuilder(name, tenant, metadata, version, clock, source_uri="", pdf=pdf)
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
