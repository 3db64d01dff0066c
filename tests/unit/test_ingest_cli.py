"""``aichat ingest`` with an in-memory publisher (the ``publisher_factory`` seam): no Kafka."""

from __future__ import annotations

import argparse
import io
import os
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path
from types import TracebackType

import pytest

from ingest import cli
from ingest.errors import PublishFailed
from ingest.progress import Progress
from ingest.run import ingest_paths
from ingest.sdk import Delivery, Events
from schemas.events import DocumentEvent
from streams.config import KafkaSettings
from tests.unit.test_ingest_readers import make_pdf


class FakePublisher:
    def __init__(self, *, fail: frozenset[str] = frozenset(), refuse: bool = False) -> None:
        self.fail, self.refuse = fail, refuse
        self.events: list[DocumentEvent] = []
        self.windows: list[int] = []
        self.closed = False

    async def __aenter__(self) -> FakePublisher:
        if self.refuse:
            raise PublishFailed("cannot connect to Kafka: no broker")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.closed = True

    async def publish_many(self, events: Events, *, window: int = 256) -> AsyncIterator[Delivery]:
        assert isinstance(events, AsyncIterable)
        self.windows.append(window)
        async for event in events:
            self.events.append(event)
            error = (
                PublishFailed(f"{event.doc_id}: not acknowledged: boom")
                if event.doc_id in self.fail
                else None
            )
            yield Delivery(event, error)

    def by_id(self) -> dict[str, DocumentEvent]:
        return {e.doc_id: e for e in self.events}


class Run:
    def __init__(self, code: int, out: str, err: str, publisher: FakePublisher) -> None:
        self.code, self.out, self.err, self.publisher = code, out, err, publisher


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="aichat")
    cli.register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["ingest", *argv])


async def ingest(*argv: str, stdin: bytes = b"", publisher: FakePublisher | None = None) -> Run:
    pub = publisher or FakePublisher()
    out, err = io.StringIO(), io.StringIO()
    code = await ingest_paths(
        KafkaSettings(),
        parse(*argv),
        publisher_factory=lambda _settings: pub,
        stdin=io.BytesIO(stdin),
        stdout=out,
        stderr=err,
    )
    return Run(code, out.getvalue(), err.getvalue(), pub)


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.txt").write_text("Alpha\nplain text", encoding="utf-8")
    (tmp_path / "b.md").write_text("# Beta\nmarkdown", encoding="utf-8")
    (tmp_path / "sub" / "c.html").write_text("<title>Gamma</title><p>html</p>", encoding="utf-8")
    (tmp_path / "sub" / "d.jsonl").write_text(
        '{"id": "rec-1", "text": "one"}\n{"id": "rec-2", "text": "two"}\n', encoding="utf-8"
    )
    (tmp_path / "ignored.png").write_bytes(b"\x89PNG\x00")
    return tmp_path


async def test_everything_acknowledged_exits_zero(corpus: Path) -> None:
    run = await ingest(str(corpus), "-r", "--tenant", "acme", "--meta", "team=hr", "--window", "7")
    assert run.code == 0, run.err
    events = run.publisher.by_id()
    assert set(events) == {"a.txt", "b.md", "sub/c.html", "rec-1", "rec-2"}
    assert [events[i].source_uri for i in ("a.txt", "sub/c.html", "rec-1")] == [
        "a.txt", "sub/c.html", "sub/d.jsonl",
    ]  # fmt: skip
    assert all(
        e.tenant == "acme" and e.metadata == {"team": "hr"} and e.content_hash
        for e in events.values()
    )
    assert run.publisher.windows == [7] and run.publisher.closed
    assert run.out.startswith("5 documents published, 0 deleted,")
    assert run.out.rstrip().endswith("; 0 failed")
    assert "failed:" not in run.err
    assert "5/5 documents" in run.err  # the progress line (stderr is not a terminal)


