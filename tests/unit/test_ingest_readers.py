from __future__ import annotations

import hashlib
import io
import logging
import os
import sys
from pathlib import Path

import pytest
from pypdf import PdfReader, PdfWriter

from ingest.content_types import iter_files
from ingest.errors import UnreadableFile
from ingest.events import VersionClock, content_hash
from ingest.formats.pdf import PdfLimits, extract_pdf, read_pdf
from ingest.readers import read_document, read_source, read_stream
from schemas.events import DocumentEvent


def make_pdf(pages: list[str], *, title: str | None = None) -> bytes:
    """A minimal PDF: one Helvetica text line per line of each page ('' = a page without text)."""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [%s] /Count %d >>"
        % (b" ".join(b"%d 0 R" % (4 + 2 * i) for i in range(len(pages))), len(pages)),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    for i, text in enumerate(pages):
        shows = " ".join(f"({line}) Tj 0 -16 Td" for line in text.splitlines())
        stream = f"BT /F1 12 Tf 72 720 Td {shows} ET".encode("latin-1") if text else b""
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            b"/Resources << /Font << /F1 3 0 R >> >> /Contents %d 0 R >>" % (5 + 2 * i)
        )
        objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream))
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    if title is None:
        return bytes(out)
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(bytes(out))))
    writer.add_metadata({"/Title": title})
    return _written(writer)


def _written(writer: PdfWriter) -> bytes:
    buf = io.BytesIO()
    writer.write(buf)
    return buf.getvalue()


def _encrypted(raw: bytes, *, user: str, owner: str) -> bytes:
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(raw)))
    writer.encrypt(user_password=user, owner_password=owner)
    return _written(writer)


def _one(path: Path, **kwargs: object) -> DocumentEvent | UnreadableFile:
    (result,) = read_source(path, **kwargs)  # type: ignore[arg-type]
    return result


def _error(path: Path) -> str:
    result = _one(path)
    assert isinstance(result, UnreadableFile), result
    assert str(path) in str(result)
    return result.reason


# ---- plain text and Markdown -------------------------------------------------------------


