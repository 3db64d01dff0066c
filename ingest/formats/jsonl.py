"""JSON Lines: one document per line, ``{"id", "title", "text", "metadata"}``.

``_id`` is accepted for ``id`` (BEIR corpora). A bad line is reported as
``file:LINE`` and the other lines still come through. Metadata must be flat:
lists and objects are kept as compact JSON strings, nulls and bad keys are
dropped, each with a warning. The size limit applies per line, and the file is
streamed, so a corpus may be larger than the limit.
"""

from __future__ import annotations

import codecs
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from ingest.errors import UnreadableFile
from ingest.formats.text import normalize_newlines
from schemas.codec import load_object
from schemas.errors import NotAJsonObject
from schemas.events import Scalar

log = logging.getLogger(__name__)

MAX_KEY_CHARS = 128
_READ_CHUNK = 1 << 20


@dataclass(frozen=True)
class Record:
    line: int
    doc_id: str
    title: str
    text: str
    metadata: dict[str, Scalar] = field(default_factory=dict)


def iter_records(
    stream: BinaryIO, name: str, *, max_bytes: int
) -> Iterator[Record | UnreadableFile]:
    """Each non-blank line as a :class:`Record`, or the error naming ``name:LINE``."""
    for lineno, raw in enumerate(_lines(stream, max_bytes), 1):
        if (
            lineno == 1
            and isinstance(raw, bytes)
            and raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
        ):
            yield UnreadableFile(name, "UTF-16 JSON Lines are not supported (convert to UTF-8)")
            return
        if isinstance(raw, int):
            yield UnreadableFile(
                name, f"line of {raw} bytes is over the limit of {max_bytes}", line=lineno
            )
        elif raw.strip():
            try:
                yield parse_record(raw, name, lineno)
            except UnreadableFile as exc:
                yield exc


def count_lines(stream: BinaryIO) -> int:
    """Lines in the stream, for a progress total (blank lines included)."""
    count, last = 0, b"\n"
    while chunk := stream.read(_READ_CHUNK):
        count += chunk.count(b"\n")
        last = chunk[-1:]
    return count + (last != b"\n")


def _lines(stream: BinaryIO, max_bytes: int) -> Iterator[bytes | int]:
    """Lines without newline (and the first without a UTF-8 BOM); a line over the limit
    as its byte count, read past without keeping it."""
    first = True
    while line := stream.readline(max_bytes + 5):  # room for a BOM and "\r\n"
        if first:
            line, first = line.removeprefix(codecs.BOM_UTF8), False
        content = line.rstrip(b"\r\n")
        if len(content) <= max_bytes:
            yield content
            continue
        size = len(line)
        while not line.endswith(b"\n") and (line := stream.readline(_READ_CHUNK)):
            size += len(line)
        yield size - (len(line) - len(line.rstrip(b"\r\n")))  # without its newline


def parse_record(raw: bytes, name: str, lineno: int) -> Record:
    def bad(reason: str) -> UnreadableFile:
        return UnreadableFile(name, reason, line=lineno)

    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise bad(f"not valid UTF-8 at byte {exc.start} of the line") from None
    try:
        data = load_object(raw, not_json="invalid JSON")
    except NotAJsonObject as exc:
        raise bad(str(exc)) from None
    doc_id = data.get("id", data.get("_id"))
    if doc_id is None or doc_id == "":
        raise bad("missing id (or _id)")
    if isinstance(doc_id, bool) or not isinstance(doc_id, str | int):
        raise bad(f"id must be a string or an integer, got {type(doc_id).__name__}")
    text = data.get("text")
    if not isinstance(text, str):
        raise bad(
            "missing text" if text is None else f"text must be a string, got {type(text).__name__}"
        )
    if not text.strip():
        raise bad("empty text")
    title = data.get("title") or ""
    if not isinstance(title, str):
        raise bad(f"title must be a string, got {type(title).__name__}")
    metadata = data.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise bad(f"metadata must be an object, got {type(metadata).__name__}")
    where = f"{name}:{lineno}"
    return Record(
        lineno,
        str(doc_id),
        " ".join(title.split()),
        normalize_newlines(text),
        flatten(metadata, where),
    )


def flatten(metadata: dict[str, object], where: str) -> dict[str, Scalar]:
    """Scalars as they are, lists and objects as compact JSON; the rest dropped with a warning."""
    flat: dict[str, Scalar] = {}
    for key, value in metadata.items():
        if not 1 <= len(key) <= MAX_KEY_CHARS:
            log.warning(
                "%s: metadata key of %d chars dropped (1-%d allowed)",
                where,
                len(key),
                MAX_KEY_CHARS,
            )
        elif isinstance(value, str | int | float | bool):
            flat[key] = value
        elif isinstance(value, list | dict):
            flat[key] = json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
        else:
            log.warning(
                "%s: metadata %r is %s, dropped",
                where,
                key,
                "null" if value is None else type(value).__name__,
            )
    return flat
