"""Which format a source is, and what reads it.

``CONTENT_TYPES`` maps a file's extension to its content type (a file named alone of
another extension is read as plain text), ``EXTRACTORS`` a content type to the
:mod:`ingest.formats` function that turns its bytes into text; JSON Lines has no
extractor: its records are documents of their own (:mod:`ingest.formats.jsonl`).
:func:`iter_files` is :func:`ingest.walk.iter_files` keeping only the files of these
types (hidden ones skipped).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from ingest.formats import Extractor
from ingest.formats.html import extract_html
from ingest.formats.pdf import extract_pdf
from ingest.formats.text import extract_text
from ingest.walk import Found
from ingest.walk import iter_files as _iter_files

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


def content_type_of(path: Path) -> str:
    """By extension; a named file of another extension is read as plain text."""
    return CONTENT_TYPES.get(path.suffix.lower(), "text/plain")


def iter_files(
    paths: Sequence[Path], *, recursive: bool = False, follow_symlinks: bool = False
) -> Iterator[Found]:
    """Files as given; folders expanded to their supported files (hidden ones skipped), sorted;
    symbolic links inside folders reported as skipped unless followed (:mod:`ingest.walk`)."""
    return _iter_files(paths, recursive=recursive, follow_symlinks=follow_symlinks, wanted=_wanted)


def _wanted(filename: str) -> bool:
    return not filename.startswith(".") and Path(filename).suffix.lower() in CONTENT_TYPES