def test_plain_text_becomes_one_document(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("\n  First line\nsecond line\n", encoding="utf-8")
    event = read_document(path, tenant="acme", metadata={"source": "unit"})
    assert (event.doc_id, event.source_uri) == ("notes.txt", "notes.txt")  # never a host path
    assert (event.tenant, event.title, event.content_type) == ("acme", "First line", "text/plain")
    assert event.text == "\n  First line\nsecond line\n"
    assert event.metadata == {"source": "unit"}
    assert event.content_hash == content_hash(event.title, event.text, event.metadata)


def test_markdown_title_loses_its_hashes_and_crlf_becomes_lf(tmp_path: Path) -> None:
    path = tmp_path / "guide.md"
    path.write_bytes(b"# Expense policy\r\n\r\nReceipts within 30 days.\r\n")
    event = read_document(path)
    assert (event.title, event.content_type) == ("Expense policy", "text/markdown")
    assert event.text == "# Expense policy\n\nReceipts within 30 days.\n"


def test_file_without_a_title_line_is_titled_by_its_name(tmp_path: Path) -> None:
    path = tmp_path / "faq.markdown"
    path.write_text("###\nbody", encoding="utf-8")
    assert read_document(path).title == "faq"


@pytest.mark.parametrize(
    "raw",
    [
        "café ✓".encode(),
        "\ufeffcafé ✓".encode(),
        "\ufeffcafé ✓".encode("utf-16-le"),
        "\ufeffcafé ✓".encode("utf-16-be"),
    ],
    ids=["utf-8", "utf-8-bom", "utf-16-le-bom", "utf-16-be-bom"],
)
def test_encodings(tmp_path: Path, raw: bytes) -> None:
    path = tmp_path / "enc.txt"
    path.write_bytes(raw)
    assert read_document(path).text == "café ✓"


@pytest.mark.parametrize(
    ("name", "raw", "reason"),
    [
        ("latin1.txt", "abc café".encode("latin-1"), "not valid UTF-8 at byte 7"),
        ("bom.md", b"\xef\xbb\xbfab\xff", "not valid UTF-8 at byte 5"),
        ("image.md", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary content"),
        ("page.html", b"<p>x</p>\x00", "binary content"),
        ("odd.txt", b"\xff\xfea\x00b", "not valid UTF-16 at byte"),
        ("empty.txt", b"", "empty file"),
        ("blank.md", b" \n\t\n", "no text"),
    ],
)
def test_unreadable_files_are_named_with_the_reason(
    tmp_path: Path, name: str, raw: bytes, reason: str
) -> None:
    path = tmp_path / name
    path.write_bytes(raw)
    assert reason in _error(path)
    with pytest.raises(UnreadableFile, match=reason):
        read_document(path)


def test_oversized_and_missing_files(tmp_path: Path) -> None:
    big = tmp_path / "big.txt"
    big.write_bytes(b"x" * 101)
    (result,) = read_source(big, max_bytes=100)
    assert isinstance(result, UnreadableFile)
    assert str(result) == f"{big}: 101 bytes is over the limit of 100"
    assert isinstance(_one(big, max_bytes=101), DocumentEvent)
    assert "No such file" in _error(tmp_path / "gone.txt")


def test_given_doc_id_and_version_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_text("hello", encoding="utf-8")
    event = read_document(path, doc_id="sample/a.txt", version=7)
    assert (event.doc_id, event.version) == ("sample/a.txt", 7)
    assert event.source_uri == "a.txt"


def test_doc_id_and_source_uri_are_relative_to_the_root_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "docs" / "guide" / "setup notes.md"
    path.parent.mkdir(parents=True)
    path.write_text("# Setup", encoding="utf-8")
    event = read_document(path, root=tmp_path / "docs")
    assert (event.doc_id, event.source_uri) == ("guide/setup notes.md", "guide/setup%20notes.md")
    monkeypatch.chdir(tmp_path)  # a relative root, as typed: "./docs"
    event = read_document(Path("./docs/guide/setup notes.md"), root=Path("./docs"))
    assert event.doc_id == "guide/setup notes.md"


def test_a_file_name_that_is_not_utf8_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / os.fsdecode(b"caf\xe9.md")
    path.write_text("text", encoding="utf-8")
    assert _error(path) == "file name is not valid UTF-8, so it cannot be a doc_id"
    event = read_document(path, doc_id="cafe")  # an id given: the name is only the source_uri
    assert (event.doc_id, event.source_uri) == ("cafe", "caf%E9.md")
    # a folder above the root may have any name: it is not part of the doc_id
    inner = path.parent / "ok.md"
    inner.write_text("text", encoding="utf-8")
    assert read_document(inner, root=path.parent).doc_id == "ok.md"


# ---- HTML --------------------------------------------------------------------------------

PAGE = b"""<!doctype html><html><head><title>Travel &amp; expenses</title>
<style>p { color: red }</style><script>var tracking = 1;</script></head>
<body><header><h1>Intranet</h1><nav><a href="/">Home</a> | <a>Menu</a></nav></header>
<main>
  <h1>Travel   policy</h1>
  <p>Book <b>economy</b>
     for flights under six hours.</p>
  <p>Hotels up to<br>EUR 150 a night.</p>
  <h3>Receipts</h3>
  <ul><li>Keep them</li><li>Upload them</li></ul>
  <form><label>Search</label><input></form>
  <div hidden>secret draft</div>
</main>
<aside>Related: parking</aside><footer>&copy; ACME</footer>
</body></html>"""


def test_html_keeps_content_structure_and_drops_boilerplate(tmp_path: Path) -> None:
    path = tmp_path / "travel.html"
    path.write_bytes(PAGE)
    event = read_document(path)
    assert event.content_type == "text/html"
    assert event.title == "Travel & expenses"
    assert event.text == (
        "# Travel policy\n\n"
        "Book economy for flights under six hours.\n\n"
        "Hotels up to\nEUR 150 a night.\n\n"
        "### Receipts\n\n"
        "- Keep them\n- Upload them"
    )
    for junk in ("tracking", "color", "Home", "Intranet", "Search", "secret", "parking", "ACME"):
        assert junk not in event.text


def test_html_without_title_uses_first_h1_and_without_main_the_body(tmp_path: Path) -> None:
    path = tmp_path / "page.htm"
    path.write_bytes(
        b"<body><div>Intro</div><h1>Leave</h1><div><p>Ask <i>early</i>.</p></div></body>"
    )
    event = read_document(path)
    assert event.title == "Leave"
    assert event.text == "Intro\n\n# Leave\n\nAsk early."


def test_html_with_only_boilerplate_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "nav.html"
    path.write_bytes(b"<html><body><nav>Home</nav><script>x()</script></body></html>")
    assert _error(path) == "no text after removing markup"


# ---- PDF ---------------------------------------------------------------------------------


def test_pdf_pages_are_joined_with_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "handbook.pdf"
    path.write_bytes(make_pdf(["Handbook\nChapter one", "", "Chapter two"]))
    event = read_document(path)
    assert event.content_type == "application/pdf"
    assert event.text == "Handbook\nChapter one\n\nChapter two"
    assert event.title == "Handbook"


def test_pdf_title_comes_from_its_metadata(tmp_path: Path) -> None:
    path = tmp_path / "t.pdf"
    path.write_bytes(make_pdf(["Body text"], title="Official  title"))
    assert read_document(path).title == "Official title"


def test_pdf_protected_only_by_an_owner_password_is_read(tmp_path: Path) -> None:
    path = tmp_path / "owner.pdf"
    path.write_bytes(_encrypted(make_pdf(["Open to read"]), user="", owner="boss"))
    assert read_document(path).text == "Open to read"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (
            _encrypted(make_pdf(["Secret"]), user="pw", owner="pw"),
            "encrypted PDF (needs a password)",
        ),
        (make_pdf(["", ""]), "no extractable text (scanned?)"),
        (make_pdf(["Cut short"])[:120], "broken PDF"),
        (b"PK\x03\x04 a zip, not a pdf", "not a PDF"),
    ],
    ids=["encrypted", "scanned", "truncated", "not-pdf"],
)
def test_unreadable_pdfs(tmp_path: Path, raw: bytes, reason: str) -> None:
    path = tmp_path / "bad.pdf"
    path.write_bytes(raw)
    assert reason in _error(path)


