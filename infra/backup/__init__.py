"""``aichat backup create | list | restore ID``: copies of the index, and the Kafka point they cover.

``documents`` stays the source of truth; a backup makes recovering from a lost Weaviate
(or Elasticsearch) a copy plus a short replay instead of re-embedding everything:

``create``   1. read the Kafka point (infra/backup/offsets.py): the ingest group's and the
                shipper's committed offsets, then their topics' end offsets;
             2. back up the chunk and document-state collections with Weaviate's backup
                module (``AICHAT_BACKUP_WEAVIATE_BACKEND``: ``filesystem`` locally);
             3. snapshot the event, summary and log indices (``<prefix>-*``) into the
                Elasticsearch repository (an ``fs`` one under ``path.repo`` is registered
                when missing);
             4. write the manifest ``<backup_dir>/<id>.json`` (infra/backup/manifest.py).
``restore``  refuses while a worker of a group it resets runs, or (without
             ``--drop-existing``) while the collections or indices exist; then restores
             Weaviate, then Elasticsearch, then commits the recorded offsets, so the
             workers, started again, replay ``documents`` (and the shipper its topics) from
             where the backup stood. Versions win and ids are deterministic: the replay
             converges on what a clean ingest of the topic gives.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import httpx
from pydantic import Field

from infra.backup import offsets, stores
from infra.backup.manifest import (
    BackupError,
    BackupManifest,
    ElasticPart,
    ResetPlan,
    WeaviatePart,
    list_manifests,
    load_manifest,
    manifest_path,
    new_backup_id,
    save_manifest,
)
from infra.elk.launcher import snapshots_dir
from streams.config import WorkerSettings
from streams.endpoints import LOOPBACK_HOSTS, elastic_http_options, weaviate_http_options

PARTS = ("weaviate", "elasticsearch")
Part = Literal["weaviate", "elasticsearch"]


class BackupSettings(WorkerSettings):
    """``aichat backup``: the worker's view of the services, plus where backups go."""

    backup_dir: Path | None = Field(
        None, description="where the manifests (<id>.json) are kept; default <stack_dir>/backups")
    backup_weaviate_backend: Literal["filesystem", "s3", "gcs", "azure"] = Field(
        "filesystem", description="Weaviate's backup module (backup-<name> in ENABLE_MODULES)")
    backup_elastic_repository: str = Field(
        "aichat-backups", pattern=r"^[a-z0-9][a-z0-9_.-]*$",
        description="Elasticsearch snapshot repository (registered by the operator in production)")
    backup_elastic_location: str | None = Field(
        None, description="register the repository as type fs here when missing (a path under "
        "path.repo); default: the local stack's <stack_dir>/elasticsearch/snapshots for a local "
        "Elasticsearch, none otherwise")
    backup_timeout_s: float = Field(1800.0, gt=0, le=86_400, description="longest wait per copy")

    @property
    def manifests_dir(self) -> Path:
        return self.backup_dir or self.stack_dir / "backups"

    def elastic_location(self) -> str | None:
        if self.backup_elastic_location:
            return self.backup_elastic_location
        local = urlsplit(self.elastic_url).hostname in LOOPBACK_HOSTS
        return str(snapshots_dir(self.stack_dir)) if local else None

    def collections(self) -> list[str]:
        """The physical collections the ingest role writes: an index generation's
        (``AICHAT_INDEX_GENERATION``, infra/generations.py) or the configured one."""
        name = self.index_generation or self.weaviate_collection
        return [name, f"{name}Docs"]


def _weaviate(settings: BackupSettings) -> httpx.AsyncClient:
    return httpx.AsyncClient(**weaviate_http_options(settings), timeout=60)


def _elastic(settings: BackupSettings) -> httpx.AsyncClient:
    return httpx.AsyncClient(**elastic_http_options(settings), timeout=60)


