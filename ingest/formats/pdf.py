"""PDF → text with pypdf: the text of each page, pages joined by a blank line.

An encrypted PDF opens only when its user password is empty (owner-only
protection); a damaged one is refused with pypdf's reason; a PDF whose pages hold
no text layer (a scan) is refused as such.
"""

from __future__ import annotations

import io
import logging
import warnings

from pypdf import PasswordType, PdfReader
from pypdf.errors import DependencyError

from ingest.errors import UnreadableFile
from ingest.formats import Extracted
from ingest.formats.text import TITLE_MAX_CHARS, normalize_newlines, title_of

log = logging.getLogger(__name__)

#: where the ``%PDF-`` header may start (some writers put junk before it)
HEADER_WINDOW = 1024


def extract_pdf(raw: bytes, name: str, fallback_title: str) -> Extracted:
    if b"%PDF-" not in raw[:HEADER_WINDOW]:
        raise UnreadableFile(name, "not a PDF (no %PDF- header)")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pages, meta_title = _read(raw, name)
    for warning in caught:
        log.debug("%s: pypdf: %s", name, warning.message)
    text = "\n\n".join(page for page in pages if page)
    if not text:
        raise UnreadableFile(name, f"no extractable text (scanned?) in {len(pages)} page(s)")
    return Extracted(title=meta_title or title_of(text, fallback_title), text=text)


def _read(raw: bytes, name: str) -> tuple[list[str], str]:
    try:
        reader = PdfReader(io.BytesIO(raw))
        if reader.is_encrypted and reader.decrypt("") == PasswordType.NOT_DECRYPTED:
            raise UnreadableFile(name, "encrypted PDF (needs a password)")
        pages = [_clean(page.extract_text() or "") for page in reader.pages]
        meta = reader.metadata
        meta_title = str(meta.title or "") if meta is not None else ""
    except UnreadableFile:
        raise
    except DependencyError as exc:
        raise UnreadableFile(name, f"encrypted PDF: {exc}") from None
    except Exception as exc:  # pypdf raises many types on damaged input
        raise UnreadableFile(name, f"broken PDF ({type(exc).__name__}: {exc})") from None
    return pages, " ".join(meta_title.split())[:TITLE_MAX_CHARS]


def _clean(text: str) -> str:
    """Drop NULs and lone surrogates that some fonts' maps produce; trim the page."""
    text = text.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")
    return normalize_newlines(text).strip()
