"""``aichat backup create | list | restore ID``: the command line of infra/backup/__init__.py."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

import httpx
from aiokafka.errors import KafkaError

from infra.backup import (
    PARTS,
    BackupSettings,
    RestoreReport,
    create_backup,
    list_backups,
    restore_backup,
)
from infra.backup.manifest import ID_PATTERN, BackupManifest
from infra.errors import StackError
from infra.rebuild import INGESTING_ROLES
from streams.config import load_settings


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "backup", help="back up Weaviate and Elasticsearch with the Kafka offsets they cover; restore")
    commands = parser.add_subparsers(dest="backup_command", required=True)
    create = commands.add_parser("create", help="take a backup now")
    create.add_argument("--role", choices=INGESTING_ROLES, default="ingest",
                        help="the worker role whose consumer group the backup records (`aichat up` "
                        "runs ingest; pipeline for a single all-in-one worker)")
    create.add_argument("--id", dest="backup_id", default=None,
                        help=f"backup id ({ID_PATTERN}); default aichat-YYYYMMDD-HHMMSS (UTC)")
    commands.add_parser("list", help="the backups, and whether their copies are still there")
    restore = commands.add_parser(
        "restore", help="restore a backup, then reset the consumer groups so the workers replay from it")
    restore.add_argument("id", help="a backup id (aichat backup list)")
    restore.add_argument("--drop-existing", action="store_true",
                         help="delete the collections and indices the backup holds first, if they exist")
    restore.add_argument("--only", choices=PARTS, action="append", default=None,
                         help="restore only this store (and reset only its group); repeatable")
    restore.add_argument("--yes", action="store_true", help="do not ask before deleting anything")
    parser.set_defaults(func=run)


def _describe(m: BackupManifest) -> list[str]:
    lines = []
    if m.weaviate:
        objects = ", ".join(f"{name} {count} objects" for name, count in m.weaviate.objects.items())
        lines.append(f"  weaviate       {objects} -> {m.weaviate.backend} {m.weaviate.path}")
    if m.elasticsearch:
        e = m.elasticsearch
        lines.append(f"  elasticsearch  {len(e.indices)} indices, {e.docs} documents -> snapshot "
                     f"{e.snapshot} in repository {e.repository}")
    offsets = ", ".join(f"{p}:{o}" for p, o in sorted(m.kafka.documents_end_offsets.items()))
    ingest = m.kafka.groups["ingest"]
    committed = sum(ingest.committed.get(m.kafka.documents_topic, {}).values())
    lines.append(f"  kafka          {m.kafka.documents_topic} end offsets {{{offsets}}} "
                 f"({m.documents_records} records, group {ingest.group} committed {committed})")
    if m.documents_records and not committed:
        lines.append(f"  note: group {ingest.group} had committed nothing on {m.kafka.documents_topic}: "
                     "a restore of this backup replays all of it (workers run with another --role?)")
    return lines


def _print_restore(report: RestoreReport) -> None:
    for name, count in report.dropped_collections.items():
        print(f"deleted the existing collection {name} ({count} objects) before the restore")
    for index in report.dropped_indices:
        print(f"deleted the existing index {index} before the restore")
    for part, seconds in report.seconds.items():
        print(f"  {part:<14} {seconds:.1f}s")
    for plan in report.plans:
        replay = ", ".join(f"{t} {n}" for t, n in sorted(plan.replayed.items())) or "nothing"
        print(f"group {plan.group}: offsets reset, it reads again: {replay}")
        for note in plan.notes:
            print(f"  note: {note}")
    print(f"restored {report.manifest.id} ({', '.join(report.parts)}); start the workers "
          "(aichat up, or aichat worker --role ...): they replay from the backup's offsets")


def run(args: argparse.Namespace) -> int:
    settings = load_settings(BackupSettings)
    try:
        if args.backup_command == "create":
            started = time.monotonic()
            manifest = asyncio.run(create_backup(settings, role=args.role, backup_id=args.backup_id))
            print(f"backup {manifest.id} in {time.monotonic() - started:.1f}s")
            print("\n".join(_describe(manifest)))
            print(f"manifest {settings.manifests_dir / (manifest.id + '.json')}")
            return 0
        if args.backup_command == "list":
            rows = asyncio.run(list_backups(settings))
            if not rows:
                print(f"no backups in {settings.manifests_dir}")
            for row in rows:
                m = row.manifest
                print(f"{m.id}  {m.created_at:%Y-%m-%d %H:%M:%S}Z  weaviate {row.weaviate}  "
                      f"elasticsearch {row.elasticsearch}")
                print("\n".join(_describe(m)))
            return 0
        parts = tuple(args.only or PARTS)
        if args.drop_existing and not args.yes:
            answer = input(f"Restore {args.id} ({', '.join(parts)}), deleting the collections and "
                           "indices it holds where they exist? [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                print("nothing changed")
                return 1
        _print_restore(asyncio.run(restore_backup(settings, args.id, drop_existing=args.drop_existing,
                                                  parts=parts)))
        return 0
    except StackError as exc:
        print(f"aichat backup: {exc}", file=sys.stderr)
        return 1
    except (httpx.HTTPError, KafkaError, TimeoutError) as exc:
        print(f"aichat backup: a service did not answer ({type(exc).__name__}: {exc}); is the "
              "stack up (aichat stack status)?", file=sys.stderr)
        return 1
