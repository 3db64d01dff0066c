"""PDF → text with pypdf: the text of each page, pages joined by a blank line.

An encrypted PDF opens only when its user password is empty (owner-only
protection); a damaged one is refused with pypdf's reason; a PDF whose pages hold
no text layer (a scan) is refused as such.

**Bounded.** A small PDF can expand into gigabytes of text (compressed content
streams) or keep a parser busy for hours (pathological page trees, operators, fonts),
so extraction has two limits, :class:`PdfLimits`:

* ``max_chars``: the text of a document may hold at most this many characters. It is
  checked page by page, so reading stops at the page that crosses the limit; the PDF
  is then refused, or — only when ``truncate`` — its text is cut at the limit (with a
  warning in the log).
* ``timeout_s``: a deadline for the whole document. Extraction runs in a **child
  process** that is killed at the deadline. A page-by-page clock check would not do:
  a single page can take unbounded time inside one call (inflating one huge stream in
  zlib's C code, a font map, a loop of operators), and a Python thread can be neither
  interrupted nor killed. A process can, and whatever it allocated goes with it: a
  decompression bomb exhausts the child, never the ingest process. The price is a
  process start per PDF (~0.2 s), small beside the parsing itself.

The child is ``python -I`` (no ``PYTHON*`` variables, no current folder or user site
on its path, so nothing in the folder being ingested can shadow a module) with this
package's source root first on ``sys.path``. It reads the PDF on stdin and writes
one JSON object on stdout: ``{"title", "text", "pages", "truncated", "warnings"}`` or
``{"error"}``.
"""

from __future__ import annotations

import io
import logging
import subprocess  # nosec B404: runs only this module, with a fixed argument list
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from pypdf import PasswordType, PdfReader
from pypdf.errors import DependencyError

from ingest.errors import UnreadableFile
from ingest.formats import Extracted
from ingest.formats.text import TITLE_MAX_CHARS, normalize_newlines, title_of

log = logging.getLogger(__name__)

#: where the ``%PDF-`` header may start (some writers put junk before it)
HEADER_WINDOW = 1024
DEFAULT_MAX_CHARS = 5_000_000
DEFAULT_TIMEOUT_S = 60.0
#: pypdf warnings passed back from the child (and logged at debug)
_MAX_WARNINGS = 20
_SOURCE_ROOT = Path(__file__).resolve().parents[2]
_PAGE_SEPARATOR = "\n\n"


@dataclass(frozen=True)
class PdfLimits:
    """Bounds of one PDF's extraction: output characters and wall-clock seconds."""

    max_chars: int = DEFAULT_MAX_CHARS
    timeout_s: float = DEFAULT_TIMEOUT_S
    truncate: bool = False

    def __post_init__(self) -> None:
        if self.max_chars < 1:
            raise ValueError(f"max_chars must be at least 1, got {self.max_chars}")
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be positive, got {self.timeout_s}")


DEFAULT_LIMITS = PdfLimits()


def child_command() -> list[str]:
    """The command line of the extraction child, without its two arguments."""
    code = (
        f"import sys; sys.path.insert(0, {str(_SOURCE_ROOT)!r}); "
        "from ingest.formats.pdf import child_main; child_main()"
    )
    return [sys.executable, "-I", "-c", code]