THREE_PAGES = make_pdf(["a" * 40, "b" * 40, "c" * 40])


def test_pdf_text_over_the_limit_is_refused_naming_the_file_and_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "long.pdf"
    path.write_bytes(THREE_PAGES)
    (result,) = read_source(path, pdf=PdfLimits(max_chars=60))
    assert str(result) == (
        f"{path}: text longer than the limit of 60 characters (reached on page 2 of 3)"
    )
    within = read_document(path, pdf=PdfLimits(max_chars=40 * 3 + 4))  # + two "\n\n"
    assert within.text == "\n\n".join(c * 40 for c in "abc")


def test_pdf_text_is_cut_at_the_limit_only_when_truncate_is_set(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "long.pdf"
    path.write_bytes(THREE_PAGES)
    with caplog.at_level(logging.WARNING, logger="ingest.formats.pdf"):
        event = read_document(path, pdf=PdfLimits(max_chars=60, truncate=True))
    assert event.text == "a" * 40 + "\n\n" + "b" * 18
    assert f"{path}: PDF text truncated at the limit of 60 characters" in caplog.text


def test_pdf_limit_is_checked_page_by_page_in_the_reader() -> None:
    """The child stops at the page that crosses the limit: later pages are never read."""
    result = read_pdf(THREE_PAGES, "x.pdf", max_chars=30, truncate=True)
    assert (result["text"], result["truncated"], result["pages"]) == ("a" * 30, True, 3)
    assert read_pdf(THREE_PAGES, "x.pdf", max_chars=30, truncate=False)["error"] == (
        "text longer than the limit of 30 characters (reached on page 1 of 3)"
    )


def test_pdf_extraction_past_its_deadline_is_refused_and_the_reader_killed() -> None:
    """A reader that never finishes (a hang in C code looks the same from outside)."""
    hang = [sys.executable, "-c", "import time; time.sleep(3600)"]
    with pytest.raises(UnreadableFile) as exc:
        extract_pdf(THREE_PAGES, "slow.pdf", "slow", limits=PdfLimits(timeout_s=0.5), command=hang)
    assert str(exc.value) == "slow.pdf: text extraction did not finish within the limit of 0.5 s"


def test_a_crashing_pdf_reader_is_a_reason_not_a_traceback() -> None:
    crash = [sys.executable, "-c", "import sys; sys.stderr.write('MemoryError\\n'); sys.exit(3)"]
    with pytest.raises(
        UnreadableFile, match=r"bomb.pdf: the PDF reader failed \(exit 3: MemoryError\)"
    ):
        extract_pdf(THREE_PAGES, "bomb.pdf", "bomb", command=crash)


def test_the_pdf_reader_ignores_modules_in_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing in the folder being ingested can shadow what the child imports."""
    (tmp_path / "orjson.py").write_text("raise SystemExit('shadowed')\n", encoding="utf-8")
    (tmp_path / "doc.pdf").write_bytes(make_pdf(["Safe text"]))
    monkeypatch.chdir(tmp_path)
    assert read_document(Path("doc.pdf")).text == "Safe text"


# ---- JSON Lines --------------------------------------------------------------------------


def test_jsonl_bad_lines_are_named_and_good_lines_come_through(tmp_path: Path) -> None:
    path = tmp_path / "corpus.jsonl"
    path.write_text(
        '{"id": "d1", "title": "One", "text": "first", "metadata": {"lang": "en"}}\n'
        "{not json\n"
        "\n"
        '{"_id": 42, "text": "beir style"}\n'
        '{"id": "d3", "title": "no text"}\n'
        '{"text": "no id"}\n'
        '["a list"]\n'
        '{"id": "d4", "text": "   "}\n'
        '{"id": "d5", "text": "last", "metadata": "flat?"}\n'
        '{"id": "d6", "text": "really last"}',
        encoding="utf-8",
    )
    results = list(read_source(path, tenant="t1", metadata={"batch": "b1"}))
    events = [r for r in results if isinstance(r, DocumentEvent)]
    errors = [str(r) for r in results if isinstance(r, UnreadableFile)]
    assert [e.doc_id for e in events] == ["d1", "42", "d6"]
    assert errors == [
        f"{path}:2: invalid JSON: {errors[0].split('invalid JSON: ')[1]}",
        f"{path}:5: missing text",
        f"{path}:6: missing id (or _id)",
        f"{path}:7: expected a JSON object, got list",
        f"{path}:8: empty text",
        f"{path}:9: metadata must be an object, got str",
    ]
    first = events[0]
    assert (first.title, first.text, first.tenant) == ("One", "first", "t1")
    assert first.metadata == {"batch": "b1", "lang": "en"}
    assert first.source_uri == "corpus.jsonl"
    assert events[1].title == ""
    assert all(e.content_hash == content_hash(e.title, e.text, e.metadata) for e in events)


def test_jsonl_metadata_is_flattened(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "c.ndjson"
    path.write_text(
        '{"id": "a", "text": "x", "metadata": {"tags": ["b", "a"], "obj": {"z": 1, "y": [2]}, '
        '"gone": null, "n": 3, "f": 0.5, "ok": true, "batch": "mine"}}\n',
        encoding="utf-8",
    )
    with caplog.at_level(logging.WARNING, logger="ingest.formats.jsonl"):
        (event,) = read_source(path, metadata={"batch": "cli", "team": "x"})
    assert isinstance(event, DocumentEvent)
    assert event.metadata == {
        "team": "x",
        "batch": "mine",  # the record's own value wins over --meta
        "tags": '["b","a"]',
        "obj": '{"y":[2],"z":1}',
        "n": 3,
        "f": 0.5,
        "ok": True,
    }
    assert f"{path}:1: metadata 'gone' is null, dropped" in caplog.text


def test_jsonl_oversized_line_is_skipped_and_reading_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    small = '{"id": "s", "text": "ok"}'
    path.write_text(
        "\ufeff"
        + small
        + "\r\n"
        + '{"id": "b", "text": "'
        + "y" * 200
        + '"}\n'
        + small.replace('"s"', '"t"'),
        encoding="utf-8",
    )
    results = list(read_source(path, max_bytes=len(small)))
    assert [r.doc_id if isinstance(r, DocumentEvent) else str(r) for r in results] == [
        "s",
        f"{path}:2: line of 223 bytes is over the limit of {len(small)}",
        "t",
    ]


def test_jsonl_whole_file_errors(tmp_path: Path) -> None:
    empty, blank, utf16 = tmp_path / "e.jsonl", tmp_path / "b.jsonl", tmp_path / "u.jsonl"
    empty.write_bytes(b"")
    blank.write_bytes(b"\n\n")
    utf16.write_text('{"id": "a", "text": "x"}\n', encoding="utf-16")
    assert _error(empty) == "empty file"
    assert _error(blank) == "no records"
    assert "UTF-16" in _error(utf16)
    with pytest.raises(UnreadableFile, match="use read_source"):
        read_document(blank)


def test_jsonl_invalid_utf8_line_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_bytes(b'{"id": "a", "text": "caf\xe9"}\n{"id": "b", "text": "fine"}\n')
    bad, good = read_source(path)
    assert str(bad) == f"{path}:1: not valid UTF-8 at byte 24 of the line"
    assert isinstance(good, DocumentEvent) and good.doc_id == "b"


# ---- stdin -------------------------------------------------------------------------------


def test_stream_needs_an_id_and_takes_a_title() -> None:
    (event,) = read_stream(io.BytesIO(b"piped text"), doc_id="cli/1", title="Piped")
    assert isinstance(event, DocumentEvent)
    assert (event.doc_id, event.title, event.text, event.source_uri) == (
        "cli/1",
        "Piped",
        "piped text",
        "",
    )
    (html,) = read_stream(
        io.BytesIO(b"<h2>Hi</h2><p>there</p>"), doc_id="h", content_type="text/html"
    )
    assert isinstance(html, DocumentEvent)
    assert (html.title, html.text, html.content_type) == ("h", "## Hi\n\nthere", "text/html")
    with pytest.raises(ValueError, match="doc_id is required"):
        list(read_stream(io.BytesIO(b"x")))


def test_stream_errors_and_jsonl() -> None:
    assert [str(r) for r in read_stream(io.BytesIO(b""), doc_id="x")] == ["<stdin>: empty input"]
    (big,) = read_stream(io.BytesIO(b"x" * 11), doc_id="x", max_bytes=10)
    assert str(big) == "<stdin>: more than 10 bytes (the limit)"
    lines = io.BytesIO(b'{"id": "a", "text": "x"}\nnope\n')
    good, bad = read_stream(lines, content_type="application/x-ndjson")
    assert isinstance(good, DocumentEvent) and good.doc_id == "a"
    assert str(bad).startswith("<stdin>:2: invalid JSON")


# ---- content hash and versions -----------------------------------------------------------


def test_content_hash_is_the_documented_canonical_form() -> None:
    canonical = '["Title","héllo\\nworld",[["a","x"],["b",1],["c",true]]]'
    expected = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    digest = content_hash("Title", "héllo\nworld", {"c": True, "b": 1, "a": "x"})
    assert digest == expected == "331a61e89124b128e634a6cf8cb940292fd20eb13996ca70f1656395a737a1da"


def test_content_hash_changes_with_title_text_and_metadata() -> None:
    base = content_hash("T", "body", {"k": "v", "n": 1})
    assert base == content_hash("T", "body", {"n": 1, "k": "v"})
    variants = [
        content_hash("T2", "body", {"k": "v", "n": 1}),
        content_hash("T", "body.", {"k": "v", "n": 1}),
        content_hash("T", "body", {"k": "w", "n": 1}),
        content_hash("T", "body", {"k": "v", "n": "1"}),
        content_hash("T", "body", {"k": "v", "n": 1.5}),
        content_hash("T", "body", {"k": "v", "m": 1}),
        content_hash("T", "body", {"k": "v"}),
        content_hash("Tb", "ody", {"k": "v", "n": 1}),
    ]
    assert len({base, *variants}) == len(variants) + 1


def test_rereading_unchanged_file_keeps_the_hash_and_raises_the_version(tmp_path: Path) -> None:
    path = tmp_path / "doc.md"
    path.write_text("# Same\ncontent", encoding="utf-8")
    first, second = read_document(path), read_document(path)
    assert first.content_hash == second.content_hash != ""
    assert second.version > first.version
    path.write_text("# Same\ncontent, edited", encoding="utf-8")
    assert read_document(path).content_hash != first.content_hash


def test_version_clock_is_strictly_increasing_when_time_stands_still_or_steps_back() -> None:
    readings = iter([5_000_000, 5_000_000, 5_000_000, 1_000, 9_000_000])
    clock = VersionClock(now_ns=lambda: next(readings))
    assert [clock.next() for _ in range(5)] == [5_000, 5_001, 5_002, 5_003, 9_000]
    real = VersionClock()
    versions = [real.next() for _ in range(1_000)]
    assert all(a < b for a, b in zip(versions, versions[1:], strict=False))


def test_records_of_one_file_get_increasing_versions(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text(
        "".join(f'{{"id": "d{i}", "text": "t"}}\n' for i in range(50)), encoding="utf-8"
    )
    versions = [e.version for e in read_source(path) if isinstance(e, DocumentEvent)]
    assert len(versions) == 50
    assert all(a < b for a, b in zip(versions, versions[1:], strict=False))


# ---- folders -----------------------------------------------------------------------------


def test_iter_files_expands_folders_to_supported_files(tmp_path: Path) -> None:
    for rel in ["a.txt", "b.MD", "c.html", "d.pdf", "e.jsonl", "f.ndjson", "g.png", ".hidden.md",
                "sub/h.htm", "sub/i.markdown", ".git/j.txt"]:  # fmt: skip
        (tmp_path / rel).parent.mkdir(exist_ok=True)
        (tmp_path / rel).write_text("x", encoding="utf-8")
    names = lambda files: [p.relative_to(tmp_path).as_posix() for p in files]  # noqa: E731
    top = ["a.txt", "b.MD", "c.html", "d.pdf", "e.jsonl", "f.ndjson"]
    assert names(iter_files([tmp_path])) == top
    assert names(iter_files([tmp_path], recursive=True)) == [*top, "sub/h.htm", "sub/i.markdown"]
    assert names(iter_files([tmp_path / "g.png"])) == ["g.png"]  # a file named explicitly is kept
