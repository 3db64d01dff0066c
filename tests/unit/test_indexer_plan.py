"""The indexer's decisions for each event, given the documents' states (no Weaviate)."""

from __future__ import annotations

from datetime import UTC, datetime

from schemas.events import EmbeddedChunk, chunk_uuid
from streams.agents.indexer import plan_batch
from streams.docstate import DocState

NOW = datetime(2026, 11, 26, tzinfo=UTC)


def chunk(doc: str, version: int, seq: int = 0, n: int = 1, *, op: str = "upsert", h: str = "h",
          tenant: str = "default") -> EmbeddedChunk:
    if op != "upsert":
        return EmbeddedChunk(op=op, chunk_id=chunk_uuid(tenant, doc, version, 0), doc_id=doc,
                             tenant=tenant, version=version, seq=0, n_chunks=0, content_hash=h)
    return EmbeddedChunk(chunk_id=chunk_uuid(tenant, doc, version, seq), doc_id=doc, tenant=tenant,
                         version=version, seq=seq, n_chunks=n, text=f"{doc} v{version} #{seq}",
                         vector="AAAAAA==", dim=1, model="m", content_hash=h)


def state(doc: str, version: int, status: str = "indexed", h: str = "h", tenant: str = "default") -> DocState:
    return DocState(doc_id=doc, tenant=tenant, version=version, status=status,  # type: ignore[arg-type]
                    content_hash=h, n_chunks=1, indexed_at=NOW)


def states_of(*items: DocState) -> dict[tuple[str, str], DocState]:
    return {s.key: s for s in items}


def outcomes(batch: list[EmbeddedChunk], states: dict[tuple[str, str], DocState] | None = None) -> tuple[list[tuple[str, int, int]], list[tuple[str, str, int]]]:
    plan = plan_batch([(None, c) for c in batch], states or {}, NOW)
    upserts = [(c.doc_id, c.version, c.seq) for c, _ in plan.upserts]
    finished = [(f.outcome, f.chunk.doc_id, f.chunk.version) for f in plan.finished]
    return upserts, finished


def test_a_new_document_is_upserted_and_completed_on_its_last_chunk() -> None:
    upserts, finished = outcomes([chunk("d", 1, 0, 2), chunk("d", 1, 1, 2)])
    assert upserts == [("d", 1, 0), ("d", 1, 1)]
    assert finished == [("indexed", "d", 1)]


def test_an_older_version_arriving_late_is_stale() -> None:
    upserts, finished = outcomes([chunk("d", 1, 0, 1)], states_of(state("d", 2)))
    assert upserts == []
    assert finished == [("stale", "d", 1)]


def test_a_replay_of_the_indexed_version_rewrites_it() -> None:
    upserts, finished = outcomes([chunk("d", 2, 0, 1)], states_of(state("d", 2)))
    assert upserts == [("d", 2, 0)]
    assert finished == [("indexed", "d", 2)]


def test_a_delete_wins_over_every_version_up_to_its_own() -> None:
    _, finished = outcomes([chunk("d", 3, op="delete"), chunk("d", 2, 0, 1), chunk("d", 3, 0, 1), chunk("d", 4, 0, 1)])
    assert finished == [("deleted", "d", 3), ("stale", "d", 2), ("stale", "d", 3), ("indexed", "d", 4)]


def test_versions_in_one_batch_follow_each_other() -> None:
    upserts, finished = outcomes([chunk("d", 1, 0, 1), chunk("d", 2, 0, 2), chunk("d", 2, 1, 2), chunk("d", 1, 0, 1)])
    assert finished == [("indexed", "d", 1), ("indexed", "d", 2), ("stale", "d", 1)]
    assert ("d", 1, 0) in upserts and upserts.count(("d", 1, 0)) == 1


def test_unchanged_needs_the_indexed_content() -> None:
    plan = plan_batch([(None, chunk("d", 5, op="unchanged", h="h"))], states_of(state("d", 4, h="h")), NOW)
    assert [(f.outcome, f.chunk.version) for f in plan.finished] == [("unchanged", 5)]
    plan = plan_batch([(None, chunk("d", 5, op="unchanged", h="other"))], states_of(state("d", 4, h="h")), NOW)
    assert plan.finished == [] and len(plan.rejected) == 1
    assert "publish the document again" in plan.rejected[0][1]


def test_documents_do_not_affect_each_other() -> None:
    _, finished = outcomes([chunk("a", 1, 0, 1), chunk("b", 1, 0, 1)], states_of(state("b", 5)))
    assert finished == [("indexed", "a", 1), ("stale", "b", 1)]


def test_tenants_with_the_same_doc_id_do_not_affect_each_other() -> None:
    """acme's newer version makes neither globex's older one stale, nor does its delete reach it."""
    batch = [chunk("1", 2, 0, 1, tenant="globex"), chunk("1", 9, op="delete", tenant="globex")]
    _, finished = outcomes(batch, states_of(state("1", 7, tenant="acme")))
    assert finished == [("indexed", "1", 2), ("deleted", "1", 9)]
    plan = plan_batch([(None, c) for c in batch], states_of(state("1", 7, tenant="acme")), NOW)
    assert {f.chunk.tenant for f in plan.finished} == {"globex"}
    # and an unchanged marker of globex is not satisfied by acme's indexed content
    plan = plan_batch([(None, chunk("1", 8, op="unchanged", tenant="globex"))],
                      states_of(state("1", 7, tenant="acme")), NOW)
    assert plan.finished == [] and len(plan.rejected) == 1


def test_the_same_version_with_other_content_is_a_conflict_not_a_partial_update() -> None:
    batch = [chunk("d", 4, 0, 2, h="new"), chunk("d", 4, 1, 2, h="new")]
    plan = plan_batch([(None, c) for c in batch], states_of(state("d", 4, h="old")), NOW)
    assert plan.upserts == [] and plan.finished == []
    [(_, reason)] = plan.rejected
    assert "already indexed with other content" in reason and "higher version" in reason
    # a replay of the indexed content is no conflict
    plan = plan_batch([(None, chunk("d", 4, 0, 1, h="old"))], states_of(state("d", 4, h="old")), NOW)
    assert [f.outcome for f in plan.finished] == ["indexed"]