def extract_pdf(
    raw: bytes,
    name: str,
    fallback_title: str,
    *,
    limits: PdfLimits = DEFAULT_LIMITS,
    command: Sequence[str] | None = None,
) -> Extracted:
    """Text and title of a PDF, extracted in a child process within ``limits``.

    ``command`` replaces :func:`child_command` (tests); it is given ``max_chars`` and
    ``truncate`` (``0``/``1``) as arguments and the PDF on stdin.
    """
    if b"%PDF-" not in raw[:HEADER_WINDOW]:
        raise UnreadableFile(name, "not a PDF (no %PDF- header)")
    argv = [*(command or child_command()), str(limits.max_chars), str(int(limits.truncate))]
    try:
        done = subprocess.run(  # nosec B603: argv is ours, no shell
            argv, input=raw, capture_output=True, timeout=limits.timeout_s, check=False
        )
    except subprocess.TimeoutExpired:  # run() has killed and reaped the child
        raise UnreadableFile(
            name, f"text extraction did not finish within the limit of {limits.timeout_s:g} s"
        ) from None
    except OSError as exc:
        raise UnreadableFile(name, f"cannot start the PDF reader: {exc}") from None
    result = _result(done, name)
    for warning in result.get("warnings", []):
        log.debug("%s: pypdf: %s", name, warning)
    if "error" in result:
        raise UnreadableFile(name, str(result["error"]))
    text, pages = str(result["text"]), int(result["pages"])
    if result["truncated"]:
        log.warning("%s: PDF text truncated at the limit of %d characters", name, limits.max_chars)
    if not text:
        raise UnreadableFile(name, f"no extractable text (scanned?) in {pages} page(s)")
    return Extracted(title=str(result["title"]) or title_of(text, fallback_title), text=text)


def _result(done: subprocess.CompletedProcess[bytes], name: str) -> dict[str, Any]:
    if done.returncode == 0:
        try:
            result = orjson.loads(done.stdout)
        except orjson.JSONDecodeError:
            result = None
        if isinstance(result, dict):
            return result
    detail = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no output"]
    how = (
        f"killed by signal {-done.returncode}" if done.returncode < 0 else f"exit {done.returncode}"
    )
    raise UnreadableFile(name, f"the PDF reader failed ({how}: {detail[0][:200]})")


def read_pdf(raw: bytes, name: str, max_chars: int, truncate: bool) -> dict[str, Any]:
    """The child's work, in this process: see the module docstring for the result."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = _read(raw, name, max_chars, truncate)
        except UnreadableFile as exc:
            result = {"error": exc.reason}
    result["warnings"] = [str(w.message) for w in caught[:_MAX_WARNINGS]]
    return result


def _read(raw: bytes, name: str, max_chars: int, truncate: bool) -> dict[str, Any]:
    try:
        reader = PdfReader(io.BytesIO(raw))
        if reader.is_encrypted and reader.decrypt("") == PasswordType.NOT_DECRYPTED:
            raise UnreadableFile(name, "encrypted PDF (needs a password)")
        n_pages = len(reader.pages)
        parts: list[str] = []
        size, truncated = 0, False
        for number, page in enumerate(reader.pages, 1):
            text = _clean(page.extract_text() or "")
            if not text:
                continue
            text = _PAGE_SEPARATOR + text if parts else text
            if size + len(text) > max_chars:
                if not truncate:
                    raise UnreadableFile(
                        name,
                        f"text longer than the limit of {max_chars} characters "
                        f"(reached on page {number} of {n_pages})",
                    )
                parts.append(text[: max_chars - size])
                truncated = True
                break
            parts.append(text)
            size += len(text)
        meta = reader.metadata
        meta_title = str(meta.title or "") if meta is not None else ""
    except UnreadableFile:
        raise
    except DependencyError as exc:
        raise UnreadableFile(name, f"encrypted PDF: {exc}") from None
    except Exception as exc:  # pypdf raises many types on damaged input
        raise UnreadableFile(name, f"broken PDF ({type(exc).__name__}: {exc})") from None
    return {
        "title": " ".join(meta_title.split())[:TITLE_MAX_CHARS],
        "text": "".join(parts).strip(),
        "pages": n_pages,
        "truncated": truncated,
    }


def _clean(text: str) -> str:
    """Drop NULs and lone surrogates that some fonts' maps produce; trim the page."""
    text = text.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")
    return normalize_newlines(text).strip()


def child_main() -> None:
    """Entry point of the child: ``MAX_CHARS TRUNCATE`` as arguments, the PDF on stdin."""
    max_chars, truncate = int(sys.argv[1]), sys.argv[2] == "1"
    result = read_pdf(sys.stdin.buffer.read(), "<pdf>", max_chars, truncate)
    sys.stdout.buffer.write(orjson.dumps(result))
