"""What an ``aichat ingest`` run will do, worked out before anything is published.

:func:`make_plan` checks the arguments (valid UTF-8, a valid tenant, ``--meta K=V``,
what stdin needs), expands folders into :class:`Source` files, counts the documents
to expect (a JSON Lines file's lines) and refuses two sources that would share a
doc_id. Usage errors raise :class:`~ingest.errors.UsageError`; a folder that cannot be
listed stays in the plan as the error it is, and what the walk skipped is kept to be
shown.
"""

from __future__ import annotations

import argparse
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import TypeAdapter, ValidationError

from ingest.content_types import JSONL_TYPES, content_type_of, iter_files
from ingest.errors import UnreadableFile, UsageError
from ingest.formats.jsonl import MAX_KEY_CHARS, count_lines
from ingest.readers import source_name
from ingest.walk import Skipped
from schemas.events import Scalar, Tenant

log = logging.getLogger(__name__)

#: how usage errors name an argument (others: ``--dest-with-dashes``)
_FLAGS = {"paths": "PATH", "doc_id": "--id"}


def check_decodable(args: argparse.Namespace) -> None:
    """Refuse an argument that is not valid UTF-8 (bytes the OS handed over as surrogates):
    doc_ids, tenants, titles and metadata travel as JSON text, and a path that cannot
    be one would fail later, and less clearly."""
    for dest, value in vars(args).items():
        for item in value if isinstance(value, list) else [value]:
            if not isinstance(item, str | Path):
                continue
            text = str(item)
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                flag = _FLAGS.get(dest, "--" + dest.replace("_", "-"))
                raise UsageError(f"{flag} {_shown(text)} is not valid UTF-8") from None


def _shown(text: str) -> str:
    """The bytes as given (``b'caf\\xe9.md'``) when the OS decoded them, else escaped."""
    try:
        return repr(os.fsencode(text))
    except UnicodeEncodeError:
        return ascii(text)


def parse_meta(pairs: list[str]) -> dict[str, Scalar]:
    meta: dict[str, Scalar] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--meta expects K=V, got {pair!r}")
        if len(key) > MAX_KEY_CHARS:
            raise UsageError(f"--meta key longer than {MAX_KEY_CHARS} characters: {key[:40]!r}…")
        meta[key] = value
    return meta


@dataclass(frozen=True)
class Source:
    """A file to read and the folder its doc_id is relative to."""

    path: Path
    root: Path


@dataclass
class Plan:
    """What a run will do; ``None`` in ``sources`` is stdin, an error a folder not listed."""

    tenant: str
    meta: dict[str, Scalar]
    deletes: list[str]
    sources: list[Source | UnreadableFile | None] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    total: int = 0


def make_plan(args: argparse.Namespace) -> Plan:
    """Check the arguments, expand folders, estimate the number of documents."""
    check_decodable(args)
    try:
        TypeAdapter(Tenant).validate_python(args.tenant)
    except ValidationError:
        raise UsageError(f"--tenant must be 1-64 of A-Z a-z 0-9 _ -, got {args.tenant!r}") from None
    plan = Plan(args.tenant, parse_meta(args.meta), list(args.delete))
    stdin_args = [str(p) for p in args.paths].count("-")
    if stdin_args > 1:
        raise UsageError("'-' (stdin) may be given once")
    if not stdin_args and (args.doc_id or args.title or args.content_type):
        raise UsageError("--id, --title and --content-type describe stdin: give '-' as a PATH")
    stdin_jsonl = args.content_type in JSONL_TYPES
    if stdin_args and not args.doc_id and not stdin_jsonl:
        raise UsageError("reading stdin ('-') needs --id DOC_ID")
    if not args.paths and not args.delete:
        raise UsageError("nothing to do: give PATH… or --delete DOC_ID")
    for arg in args.paths:
        if str(arg) == "-":
            plan.sources.append(None)
            plan.total += 0 if stdin_jsonl else 1
            continue
        root = arg if arg.is_dir() else arg.parent
        found = 0
        for item in iter_files(
            [arg], recursive=args.recursive, follow_symlinks=args.follow_symlinks
        ):
            if isinstance(item, Skipped):
                plan.skipped.append(item)
            elif isinstance(item, UnreadableFile):
                plan.sources.append(item)
                plan.total += 1
            else:
                plan.sources.append(Source(item, root))
                plan.total += _estimate(item)
                found += 1
        if not found:
            log.warning(
                "%s: no supported files%s", arg, "" if args.recursive else " (try --recursive)"
            )
    _refuse_shared_ids(plan.sources)
    plan.total += len(plan.deletes)
    return plan


def _refuse_shared_ids(sources: list[Source | UnreadableFile | None]) -> None:
    """Two files of one run with one doc_id would overwrite each other: refuse the run."""
    seen: dict[str, Path] = {}
    for source in sources:
        if not isinstance(source, Source) or content_type_of(source.path) in JSONL_TYPES:
            continue
        doc_id = source_name(source.path, source.root)
        if doc_id in seen:
            raise UsageError(
                f"{seen[doc_id]} and {source.path} would both be doc_id {doc_id!r} (a doc_id "
                "is the path relative to the PATH given): name a folder that holds both"
            )
        seen[doc_id] = source.path


def _estimate(path: Path) -> int:
    if content_type_of(path) not in JSONL_TYPES:
        return 1
    try:
        with path.open("rb") as stream:
            return count_lines(stream)
    except OSError:
        return 1
