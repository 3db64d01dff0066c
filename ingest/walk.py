"""Folders → the files to read, without following symbolic links unless asked.

A PATH named by the caller is taken as given (a link named on the command line is
the caller's choice). Inside a folder:

* hidden entries (``.git``, ``.env.md``) and files of unsupported types are ignored;
* a symbolic link (to a file or a folder, dangling or not) is reported as
  :class:`Skipped` unless ``follow_symlinks``;
* every folder is walked at most once, by its ``(st_dev, st_ino)``: with
  ``follow_symlinks`` a link back to an ancestor (a cycle) or a second link to a
  folder (also a bind-mount loop, links or not) is reported as :class:`Skipped`
  instead of being walked again, so a walk always ends; among siblings a real folder
  wins over a link to it, so its files keep the ids they had without the link;
* only regular files are read: a FIFO, socket or device (reading one could block
  forever) is :class:`Skipped`;
* a folder that cannot be listed is an :class:`~ingest.errors.UnreadableFile`.

The walk is iterative (no recursion limit) and sorted: a folder's files by name,
then its sub-folders, depth first.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ingest.errors import UnreadableFile

LINK_NOT_FOLLOWED = "symbolic link, not followed"


@dataclass(frozen=True)
class Skipped:
    """A file or folder left out of a walk on purpose, and why."""

    path: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


Found = Path | Skipped | UnreadableFile


def iter_files(
    paths: Sequence[Path],
    *,
    recursive: bool = False,
    follow_symlinks: bool = False,
    wanted: Callable[[str], bool] = lambda name: True,
) -> Iterator[Found]:
    """Files as given; folders expanded to their files for which ``wanted(name)``."""
    for path in paths:
        if not path.is_dir():
            yield path
        else:
            yield from _walk(path, recursive, follow_symlinks, wanted)


def _walk(
    root: Path, recursive: bool, follow: bool, wanted: Callable[[str], bool]
) -> Iterator[Found]:
    claimed: set[tuple[int, int]] = set()  # folders walked or about to be
    try:
        claimed.add(_identity(root))
    except OSError as exc:
        yield UnreadableFile(str(root), f"cannot list folder: {exc.strerror or exc}")
        return
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except OSError as exc:
            yield UnreadableFile(str(folder), f"cannot list folder: {exc.strerror or exc}")
            continue
        subfolders: list[tuple[bool, Path]] = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = folder / entry.name
            link, is_dir, is_file = _kind(entry)
            if is_dir:
                if not recursive:
                    continue
                if link and not follow:
                    yield Skipped(path, f"{LINK_NOT_FOLLOWED} (to a folder)")
                else:
                    subfolders.append((link, path))
            elif not wanted(entry.name):
                continue
            elif link and not follow:
                yield Skipped(path, LINK_NOT_FOLLOWED)
            elif is_file:
                yield path
            elif link and not path.exists():
                yield Skipped(path, "symbolic link to nothing (dangling)")
            else:
                yield Skipped(path, "not a regular file (FIFO, socket or device)")
        accepted: list[Path] = []
        for _, path in sorted(subfolders):  # real folders claim themselves before links do
            try:
                identity = _identity(path)
            except OSError as exc:
                yield UnreadableFile(str(path), f"cannot list folder: {exc.strerror or exc}")
                continue
            if identity in claimed:
                yield Skipped(path, "folder already walked (a symbolic link loop or a second link)")
            else:
                claimed.add(identity)
                accepted.append(path)
        stack.extend(sorted(accepted, reverse=True))


def _identity(folder: Path) -> tuple[int, int]:
    st = folder.stat()
    return st.st_dev, st.st_ino


def _kind(entry: os.DirEntry[str]) -> tuple[bool, bool, bool]:
    """(is a link, is or points to a folder, is or points to a regular file)."""
    try:
        link = entry.is_symlink()
    except OSError:
        link = False
    try:
        return link, entry.is_dir(), entry.is_file()
    except OSError:  # e.g. a link into a folder we may not search
        return link, False, False
