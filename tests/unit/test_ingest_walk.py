"""Folder walks: symbolic links skipped unless followed, every folder walked once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ingest.content_types import iter_files
from ingest.errors import UnreadableFile
from ingest.walk import Found, Skipped


def _write(root: Path, *names: str) -> None:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("x", encoding="utf-8")


def _shown(found: list[Found], root: Path) -> list[str]:
    def one(item: Found) -> str:
        if isinstance(item, Skipped):
            return f"skip {item.path.relative_to(root).as_posix()}: {item.reason}"
        if isinstance(item, UnreadableFile):
            return f"error {item}"
        return item.relative_to(root).as_posix()

    return [one(item) for item in found]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """docs/ with a link to a file and a folder outside it, and a dangling link."""
    _write(tmp_path, "docs/a.md", "docs/sub/b.md", "outside/secret.md", "outside/deep/c.md")
    docs = tmp_path / "docs"
    (docs / "link.md").symlink_to(tmp_path / "outside" / "secret.md")
    (docs / "linkdir").symlink_to(tmp_path / "outside", target_is_directory=True)
    (docs / "gone.md").symlink_to(tmp_path / "nowhere.md")
    (docs / "image.png").symlink_to(tmp_path / "outside" / "secret.md")  # unsupported: ignored
    return docs


def test_links_in_folders_are_skipped_without_follow_symlinks(tree: Path) -> None:
    assert _shown(list(iter_files([tree], recursive=True)), tree) == [
        "a.md",
        "skip gone.md: symbolic link, not followed",
        "skip link.md: symbolic link, not followed",
        "skip linkdir: symbolic link, not followed (to a folder)",
        "sub/b.md",
    ]
    assert _shown(list(iter_files([tree])), tree) == [  # a folder's top level only
        "a.md",
        "skip gone.md: symbolic link, not followed",
        "skip link.md: symbolic link, not followed",
    ]


def test_links_are_followed_when_asked(tree: Path) -> None:
    assert _shown(list(iter_files([tree], recursive=True, follow_symlinks=True)), tree) == [
        "a.md",
        "skip gone.md: symbolic link to nothing (dangling)",
        "link.md",
        "linkdir/secret.md",
        "linkdir/deep/c.md",
        "sub/b.md",
    ]


def test_a_path_named_by_the_caller_is_read_even_when_it_is_a_link(tree: Path) -> None:
    assert list(iter_files([tree / "link.md"])) == [tree / "link.md"]
    found = list(iter_files([tree / "linkdir"], recursive=True))
    assert _shown(found, tree / "linkdir") == ["secret.md", "deep/c.md"]


def test_a_link_cycle_is_walked_once_and_reported(tmp_path: Path) -> None:
    _write(tmp_path, "root/a.md", "root/sub/b.md")
    root = tmp_path / "root"
    (root / "sub" / "up").symlink_to(root, target_is_directory=True)  # sub/up/sub/up/…
    (root / "self").symlink_to(".", target_is_directory=True)
    (root / "again").symlink_to(root / "sub", target_is_directory=True)  # a second way in
    found = list(iter_files([root], recursive=True, follow_symlinks=True))
    loop = "folder already walked (a symbolic link loop or a second link)"
    assert _shown(found, root) == [
        "a.md",
        f"skip again: {loop}",  # the real folder sub/ is walked, not the link to it
        f"skip self: {loop}",
        "sub/b.md",
        f"skip sub/up: {loop}",
    ]


def test_only_regular_files_are_read(tmp_path: Path) -> None:
    """Reading a FIFO blocks until someone writes to it: it is skipped, even when followed."""
    _write(tmp_path, "a.md")
    os.mkfifo(tmp_path / "pipe.md")
    (tmp_path / "to-pipe.md").symlink_to(tmp_path / "pipe.md")
    found = list(iter_files([tmp_path], recursive=True, follow_symlinks=True))
    not_regular = "not a regular file (FIFO, socket or device)"
    assert _shown(found, tmp_path) == [
        "a.md",
        f"skip pipe.md: {not_regular}",
        f"skip to-pipe.md: {not_regular}",
    ]


def test_a_folder_that_cannot_be_listed_is_an_error_and_the_walk_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write(tmp_path, "a.md", "locked/b.md", "open/c.md")
    real_scandir = os.scandir

    def scandir(path: Path) -> object:
        if Path(path).name == "locked":  # what a folder without read permission does
            raise PermissionError(13, "Permission denied")
        return real_scandir(path)

    monkeypatch.setattr("ingest.walk.os.scandir", scandir)
    found = list(iter_files([tmp_path], recursive=True))
    assert _shown(found, tmp_path) == [
        "a.md",
        f"error {tmp_path / 'locked'}: cannot list folder: Permission denied",
        "open/c.md",
    ]
