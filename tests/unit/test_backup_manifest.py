"""The backup manifest and where a restore sends each consumer group (no services)."""

from __future__ import annotations

import re
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from infra.backup import BackupSettings
from infra.backup.manifest import (
    ID_PATTERN,
    BackupError,
    BackupManifest,
    GroupPoint,
    KafkaPoint,
    in_flight,
    list_manifests,
    load_manifest,
    new_backup_id,
    plan_reset,
    save_manifest,
)
from infra.config import StackSettings
from infra.elk.launcher import render_elasticsearch_yml, snapshots_dir
from streams.cli import build_parser

DERIVED = frozenset({"chunks", "embeddings"})


def ingest_point() -> GroupPoint:
    """At the backup: documents committed 10/7 of 12/7; chunks caught up on partition 0 and
    3 records in flight on 1; embeddings caught up."""
    return GroupPoint(
        group="aichat-ingest",
        committed={"documents": {0: 10, 1: 7}, "chunks": {0: 40, 1: 30}, "embeddings": {0: 40, 1: 33}},
        ends={"documents": {0: 12, 1: 7}, "chunks": {0: 40, 1: 33}, "embeddings": {0: 40, 1: 33}},
    )


def test_documents_replay_from_the_committed_offsets_and_derived_topics_skip_what_is_derived_again() -> None:
    # since the backup: 5 more documents, their chunks and embeddings
    starts = {"documents": {0: 0, 1: 0}, "chunks": {0: 0, 1: 0}, "embeddings": {0: 0, 1: 0}}
    ends = {"documents": {0: 15, 1: 9}, "chunks": {0: 52, 1: 38}, "embeddings": {0: 52, 1: 38}}
    plan = plan_reset(ingest_point(), derived=DERIVED, starts=starts, ends=ends)
    assert plan.group == "aichat-ingest"
    assert plan.offsets == {
        ("documents", 0): 10, ("documents", 1): 7,  # the recorded committed offsets
        ("chunks", 0): 52,  # nothing was in flight: what came since is derived again
        ("chunks", 1): 30,  # 3 records were in flight at the backup: embedded again
        ("embeddings", 0): 52, ("embeddings", 1): 38,
    }
    assert plan.replayed == {"documents": (15 - 10) + (9 - 7), "chunks": 38 - 30, "embeddings": 0}
    assert plan.notes == ()
    assert in_flight(ingest_point(), DERIVED) == 3
    assert in_flight(ingest_point(), frozenset({"documents"})) == 2


def test_in_flight_records_deleted_by_retention_stop_the_restore() -> None:
    starts = {"documents": {0: 0, 1: 0}, "chunks": {0: 0, 1: 31}, "embeddings": {0: 0, 1: 0}}
    ends = {"documents": {0: 15, 1: 9}, "chunks": {0: 52, 1: 38}, "embeddings": {0: 52, 1: 38}}
    with pytest.raises(BackupError, match=r"chunks\[1\] offsets 30\.\.30.*aichat rebuild"):
        plan_reset(ingest_point(), derived=DERIVED, starts=starts, ends=ends)


def test_a_replayed_topic_is_clamped_and_every_adjustment_is_said() -> None:
    point = GroupPoint(group="aichat-shipper",
                       committed={"logs": {0: 5, 1: 90}, "queries": {0: 4}},
                       ends={"logs": {0: 9, 1: 95}, "queries": {0: 4, 1: 6}})
    starts = {"logs": {0: 8, 1: 0}, "queries": {0: 0, 1: 0, 2: 0}}
    ends = {"logs": {0: 20, 1: 12}, "queries": {0: 4, 1: 6, 2: 3}}
    plan = plan_reset(point, derived=frozenset(), starts=starts, ends=ends)
    assert plan.offsets == {
        ("logs", 0): 8,  # 5..7 deleted by retention: from the log start
        ("logs", 1): 0,  # 90 is past today's end 12: the topic was re-created
        ("queries", 0): 4,
        ("queries", 1): 0,  # records at the backup, nothing committed: from its start
        ("queries", 2): 0,  # a partition added since: from its start, nothing to say
    }
    notes = " | ".join(plan.notes)
    assert "logs[0]: records 5..7 are gone" in notes
    assert "logs[1]: the backup's offset 90 is past the end 12" in notes
    assert "queries[1]: nothing committed" in notes
    assert "queries[2]" not in notes and len(plan.notes) == 3