async def create_backup(settings: BackupSettings, *, role: str = "ingest",
                        backup_id: str | None = None) -> BackupManifest:
    """Take a backup now (see the module docstring); returns its saved manifest."""
    backup_id = backup_id or new_backup_id()
    if manifest_path(settings.manifests_dir, backup_id).exists():
        raise BackupError(f"backup {backup_id} exists already ({settings.manifests_dir})")
    started = datetime.now(UTC)
    async with _elastic(settings) as http:  # a missing repository stops us before any copy
        docs = await stores.index_docs(http, f"{settings.elastic_index_prefix}-*")
        if docs:
            await stores.ensure_repository(http, settings.backup_elastic_repository,
                                           settings.elastic_location())
    point = await offsets.kafka_point(settings, role)  # before the copies: they cover at least this
    manifest = BackupManifest(
        id=backup_id, created_at=started, topic_prefix=settings.topic_prefix, role=role, kafka=point,
        model={"embed_model": settings.embed_model, "embed_backend": settings.embed_backend},
        chunking={"chunk_max_tokens": settings.chunk_max_tokens,
                  "chunk_overlap_tokens": settings.chunk_overlap_tokens,
                  "max_chunks_per_document": settings.max_chunks_per_document})
    async with _weaviate(settings) as http:
        counts = await stores.collection_counts(http, settings.collections())
        if counts:
            began, backend = time.monotonic(), settings.backup_weaviate_backend
            path = await stores.create_weaviate_backup(http, backend, backup_id, sorted(counts),
                                                       settings.backup_timeout_s)
            manifest.weaviate = WeaviatePart(backend=backend, collections=sorted(counts),
                                             objects=counts, path=path)
            manifest.seconds["weaviate"] = round(time.monotonic() - began, 2)
    if docs:
        async with _elastic(settings) as http:
            began, docs = time.monotonic(), await stores.index_docs(http, f"{settings.elastic_index_prefix}-*")
            repository = settings.backup_elastic_repository
            await stores.create_snapshot(http, repository, backup_id, sorted(docs), settings.backup_timeout_s)
            manifest.elasticsearch = ElasticPart(repository=repository, snapshot=backup_id,
                                                 indices=sorted(docs), docs=sum(docs.values()))
            manifest.seconds["elasticsearch"] = round(time.monotonic() - began, 2)
    if manifest.weaviate is None and manifest.elasticsearch is None:
        raise BackupError(f"nothing to back up: no collection {settings.collections()[0]} in "
                          f"Weaviate, no index {settings.elastic_index_prefix}-* in Elasticsearch")
    manifest.completed_at = datetime.now(UTC)
    save_manifest(settings.manifests_dir, manifest)
    return manifest


@dataclass(frozen=True)
class BackupListing:
    manifest: BackupManifest
    weaviate: str  # Weaviate's status of the backup, "missing", or "-" (none in it)
    elasticsearch: str


async def list_backups(settings: BackupSettings) -> list[BackupListing]:
    """The manifests, each with whether its copies are still in Weaviate and Elasticsearch."""
    listings = []
    async with _weaviate(settings) as weaviate, _elastic(settings) as elastic:
        for m in list_manifests(settings.manifests_dir):
            w = await stores.weaviate_backup_status(weaviate, m.weaviate.backend, m.id) if m.weaviate else "-"
            e = (await stores.snapshot_state(elastic, m.elasticsearch.repository, m.elasticsearch.snapshot)
                 if m.elasticsearch else "-")
            listings.append(BackupListing(m, w, e))
    return listings


@dataclass
class RestoreReport:
    manifest: BackupManifest
    parts: tuple[str, ...]
    dropped_collections: dict[str, int] = field(default_factory=dict)
    dropped_indices: list[str] = field(default_factory=list)
    plans: list[ResetPlan] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # weaviate, elasticsearch, offsets

    @property
    def documents_to_replay(self) -> int:
        topic = self.manifest.kafka.documents_topic
        return sum(p.replayed.get(topic, 0) for p in self.plans if p.group == self._ingest_group)

    @property
    def _ingest_group(self) -> str:
        return self.manifest.kafka.groups["ingest"].group