async def test_failures_are_listed_and_the_rest_is_published(corpus: Path) -> None:
    (corpus / "bad.txt").write_bytes(b"caf\xe9")
    (corpus / "sub" / "d.jsonl").write_text(
        '{"id": "rec-1", "text": "one"}\n{"id": 7\n{"id": "rec-3", "text": "three"}\n',
        encoding="utf-8",
    )
    big = corpus / "big.md"
    big.write_text("x" * 2048, encoding="utf-8")
    run = await ingest(
        str(corpus),
        "--recursive",
        "--max-bytes",
        "1k",
        publisher=FakePublisher(fail=frozenset({"rec-3"})),
    )
    assert run.code == 1
    assert "rec-1" in run.publisher.by_id()
    assert "a.txt" in run.publisher.by_id()
    failures = run.err.split("failed:\n", 1)[1].splitlines()
    assert failures[:2] == [
        f"  - {corpus / 'bad.txt'}: not valid UTF-8 at byte 3",
        f"  - {big}: 2048 bytes is over the limit of 1024",
    ]
    assert failures[2].startswith(f"  - {corpus / 'sub' / 'd.jsonl'}:2: invalid JSON")
    assert failures[3] == "  - rec-3: not acknowledged: boom"
    assert len(failures) == 4
    assert run.out.rstrip().endswith("; 4 failed")


async def test_delete_publishes_a_newer_version(tmp_path: Path) -> None:
    doc = tmp_path / "a.txt"
    doc.write_text("text", encoding="utf-8")
    run = await ingest("--delete", "old-1", "--delete", "old-2", str(doc), "--tenant", "t")
    assert run.code == 0
    first, second, upsert = run.publisher.events
    assert (first.op, first.doc_id, first.tenant, first.text) == ("delete", "old-1", "t", "")
    assert second.doc_id == "old-2" and second.op == "delete"
    assert upsert.op == "upsert"
    assert first.version < second.version < upsert.version
    assert "1 documents published, 2 deleted" in run.out


async def test_stdin_document(tmp_path: Path) -> None:
    run = await ingest("-", "--id", "notes/1", "--title", "Piped", stdin="héllo".encode())
    assert run.code == 0
    (event,) = run.publisher.events
    assert (event.doc_id, event.title, event.text, event.content_type) == (
        "notes/1",
        "Piped",
        "héllo",
        "text/plain",
    )
    html = await ingest(
        "-", "--id", "h", "--content-type", "text/html", stdin=b"<h1>T</h1><p>x</p>"
    )
    assert html.publisher.events[0].text == "# T\n\nx"
    lines = await ingest(
        "-", "--content-type", "application/x-ndjson", stdin=b'{"id": "r", "text": "x"}\n'
    )
    assert [e.doc_id for e in lines.publisher.events] == ["r"]


async def test_empty_stdin_fails_with_its_name() -> None:
    run = await ingest("-", "--id", "x")
    assert run.code == 1
    assert "  - <stdin>: empty input" in run.err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ((), "nothing to do"),
        (("-",), "needs --id"),
        (("a.txt", "--id", "x"), "give '-' as a PATH"),
        (("-", "-", "--id", "x"), "once"),
        (("a.txt", "--meta", "novalue"), "--meta expects K=V"),
        (("a.txt", "--tenant", "no spaces"), "--tenant"),
    ],
)
async def test_usage_errors_exit_two(argv: tuple[str, ...], message: str) -> None:
    run = await ingest(*argv)
    assert run.code == 2
    assert message in run.err
    assert run.publisher.events == []


@pytest.mark.parametrize("argv", [("a", "--max-bytes", "lots"), ("a", "--window", "0")])
def test_bad_option_values_exit_two(argv: tuple[str, ...]) -> None:
    with pytest.raises(SystemExit) as exc:
        parse(*argv)
    assert exc.value.code == 2


