"""One module per input format; each turns raw bytes into text (and a title).

    text.py    plain text and Markdown: decoding rules shared by every text format
    html.py    HTML → text with paragraph breaks and ``#`` headings (selectolax)
    pdf.py     PDF → text per page (pypdf), in a child process bounded in characters and time
    jsonl.py   JSON Lines → one record per line (id, title, text, metadata)

Extractors raise :class:`ingest.errors.UnreadableFile` naming the source; building
the :class:`schemas.events.DocumentEvent` is :mod:`ingest.events`' job.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Extracted:
    title: str
    text: str


#: ``(raw bytes, name shown in errors, title when the content has none) -> Extracted``
Extractor = Callable[[bytes, str, str], Extracted]
