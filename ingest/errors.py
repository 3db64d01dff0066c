"""Errors of the ingest side.

IngestError          root
├── UnreadableFile   a source could not be turned into a document (names the file, the line, why)
├── PublishFailed    the broker did not acknowledge a document (retriable)
└── UsageError       the command line asks for something impossible (exit code 2)
"""

from __future__ import annotations


class IngestError(Exception):
    retriable = False


class UnreadableFile(IngestError):
    """``path: reason`` or, for one record of a JSON Lines file, ``path:line: reason``."""

    def __init__(self, path: str, reason: str, *, line: int | None = None) -> None:
        where = path if line is None else f"{path}:{line}"
        super().__init__(f"{where}: {reason}")
        self.path = path
        self.reason = reason
        self.line = line


class PublishFailed(IngestError):
    retriable = True


class UsageError(IngestError):
    """Bad arguments: nothing was read or published."""