async def test_broker_unreachable_exits_one(tmp_path: Path) -> None:
    doc = tmp_path / "a.txt"
    doc.write_text("text", encoding="utf-8")
    run = await ingest(str(doc), publisher=FakePublisher(refuse=True))
    assert run.code == 1
    assert "  - cannot connect to Kafka: no broker" in run.err


def test_parse_size() -> None:
    assert [cli.parse_size(s) for s in ("100", "512k", "10MiB", "1 GB", "3b")] == [
        100, 512 * 1024, 10 * 1024 * 1024, 1024**3, 3,
    ]  # fmt: skip


def test_progress_redraws_in_place_on_a_terminal_and_prints_lines_otherwise() -> None:
    now = [0.0]
    tty = io.StringIO()
    bar = Progress(tty, total=3, tty=True, clock=lambda: now[0])
    for _ in range(3):
        now[0] += 1.0
        bar.advance(nbytes=1024 * 1024)
    bar.advance(failed=True)
    bar.close()
    assert tty.getvalue().count("\r") == 4
    assert tty.getvalue().endswith("\r3/4 documents, 3.0 MiB, 1.0 docs/s, 1 failed\x1b[K\n")

    plain = io.StringIO()
    log = Progress(plain, total=5, tty=False, every=2, clock=lambda: 1.0)
    for _ in range(5):
        log.advance()
    log.close()
    lines = plain.getvalue().splitlines()
    assert [line.split(",")[0] for line in lines] == [
        "2/5 documents",
        "4/5 documents",
        "5/5 documents",
    ]
    assert "\r" not in plain.getvalue()


# ---- identity: doc_ids relative to the PATH given ---------------------------------------


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    (tmp_path / "docs" / "guide").mkdir(parents=True)
    (tmp_path / "docs" / "index.md").write_text("# Index", encoding="utf-8")
    (tmp_path / "docs" / "guide" / "setup.md").write_text("# Setup", encoding="utf-8")
    return tmp_path / "docs"