def _check_compatible(settings: BackupSettings, manifest: BackupManifest) -> None:
    if manifest.topic_prefix != settings.topic_prefix:
        raise BackupError(f"backup {manifest.id} was taken with AICHAT_TOPIC_PREFIX="
                          f"{manifest.topic_prefix!r}, not {settings.topic_prefix!r}")
    model = manifest.model.get("embed_model")
    if manifest.weaviate and model and model != settings.embed_model:
        raise BackupError(f"backup {manifest.id} holds vectors of {model}; the workers would embed "
                          f"with {settings.embed_model}: set AICHAT_EMBED_MODEL={model} (a model "
                          "change is a rebuild, not a restore)")
    if manifest.weaviate and not set(manifest.weaviate.collections) <= set(settings.collections()):
        raise BackupError(f"backup {manifest.id} holds {', '.join(manifest.weaviate.collections)}, "
                          f"not {settings.collections()[0]} (AICHAT_WEAVIATE_COLLECTION, "
                          "AICHAT_INDEX_GENERATION)")


async def restore_backup(settings: BackupSettings, backup_id: str, *, drop_existing: bool = False,
                         parts: tuple[str, ...] = PARTS) -> RestoreReport:
    """Restore (see the module docstring). Every refusal comes before the first change."""
    manifest = load_manifest(settings.manifests_dir, backup_id)
    _check_compatible(settings, manifest)
    held = tuple(p for p in PARTS if p in parts and getattr(manifest, p) is not None)
    if not held:
        raise BackupError(f"backup {backup_id} holds nothing of {', '.join(parts)}")
    report = RestoreReport(manifest, held)
    purposes = {"weaviate": "ingest", "elasticsearch": "shipper"}
    points = {purposes[p]: manifest.kafka.groups[purposes[p]] for p in held}
    await offsets.refuse_running(settings, [point.group for point in points.values()])
    report.plans = [await offsets.plan_group(settings, purpose, point) for purpose, point in points.items()]
    w, e = manifest.weaviate if "weaviate" in held else None, manifest.elasticsearch if "elasticsearch" in held else None
    async with _weaviate(settings) as weaviate, _elastic(settings) as elastic:
        present: dict[str, int] = {}
        if w is not None:
            if (status := await stores.weaviate_backup_status(weaviate, w.backend, manifest.id)) != "SUCCESS":
                raise BackupError(f"Weaviate's {w.backend} backend has backup {manifest.id}: {status}")
            present = await stores.collection_counts(weaviate, w.collections)
        indices = await stores.existing_indices(elastic, e.indices) if e is not None else []
        if (present or indices) and not drop_existing:
            listed = [f"collection {n} ({c} objects)" for n, c in present.items()]
            listed += [f"index {name}" for name in indices]
            raise BackupError(f"{', '.join(listed)} exist: pass --drop-existing to delete them "
                              "before the restore; nothing was changed")
        if w is not None:
            started = time.monotonic()
            await stores.drop_collections(weaviate, sorted(present))
            report.dropped_collections = present
            await stores.restore_weaviate_backup(weaviate, w.backend, manifest.id, w.collections,
                                                 settings.backup_timeout_s)
            report.seconds["weaviate"] = time.monotonic() - started
        if e is not None:
            started = time.monotonic()
            report.dropped_indices = await stores.restore_snapshot(
                elastic, e.repository, e.snapshot, e.indices, drop_existing=drop_existing,
                timeout_s=settings.backup_timeout_s)
            report.seconds["elasticsearch"] = time.monotonic() - started
    started = time.monotonic()
    for plan in report.plans:
        await offsets.commit(settings, plan)
    report.seconds["offsets"] = time.monotonic() - started
    return report
