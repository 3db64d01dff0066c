"""What a backup covers, and where the consumer groups start again after a restore (pure).

A backup is three parts taken at one moment: the Weaviate collections (chunks and document
states), an Elasticsearch snapshot (event, summary and log indices), and the Kafka
positions they correspond to. The manifest (``<backup_dir>/<id>.json``) records them::

    {"format": 1, "id": "aichat-20261201-120000", "created_at": …, "completed_at": …,
     "topic_prefix": "", "role": "ingest",
     "weaviate": {"backend": "filesystem", "collections": ["Chunk", "ChunkDocs"], "objects": {…}},
     "elasticsearch": {"repository": "aichat-backups", "snapshot": …, "indices": […], "docs": …},
     "kafka": {"documents_topic": "documents", "documents_end_offsets": {"0": 120, …},
               "documents_config": {"cleanup.policy": "compact", …},
               "groups": {"ingest": {"group": "aichat-ingest", "committed": {topic: {p: o}},
                                     "ends": {topic: {p: o}}}, "shipper": {…}}},
     "model": {…}, "chunking": {…}}

The offsets are read *before* the stores are copied, so the copies hold at least the
effects of every record below the committed offsets (a group commits only after the
effect). :func:`plan_reset` turns a recorded group into the offsets to commit at restore:

* the replayed topic (``documents`` for the ingest group) and every topic of a group with
  nothing derived (the shipper): the recorded committed offset, so the workers replay
  everything after it (deterministic ids and "versions win" make that idempotent);
* a derived topic (``chunks``, ``embeddings``): where records were in flight at the backup
  (committed < end), the recorded committed offset, so they are processed again; where
  nothing was in flight, the current end: everything after the backup there is derived
  again from the replayed ``documents`` and need not be embedded twice.

Offsets are clamped to the partition's current log start; an in-flight record of a derived
topic that retention has deleted since cannot be replayed, and the plan says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, ValidationError

from infra.errors import StackError

#: topic name → partition → offset
Offsets = dict[str, dict[int, int]]
ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,127}$"  # Weaviate's backup ids and valid snapshot names


class BackupError(StackError):
    """A backup or restore that cannot go on; the message says why and what to do."""


class GroupPoint(BaseModel):
    """One consumer group at the backup: its committed offsets and its topics' end offsets."""

    group: str
    committed: Offsets = Field(default_factory=dict)
    ends: Offsets = Field(default_factory=dict)


class KafkaPoint(BaseModel):
    documents_topic: str
    documents_end_offsets: dict[int, int]
    documents_config: dict[str, str] = Field(default_factory=dict)
    groups: dict[str, GroupPoint] = Field(default_factory=dict)  # "ingest", "shipper"


class WeaviatePart(BaseModel):
    backend: str
    collections: list[str]
    objects: dict[str, int] = Field(default_factory=dict)
    path: str = ""


class ElasticPart(BaseModel):
    repository: str
    snapshot: str
    indices: list[str]
    docs: int = 0


class BackupManifest(BaseModel):
    format: Literal[1] = 1
    id: str = Field(pattern=ID_PATTERN)
    created_at: datetime
    completed_at: datetime | None = None
    topic_prefix: str = ""
    role: str = "ingest"
    weaviate: WeaviatePart | None = None
    elasticsearch: ElasticPart | None = None
    kafka: KafkaPoint
    model: dict[str, str] = Field(default_factory=dict)
    chunking: dict[str, int] = Field(default_factory=dict)
    seconds: dict[str, float] = Field(default_factory=dict)  # how long each copy took

    @property
    def documents_records(self) -> int:
        """Records of ``documents`` below the end offsets at the backup."""
        return sum(self.kafka.documents_end_offsets.values())


def new_backup_id(now: datetime | None = None) -> str:
    return (now or datetime.now(UTC)).strftime("aichat-%Y%m%d-%H%M%S")


def manifest_path(directory: Path, backup_id: str) -> Path:
    return directory / f"{backup_id}.json"


