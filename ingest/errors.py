"""Errors of the ingest side.

    IngestError          root
    ├── UnreadableFile   a file could not be turned into a document (names the file and why)
    └── PublishFailed    the broker did not acknowledge a document
"""

from __future__ import annotations


class IngestError(Exception):
    retriable = False


class UnreadableFile(IngestError):
    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class PublishFailed(IngestError):
    retriable = True
