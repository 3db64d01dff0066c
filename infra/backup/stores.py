"""Weaviate backups and Elasticsearch snapshots over their REST APIs (httpx, one call each).

Weaviate (``/v1/backups/{backend}``): a backup module writes the named collections to its
backend — ``filesystem`` in the local stack (``BACKUP_FILESYSTEM_PATH``), ``s3``, ``gcs``
or ``azure`` in production — and restores them into a Weaviate that does not have them.
Both run in the background; these functions poll until ``SUCCESS`` and raise on
``FAILED``/``CANCELED`` with Weaviate's own message.

Elasticsearch (``/_snapshot``): a repository (``fs`` under ``path.repo`` locally, registered
here when missing; an ``s3``/``gcs``/``azure`` repository registered by the operator in
production) holds snapshots of the named indices, without the cluster's global state (the
index templates are the workers' to create). A restore needs the indices absent, so it
deletes exactly the snapshot's indices first when told to, and refuses otherwise.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import httpx

from infra.backup.manifest import BackupError

POLL_S = 0.5
DONE, FAILED = "SUCCESS", frozenset({"FAILED", "CANCELED"})


def _refused(what: str, response: httpx.Response) -> BackupError:
    return BackupError(f"{what}: HTTP {response.status_code} {response.text[:300]}")


# -- Weaviate --------------------------------------------------------------------------------


async def collection_counts(http: httpx.AsyncClient, names: Sequence[str]) -> dict[str, int]:
    """Objects per collection, for the collections that exist (names are validated class
    names, so they go into the GraphQL text as they are)."""
    counts: dict[str, int] = {}
    for name in names:
        if (await http.get(f"/v1/schema/{name}")).status_code == 404:
            continue
        response = await http.post("/v1/graphql", json={"query": f"{{Aggregate{{{name}{{meta{{count}}}}}}}}"})
        if response.status_code != 200 or response.json().get("errors"):
            raise _refused(f"counting the objects of {name}", response)
        counts[name] = int(response.json()["data"]["Aggregate"][name][0]["meta"]["count"])
    return counts


async def _wait_weaviate(http: httpx.AsyncClient, url: str, what: str, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        response = await http.get(url)
        if response.status_code != 200:
            raise _refused(what, response)
        body: dict[str, Any] = response.json()
        status = str(body.get("status"))
        if status == DONE:
            return body
        if status in FAILED:
            raise BackupError(f"{what} {status.lower()}: {body.get('error') or 'no reason given'}")
        if time.monotonic() > deadline:
            raise BackupError(f"{what} still {status} after {timeout_s:.0f}s (AICHAT_BACKUP_TIMEOUT_S)")
        await asyncio.sleep(POLL_S)


async def create_weaviate_backup(http: httpx.AsyncClient, backend: str, backup_id: str,
                                 collections: Sequence[str], timeout_s: float) -> str:
    """Back the collections up under ``backup_id``; returns where the backend put it."""
    response = await http.post(f"/v1/backups/{backend}", json={"id": backup_id, "include": list(collections)})
    if response.status_code != 200:
        hint = (" (is the backup-" + backend + " module enabled: ENABLE_MODULES?)"
                if response.status_code == 422 and "module" in response.text else "")
        raise BackupError(f"Weaviate refused the backup{hint}: HTTP {response.status_code} "
                          f"{response.text[:300]}")
    body = await _wait_weaviate(http, f"/v1/backups/{backend}/{backup_id}", "Weaviate backup", timeout_s)
    return str(body.get("path", ""))


async def _state(http: httpx.AsyncClient, url: str, key: str) -> str:
    """``body[key]`` of a GET (a list's first item's), ``missing`` on 404, else the HTTP status."""
    response = await http.get(url)
    if response.status_code == 404:
        return "missing"
    if response.status_code != 200:
        return f"HTTP {response.status_code}"
    body = response.json()
    if key == "snapshots":  # Elasticsearch: {"snapshots": [{"state": …}]}
        body, key = (body.get("snapshots") or [{}])[0], "state"
    return str(body.get(key, "?"))


async def weaviate_backup_status(http: httpx.AsyncClient, backend: str, backup_id: str) -> str:
    """``SUCCESS``, another status of Weaviate's, or ``missing``."""
    return await _state(http, f"/v1/backups/{backend}/{backup_id}", "status")


async def drop_collections(http: httpx.AsyncClient, names: Sequence[str]) -> None:
    for name in names:
        response = await http.delete(f"/v1/schema/{name}")
        if response.status_code >= 300 and response.status_code != 404:
            raise _refused(f"deleting Weaviate collection {name}", response)