def save_manifest(directory: Path, manifest: BackupManifest) -> Path:
    """Write the manifest whole (a temporary file renamed over), readable only by the owner."""
    directory.mkdir(parents=True, exist_ok=True)
    path = manifest_path(directory, manifest.id)
    partial = path.with_suffix(".partial")
    partial.write_text(manifest.model_dump_json(indent=2), encoding="utf-8")
    partial.chmod(0o600)
    partial.replace(path)
    return path


def load_manifest(directory: Path, backup_id: str) -> BackupManifest:
    path = manifest_path(directory, backup_id)
    try:
        return BackupManifest.model_validate_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        known = ", ".join(m.id for m in list_manifests(directory)) or "none"
        raise BackupError(f"no backup {backup_id!r} in {directory} (backups: {known})") from None
    except ValidationError as exc:
        raise BackupError(f"{path}: not a backup manifest ({exc.error_count()} problems: "
                          f"{exc.errors()[0]['msg']})") from None


def list_manifests(directory: Path) -> list[BackupManifest]:
    """Every readable manifest in ``directory``, oldest first (unreadable files are skipped)."""
    found = []
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        try:
            found.append(BackupManifest.model_validate_json(path.read_text(encoding="utf-8")))
        except (OSError, ValidationError):
            continue
    return sorted(found, key=lambda m: m.created_at)


@dataclass(frozen=True)
class ResetPlan:
    """Offsets to commit for one group, and what the workers will read again."""

    group: str
    offsets: dict[tuple[str, int], int]
    replayed: dict[str, int] = field(default_factory=dict)  # topic → records to read again
    notes: tuple[str, ...] = ()


def plan_reset(point: GroupPoint, *, derived: frozenset[str], starts: Offsets,
               ends: Offsets) -> ResetPlan:
    """The offsets to commit for ``point``'s group now (see the module docstring).

    ``starts``/``ends`` are the current log start and end offsets of every partition of the
    group's topics (full names); ``derived`` the topics re-derived from a replayed one."""
    offsets: dict[tuple[str, int], int] = {}
    replayed: dict[str, int] = {}
    notes: list[str] = []
    expired: list[str] = []
    for topic in sorted(ends):
        committed, then = point.committed.get(topic, {}), point.ends.get(topic, {})
        for partition, end in sorted(ends[topic].items()):
            start = starts.get(topic, {}).get(partition, 0)
            recorded, then_end = committed.get(partition), then.get(partition)
            where = f"{topic}[{partition}]"
            if topic in derived:
                position = recorded or 0
                if then_end is None or then_end <= position:
                    target = end  # nothing in flight at the backup: derived again by the replay
                elif position < start:
                    expired.append(f"{where} offsets {position}..{start - 1}")
                    continue
                else:
                    target = min(position, end)
            elif recorded is None:
                target = start  # the copies hold nothing of this partition
                if then_end:
                    notes.append(f"{where}: nothing committed at the backup, read from {start}")
            elif recorded > end:
                target = start
                notes.append(f"{where}: the backup's offset {recorded} is past the end {end} "
                             f"(topic re-created since?), read from {start}")
            elif recorded < start:
                target = start
                notes.append(f"{where}: records {recorded}..{start - 1} are gone from Kafka "
                             f"(retention), read from {start}")
            else:
                target = recorded
            offsets[(topic, partition)] = target
            replayed[topic] = replayed.get(topic, 0) + max(0, end - target)
    if expired:
        raise BackupError(
            f"group {point.group}: records in flight at the backup are no longer in Kafka "
            f"({'; '.join(expired)}): this backup cannot be completed by a replay; use a newer "
            "backup, or rebuild the whole index from documents (aichat rebuild)")
    return ResetPlan(point.group, offsets, replayed, tuple(notes))


def in_flight(point: GroupPoint, topics: frozenset[str]) -> int:
    """Records of ``topics`` that the group had not yet committed at the backup."""
    return sum(max(0, end - point.committed.get(topic, {}).get(partition, 0))
               for topic in topics for partition, end in point.ends.get(topic, {}).items())