@pytest.mark.parametrize("form", ["./docs", "docs/", "absolute"])
async def test_doc_ids_are_relative_to_the_folder_given(
    docs: Path, form: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(docs.parent)
    run = await ingest(str(docs) if form == "absolute" else form, "-r")
    assert run.code == 0, run.err
    assert {(e.doc_id, e.source_uri) for e in run.publisher.events} == {
        ("index.md", "index.md"),
        ("guide/setup.md", "guide/setup.md"),
    }
    assert not any(str(docs.parent) in e.model_dump_json() for e in run.publisher.events)


async def test_a_file_named_alone_is_its_name(docs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(docs.parent)
    run = await ingest("docs/guide/setup.md", str(docs / "index.md"))
    assert [e.doc_id for e in run.publisher.events] == ["setup.md", "index.md"]


async def test_two_sources_with_one_doc_id_are_a_usage_error(tmp_path: Path) -> None:
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "README.md").write_text(f"# {folder}", encoding="utf-8")
    run = await ingest(str(tmp_path / "a"), str(tmp_path / "b"))
    assert run.code == 2
    assert (
        f"aichat ingest: {tmp_path / 'a' / 'README.md'} and {tmp_path / 'b' / 'README.md'} "
        "would both be doc_id 'README.md'"
    ) in run.err
    assert run.publisher.events == []
    assert (await ingest(str(tmp_path), "-r")).code == 0  # their common folder: a/…, b/…


# ---- symbolic links ---------------------------------------------------------------------


@pytest.fixture
def linked(docs: Path) -> Path:
    outside = docs.parent / "outside"
    outside.mkdir()
    (outside / "secret.md").write_text("# Secret", encoding="utf-8")
    (docs / "secret.md").symlink_to(outside / "secret.md")
    (docs / "out").symlink_to(outside, target_is_directory=True)
    (docs / "guide" / "loop").symlink_to(docs, target_is_directory=True)
    return docs


async def test_symlinks_are_skipped_listed_and_counted(linked: Path) -> None:
    run = await ingest(str(linked), "-r")
    assert run.code == 0, run.err
    assert {e.doc_id for e in run.publisher.events} == {"index.md", "guide/setup.md"}
    assert run.err.startswith(
        "skipped (--follow-symlinks follows symbolic links):\n"
        f"  - {linked / 'out'}: symbolic link, not followed (to a folder)\n"
        f"  - {linked / 'secret.md'}: symbolic link, not followed\n"
        f"  - {linked / 'guide' / 'loop'}: symbolic link, not followed (to a folder)\n"
    )
    assert run.out.rstrip().endswith("; 0 failed, 3 skipped")


async def test_follow_symlinks_reads_them_and_a_cycle_ends(linked: Path) -> None:
    run = await ingest(str(linked), "-r", "--follow-symlinks")
    assert run.code == 0, run.err
    assert sorted(e.doc_id for e in run.publisher.events) == [
        "guide/setup.md", "index.md", "out/secret.md", "secret.md",
    ]  # fmt: skip
    assert f"  - {linked / 'guide' / 'loop'}: folder already walked" in run.err
    assert run.out.rstrip().endswith("; 0 failed, 1 skipped")


# ---- arguments that are not UTF-8 -------------------------------------------------------

LATIN1 = os.fsdecode(b"caf\xe9")  # what Python makes of the bytes the OS handed over


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--delete", LATIN1), r"--delete b'caf\xe9' is not valid UTF-8"),
        (("-", "--id", LATIN1), r"--id b'caf\xe9' is not valid UTF-8"),
        (("-", "--id", "x", "--title", LATIN1), r"--title b'caf\xe9' is not valid UTF-8"),
        (("-", "--id", "x", "--meta", f"k={LATIN1}"), r"--meta b'k=caf\xe9' is not valid UTF-8"),
        (("--delete", "x", "--tenant", LATIN1), r"--tenant b'caf\xe9' is not valid UTF-8"),
    ],
    ids=["delete", "id", "title", "meta", "tenant"],
)
async def test_an_option_value_that_is_not_utf8_is_a_usage_error(
    argv: tuple[str, ...], message: str
) -> None:
    run = await ingest(*argv, stdin=b"text")
    assert (run.code, run.err) == (2, f"aichat ingest: {message}\n")
    assert run.publisher.events == []


async def test_a_path_that_is_not_utf8_is_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / f"{LATIN1}.md"
    path.write_text("text", encoding="utf-8")
    run = await ingest(str(path))
    assert run.code == 2
    assert run.err == f"aichat ingest: PATH {os.fsencode(path)!r} is not valid UTF-8\n"


def test_the_command_exits_two_without_a_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.run(parse("--delete", LATIN1)) == 2
    assert capsys.readouterr().err == "aichat ingest: --delete b'caf\\xe9' is not valid UTF-8\n"


# ---- PDF limits -------------------------------------------------------------------------


async def test_pdf_limits_come_from_the_command_line(tmp_path: Path) -> None:
    path = tmp_path / "long.pdf"
    path.write_bytes(make_pdf(["x" * 50]))
    refused = await ingest(str(path), "--pdf-max-chars", "20")
    assert refused.code == 1
    assert f"  - {path}: text longer than the limit of 20 characters" in refused.err
    cut = await ingest(str(path), "--pdf-max-chars", "20", "--pdf-truncate")
    assert cut.code == 0 and cut.publisher.events[0].text == "x" * 20


@pytest.mark.parametrize("value", ["0", "-1", "soon", "nan", "inf"])
def test_pdf_timeout_must_be_a_positive_number(value: str) -> None:
    with pytest.raises(SystemExit):
        parse("a.pdf", "--pdf-timeout", value)
    assert parse("a.pdf", "--pdf-timeout", "2.5").pdf_timeout == 2.5