async def restore_weaviate_backup(http: httpx.AsyncClient, backend: str, backup_id: str,
                                  collections: Sequence[str], timeout_s: float) -> None:
    response = await http.post(f"/v1/backups/{backend}/{backup_id}/restore",
                               json={"include": list(collections)})
    if response.status_code != 200:
        raise _refused(f"Weaviate refused to restore backup {backup_id}", response)
    await _wait_weaviate(http, f"/v1/backups/{backend}/{backup_id}/restore", "Weaviate restore", timeout_s)


# -- Elasticsearch ---------------------------------------------------------------------------


async def ensure_repository(http: httpx.AsyncClient, repository: str, location: str | None) -> None:
    """Register an ``fs`` repository at ``location`` unless ``repository`` exists already."""
    response = await http.get(f"/_snapshot/{repository}")
    if response.status_code == 200:
        return
    if response.status_code != 404:
        raise _refused(f"looking up snapshot repository {repository}", response)
    if location is None:
        raise BackupError(f"Elasticsearch has no snapshot repository {repository}: register one "
                          "(s3, gcs, azure or fs) under that name, or set AICHAT_BACKUP_ELASTIC_LOCATION "
                          "to a directory listed in the cluster's path.repo")
    response = await http.put(f"/_snapshot/{repository}", json={"type": "fs", "settings": {"location": location}})
    if response.status_code != 200:
        hint = ""
        if "path.repo" in response.text:
            hint = (f" — {location} is not under the cluster's path.repo; the local stack's "
                    "elasticsearch.yml has it since backups exist: restart Elasticsearch "
                    "(aichat stack down && aichat stack up)")
        raise BackupError(f"Elasticsearch refused repository {repository} at {location}{hint}: "
                          f"HTTP {response.status_code} {response.text[:300]}")


async def index_docs(http: httpx.AsyncClient, pattern: str) -> dict[str, int]:
    """Open indices matching ``pattern`` and their document counts (after a refresh)."""
    await http.post(f"/{pattern}/_refresh", params={"allow_no_indices": "true"})
    response = await http.get(f"/_cat/indices/{pattern}", params={"format": "json", "h": "index,docs.count"})
    if response.status_code == 404:
        return {}
    if response.status_code != 200:
        raise _refused(f"listing indices {pattern}", response)
    return {row["index"]: int(row.get("docs.count") or 0) for row in response.json()}


async def existing_indices(http: httpx.AsyncClient, names: Sequence[str]) -> list[str]:
    """Which of these index names exist now."""
    if not names:
        return []
    response = await http.get(f"/{','.join(names)}", params={
        "ignore_unavailable": "true", "allow_no_indices": "true", "filter_path": "*.settings.index.uuid"})
    if response.status_code != 200:
        raise _refused("looking up indices", response)
    return sorted(set(response.json()) & set(names))


async def create_snapshot(http: httpx.AsyncClient, repository: str, snapshot: str,
                          indices: Sequence[str], timeout_s: float) -> None:
    response = await http.put(
        f"/_snapshot/{repository}/{snapshot}", params={"wait_for_completion": "true"},
        json={"indices": ",".join(indices), "include_global_state": False}, timeout=timeout_s)
    if response.status_code != 200:
        raise _refused(f"Elasticsearch snapshot {snapshot}", response)
    state = response.json().get("snapshot", {}).get("state")
    if state != DONE:
        raise BackupError(f"Elasticsearch snapshot {snapshot} ended {state}: {response.text[:300]}")


async def snapshot_state(http: httpx.AsyncClient, repository: str, snapshot: str) -> str:
    """``SUCCESS``, another state of Elasticsearch's, or ``missing``."""
    return await _state(http, f"/_snapshot/{repository}/{snapshot}", "snapshots")


async def restore_snapshot(http: httpx.AsyncClient, repository: str, snapshot: str,
                           indices: Sequence[str], *, drop_existing: bool, timeout_s: float) -> list[str]:
    """Restore the snapshot's indices; returns the ones it deleted first (``drop_existing``)."""
    present = await existing_indices(http, indices)
    if present and not drop_existing:
        raise BackupError(f"indices {', '.join(present)} exist: pass --drop-existing to delete "
                          "them before the restore")
    if present:
        response = await http.delete(f"/{','.join(present)}")
        if response.status_code != 200:
            raise _refused(f"deleting indices {', '.join(present)}", response)
    response = await http.post(
        f"/_snapshot/{repository}/{snapshot}/_restore", params={"wait_for_completion": "true"},
        json={"indices": ",".join(indices), "include_global_state": False}, timeout=timeout_s)
    if response.status_code != 200:
        raise _refused(f"Elasticsearch restore of {snapshot}", response)
    shards = response.json().get("snapshot", {}).get("shards", {})
    if shards.get("failed"):
        raise BackupError(f"Elasticsearch restore of {snapshot}: {shards['failed']} shard(s) failed")
    return present