def test_a_derived_partition_added_after_the_backup_starts_at_its_end() -> None:
    point = GroupPoint(group="g", committed={"chunks": {0: 3}}, ends={"chunks": {0: 3}})
    plan = plan_reset(point, derived=DERIVED, starts={"chunks": {0: 0, 1: 0}},
                      ends={"chunks": {0: 9, 1: 4}})
    assert plan.offsets == {("chunks", 0): 9, ("chunks", 1): 4}
    assert plan.replayed == {"chunks": 0}


def manifest(backup_id: str, minutes: int = 0) -> BackupManifest:
    return BackupManifest(
        id=backup_id, created_at=datetime(2026, 12, 1, 12, tzinfo=UTC) + timedelta(minutes=minutes),
        kafka=KafkaPoint(documents_topic="documents", documents_end_offsets={0: 12, 1: 7},
                         groups={"ingest": ingest_point()}),
        model={"embed_model": "multilingual-e5-small"}, chunking={"chunk_max_tokens": 400})


def test_manifests_round_trip_owner_only_and_list_oldest_first(tmp_path: Path) -> None:
    late, early = manifest("aichat-b", minutes=5), manifest("aichat-a")
    path = save_manifest(tmp_path, late)
    save_manifest(tmp_path, early)
    (tmp_path / "notes.json").write_text("{not a manifest", encoding="utf-8")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = load_manifest(tmp_path, "aichat-b")
    assert loaded == late
    assert loaded.kafka.groups["ingest"].committed["chunks"] == {0: 40, 1: 30}  # int partitions
    assert loaded.documents_records == 19
    assert [m.id for m in list_manifests(tmp_path)] == ["aichat-a", "aichat-b"]
    with pytest.raises(BackupError, match=r"no backup 'nope'.*aichat-a, aichat-b"):
        load_manifest(tmp_path, "nope")
    with pytest.raises(BackupError, match="not a backup manifest"):
        load_manifest(tmp_path, "notes")
    assert list_manifests(tmp_path / "missing") == []


def test_backup_ids_are_valid_for_weaviate_and_elasticsearch() -> None:
    backup_id = new_backup_id(datetime(2026, 12, 1, 8, 5, 9, tzinfo=UTC))
    assert backup_id == "aichat-20261201-080509"
    assert re.match(ID_PATTERN, backup_id)
    with pytest.raises(ValueError, match="id"):
        manifest("Upper Case")


def test_settings_place_manifests_and_the_local_snapshot_repository(tmp_path: Path) -> None:
    local = BackupSettings(stack_dir=tmp_path)
    assert local.manifests_dir == tmp_path / "backups"
    assert local.elastic_location() == str(tmp_path / "elasticsearch" / "snapshots")
    assert local.collections() == ["Chunk", "ChunkDocs"]
    # an index generation's workers write its physical collection, behind the serving alias
    generation = BackupSettings(stack_dir=tmp_path, index_generation="Chunk_v2")
    assert generation.collections() == ["Chunk_v2", "Chunk_v2Docs"]
    remote = BackupSettings(stack_dir=tmp_path, elastic_url="https://es.internal:9200",
                            backup_dir=tmp_path / "elsewhere")
    assert remote.elastic_location() is None  # production: the operator registers the repository
    assert remote.manifests_dir == tmp_path / "elsewhere"


def test_the_local_elasticsearch_lists_the_snapshot_directory_as_path_repo(tmp_path: Path) -> None:
    settings = StackSettings(stack_dir=tmp_path)
    text = render_elasticsearch_yml(settings, tmp_path / "d", tmp_path / "l")
    assert f"path.repo: {snapshots_dir(tmp_path)}" in text.splitlines()
    assert snapshots_dir(tmp_path) == settings.service_dir("elasticsearch") / "snapshots"


def test_the_cli_parses_restore_options() -> None:
    args = build_parser().parse_args(["backup", "restore", "aichat-1", "--drop-existing",
                                      "--only", "weaviate", "--yes"])
    assert (args.backup_command, args.id, args.drop_existing, args.only, args.yes) == (
        "restore", "aichat-1", True, ["weaviate"], True)
    args = build_parser().parse_args(["backup", "create", "--role", "pipeline"])
    assert (args.role, args.backup_id) == ("pipeline", None)
