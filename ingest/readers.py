"""Files → document events. ``doc_id`` is stable per source: the resolved path."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from ingest.errors import UnreadableFile
from schemas.events import DocumentEvent, Scalar

CONTENT_TYPES = {".txt": "text/plain", ".md": "text/markdown", ".markdown": "text/markdown"}
DEFAULT_MAX_BYTES = 10 * 1024 * 1024


def iter_files(paths: Sequence[Path], *, recursive: bool = False) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            pattern = "**/*" if recursive else "*"
            yield from sorted(p for p in path.glob(pattern) if p.is_file() and p.suffix.lower() in CONTENT_TYPES)
        else:
            yield path


def title_of(text: str, fallback: str) -> str:
    for line in text.splitlines():
        stripped = line.strip()
        if stripped:
            return stripped.lstrip("#").strip()[:300] or fallback
    return fallback


def read_document(
    path: Path,
    *,
    tenant: str = "default",
    metadata: Mapping[str, Scalar] | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    version: int | None = None,
    doc_id: str | None = None,
) -> DocumentEvent:
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise UnreadableFile(str(path), exc.strerror or "cannot stat") from None
    if size == 0:
        raise UnreadableFile(str(path), "empty file")
    if size > max_bytes:
        raise UnreadableFile(str(path), f"{size} bytes is over the limit of {max_bytes}")
    raw = path.read_bytes()
    if b"\x00" in raw[:8192]:
        raise UnreadableFile(str(path), "binary content (NUL bytes)")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UnreadableFile(str(path), f"not valid UTF-8 at byte {exc.start}") from None
    if not text.strip():
        raise UnreadableFile(str(path), "no text")
    resolved = path.resolve()
    return DocumentEvent(
        doc_id=doc_id or resolved.as_posix(),
        tenant=tenant,
        version=version if version is not None else time.time_ns() // 1000,
        title=title_of(text, path.stem),
        text=text,
        content_type=CONTENT_TYPES.get(path.suffix.lower(), "text/plain"),
        source_uri=resolved.as_uri(),
        metadata=dict(metadata or {}),
    )
