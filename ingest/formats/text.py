"""Plain text and Markdown; the decoding rules every text format shares.

UTF-8 with or without a byte-order mark, or UTF-16 with one. Anything else that is
not valid UTF-8 is refused with the offset of the first bad byte; NUL bytes near
the start mean binary content. Line endings become ``\\n``.
"""

from __future__ import annotations

import codecs

from ingest.errors import UnreadableFile
from ingest.formats import Extracted

#: bytes inspected for NUL, the sign of a binary file
SNIFF_BYTES = 8192
TITLE_MAX_CHARS = 300


def decode_text(raw: bytes, name: str) -> str:
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            text = raw.decode("utf-16")  # the BOM picks the byte order and is dropped
        except UnicodeDecodeError as exc:
            raise UnreadableFile(name, f"not valid UTF-16 at byte {exc.start}") from None
        if "\x00" in text[: SNIFF_BYTES // 2]:
            raise UnreadableFile(name, "binary content (NUL bytes)")
        return normalize_newlines(text)
    if b"\x00" in raw[:SNIFF_BYTES]:
        raise UnreadableFile(name, "binary content (NUL bytes)")
    offset = len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0
    try:
        text = raw[offset:].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UnreadableFile(name, f"not valid UTF-8 at byte {offset + exc.start}") from None
    return normalize_newlines(text)


def normalize_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def title_of(text: str, fallback: str) -> str:
    """The first non-blank line, without Markdown ``#`` marks, or ``fallback``."""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped:
            return stripped.lstrip("#").strip()[:TITLE_MAX_CHARS] or fallback
    return fallback


def extract_text(raw: bytes, name: str, fallback_title: str) -> Extracted:
    text = decode_text(raw, name)
    if not text.strip():
        raise UnreadableFile(name, "no text")
    return Extracted(title=title_of(text, fallback_title), text=text)
