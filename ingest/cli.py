"""``aichat ingest PATH… [--recursive] [--tenant T] [--meta K=V] [--delete DOC_ID]``.

Reads every source (``-`` is stdin), publishes with a bounded window of
un-acknowledged sends and waits for every acknowledgement. Progress, failures and
what was skipped go to stderr, the summary to stdout. Exit status: 0 when every
document was acknowledged, 1 when any source or document failed, 2 for usage errors
(an argument that is not valid UTF-8 among them).

A file's doc_id is its path relative to the PATH given (``ingest/readers.py``); two
sources of one run that would share a doc_id are a usage error. Symbolic links found
in folders are skipped (listed, and counted in the summary) unless
``--follow-symlinks``; a PATH named on the command line is read even when it is one.

Here: the arguments and their types. :mod:`ingest.plan` checks them and expands the
folders, :mod:`ingest.run` reads, publishes and reports.
"""

from __future__ import annotations

import argparse
import asyncio
import re
from pathlib import Path

from ingest.content_types import STREAM_TYPES
from ingest.formats.pdf import DEFAULT_MAX_CHARS, DEFAULT_TIMEOUT_S
from ingest.readers import DEFAULT_MAX_BYTES
from ingest.run import ingest_paths
from ingest.sdk import DEFAULT_WINDOW
from streams.config import KafkaSettings, load_settings

_SIZE = re.compile(r"(\d+)\s*([kmg]?)(?:i?b)?", re.IGNORECASE)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "ingest",
        help="publish files as document events",
        description="Publish documents (.txt .md .markdown .html .htm .pdf .jsonl .ndjson); "
        "exit 1 when any failed, 2 on usage errors.",
    )
    p.add_argument("paths", nargs="*", type=Path, help="files or folders; '-' reads stdin")
    p.add_argument("--recursive", "-r", action="store_true", help="descend into folders")
    p.add_argument(
        "--follow-symlinks",
        action="store_true",
        help="follow symbolic links inside folders (each folder is still walked once); "
        "without it they are skipped and listed",
    )
    p.add_argument("--tenant", default="default")
    p.add_argument(
        "--meta", action="append", default=[], metavar="K=V", help="metadata, repeatable"
    )
    p.add_argument(
        "--delete",
        action="append",
        default=[],
        metavar="DOC_ID",
        help="delete a document, repeatable",
    )
    p.add_argument(
        "--id", dest="doc_id", metavar="DOC_ID", help="doc_id of the document read from stdin"
    )
    p.add_argument("--title", help="title of the document read from stdin")
    p.add_argument("--content-type", choices=STREAM_TYPES, help="of stdin (default text/plain)")
    p.add_argument(
        "--max-bytes",
        type=parse_size,
        default=DEFAULT_MAX_BYTES,
        metavar="SIZE",
        help="refuse larger files (JSON Lines: larger lines); 10MiB, 512k, … (default 10MiB)",
    )
    p.add_argument(
        "--pdf-max-chars",
        type=_positive,
        default=DEFAULT_MAX_CHARS,
        metavar="N",
        help=f"refuse a PDF whose text is longer (default {DEFAULT_MAX_CHARS})",
    )
    p.add_argument(
        "--pdf-truncate",
        action="store_true",
        help="cut a PDF's text at --pdf-max-chars instead of refusing it (logged)",
    )
    p.add_argument(
        "--pdf-timeout",
        type=_positive_seconds,
        default=DEFAULT_TIMEOUT_S,
        metavar="SECONDS",
        help=f"refuse a PDF whose text takes longer to extract (default {DEFAULT_TIMEOUT_S:g})",
    )
    p.add_argument(
        "--window", type=_positive, default=DEFAULT_WINDOW, help="un-acknowledged sends in flight"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = load_settings(KafkaSettings)
    return asyncio.run(ingest_paths(settings, args))


def parse_size(text: str) -> int:
    """``1048576``, ``512k``, ``10MiB``, ``1g``: binary units."""
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 10MiB, 512k)")
    return int(match[1]) * 1024 ** " kmg".index(match[2].lower() or " ")


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def _positive_seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return seconds
