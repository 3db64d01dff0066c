"""``aichat backup create → mutate → restore → replay`` on a stack of the test's own.

The round trip a user relies on after losing the index: a backup taken while the pipeline
is caught up; then updates, deletes and new documents; the restore refused while workers
run (nothing changed); with the workers stopped, the restore puts back exactly the backed-up
index (the checker against what was published *before* the backup) and the recorded
offsets; started again, the workers replay ``documents`` from there until the checker
passes against everything published, and the shipper replays into the restored
Elasticsearch indices with every record exactly once.

It overwrites collections and resets consumer groups, so it runs on a private stack
(tests/faults/private_stack.py), never the shared one; the workers use the faster model.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from infra.backup.manifest import load_manifest
from infra.kafka.topics import admin_client
from schemas.events import DocumentEvent
from streams.config import WorkerSettings
from tests.faults.checker import check_event_log, check_index, end_offsets, until_ok
from tests.faults.private_stack import PrivateStack, publish, start_again, system_on
from tests.faults.support import FAST_MODEL, ROOT
from tests.support import RunningSystem, cleaned_up

pytestmark = pytest.mark.timeout(900)
SHIPPED = ["documents", "chunks", "embeddings", "indexed"]


@pytest.fixture(scope="module")
async def private() -> AsyncIterator[PrivateStack]:
    # not under pytest's tmp_path: another pytest run of the same user on this machine prunes
    # all but its three newest base directories, data directories of running services included
    root = Path(tempfile.mkdtemp(prefix="aichat-restore-test-"))
    stack = PrivateStack.on_free_ports(root / "stack")
    try:
        await asyncio.to_thread(stack.up)
        yield stack
    except BaseException:
        print(stack.log_tails())
        raise
    finally:
        await asyncio.to_thread(stack.down)
        shutil.rmtree(root, ignore_errors=True)


def doc(i: int, version: int = 1, op: str = "upsert") -> DocumentEvent:
    if op == "delete":
        return DocumentEvent(op="delete", doc_id=f"restore/{i}", version=version)
    return DocumentEvent(doc_id=f"restore/{i}", version=version, title=f"Policy {i} v{version}",
                         text=f"Policy {i}, version {version}. " + "Badges open the doors. " * (8 + i))


async def backup_cli(system: RunningSystem, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "streams.cli", "backup", *args], cwd=ROOT,
        env={**os.environ, **system.env}, capture_output=True, text=True, timeout=300, check=False)


async def committed(settings: WorkerSettings, group: str, topic: str) -> dict[int, int]:
    admin = admin_client(settings)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic}


async def test_backup_restore_and_replay_give_the_index_of_everything_published(
    private: PrivateStack, unique: str
) -> None:
    system = system_on(private, unique, private.settings.stack_dir.parent / unique,
                       AICHAT_EMBED_MODEL=FAST_MODEL)
    async with cleaned_up(system):
        await asyncio.to_thread(system.start, "ingest", "shipper", gateway=False)
        settings = system.settings()
        before = await publish(settings, [doc(i) for i in range(8)])
        report = await until_ok(lambda: check_index(settings, before), timeout_s=180)
        assert report.ok, report
        shipped = await until_ok(lambda: check_event_log(settings, SHIPPED), timeout_s=120)
        assert shipped.ok, shipped
        chunks_at_backup = report.chunks

        backup_id = f"restore-{unique}"
        created = await backup_cli(system, "create", "--id", backup_id)
        assert created.returncode == 0, created.stderr
        manifest = load_manifest(private.settings.stack_dir / "backups", backup_id)
        collection = settings.weaviate_collection
        assert manifest.weaviate is not None and manifest.elasticsearch is not None
        assert manifest.weaviate.objects == {collection: chunks_at_backup, f"{collection}Docs": 8}
        assert manifest.documents_records == 8
        ingest = manifest.kafka.groups["ingest"]
        documents = settings.topic("documents")
        assert ingest.committed[documents] == manifest.kafka.documents_end_offsets  # caught up
        assert manifest.kafka.documents_config["cleanup.policy"] == "compact"
        assert manifest.model["embed_model"] == FAST_MODEL
        assert all(i.startswith(f"t{unique}") for i in manifest.elasticsearch.indices)

        # after the backup: updates, deletes and new documents, all indexed
        after = await publish(settings, [doc(0, 2), doc(1, 2), doc(2, 2), doc(3, 2, "delete"),
                                         doc(4, 2, "delete"), doc(8), doc(9), doc(10)])
        everything = before + after
        report = await until_ok(lambda: check_index(settings, everything), timeout_s=180)
        assert report.ok, report

        refused = await backup_cli(system, "restore", backup_id, "--drop-existing", "--yes")
        assert refused.returncode == 1
        assert "workers are running" in refused.stderr and "nothing was changed" in refused.stderr
        assert (await check_index(settings, everything)).ok  # the refusal touched nothing

        await asyncio.to_thread(system.stop)
        restored = await backup_cli(system, "restore", backup_id, "--drop-existing", "--yes")
        assert restored.returncode == 0, restored.stderr
        assert f"deleted the existing collection {collection}" in restored.stdout
        # exactly the backed-up index again: the mutations are gone until the replay
        at_backup = await check_index(settings, before)
        assert at_backup.ok, at_backup
        assert at_backup.chunks == chunks_at_backup
        assert await committed(settings, ingest.group, documents) == ingest.committed[documents]

        await asyncio.to_thread(start_again, system)
        report = await until_ok(lambda: check_index(settings, everything), timeout_s=180)
        assert report.ok, report
        assert len(report.deleted) == 2 and len(report.expected) == 9
        ends = await end_offsets(settings, SHIPPED)
        shipped = await until_ok(lambda: check_event_log(settings, SHIPPED, ends=ends), timeout_s=120)
        assert shipped.ok, shipped  # restored indices + the shipper's replay: each record once
