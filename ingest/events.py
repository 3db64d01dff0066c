"""Extracted content → a validated :class:`~schemas.events.DocumentEvent`.

:class:`EventBuilder` holds one source's settings (tenant, metadata, version, limits)
and turns its extracted text, or its JSON Lines records, into events — an
:class:`~ingest.errors.UnreadableFile` for one that does not validate.
:func:`delete_event` makes a delete. ``version`` comes from a :class:`VersionClock`
unless given; ``content_hash`` from :func:`content_hash`, over exactly the values
that travel.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import partial

from pydantic import ValidationError

from ingest.content_types import EXTRACTORS
from ingest.errors import UnreadableFile
from ingest.formats import Extracted
from ingest.formats.jsonl import Record
from ingest.formats.pdf import PdfLimits, extract_pdf
from schemas.events import DocumentEvent, Scalar


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


class EventBuilder:
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
