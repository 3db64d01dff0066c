"""Feedback and experiments end to end, on the real Kafka, Weaviate and Elasticsearch:

a gateway with an experiments file assigns the user a variant; the question is answered;
the user rates it over the real websocket (another user may not); the shipper merges the
rating into the question's summary in Elasticsearch, with the experiment and variant;
``aichat experiments report`` reads it back; ``/metrics`` counted it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from elasticsearch import ApiError
from websockets.asyncio.client import ClientConnection, connect

from infra.experiments.report import build_report, fetch_summaries
from ingest.sdk import DocumentPublisher
from query_gateway.experiments import Experiments
from schemas.events import DocumentEvent
from streams.cli import build_parser
from streams.elastic_sink import elastic_client
from streams.es_documents import summary_index
from tests.support import RunningSystem, cleaned_up, eventually, isolated_env, metric

EXPERIMENT = "e2e-alpha"
EXPERIMENTS = f"""
[[experiment]]
name = "{EXPERIMENT}"
[[experiment.variant]]
variant = "default"
weight = 1
[[experiment.variant]]
variant = "alpha=0.2"
weight = 1
top_k = 3
"""
TEXT = ("Every full-time employee receives 25 days of paid vacation per calendar year. "
        "Up to five unused days can be carried over into the next year.")


@pytest.fixture(scope="module")
async def system(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningSystem]:
    tmp = tmp_path_factory.mktemp("feedback")
    (tmp / "experiments.toml").write_text(EXPERIMENTS, encoding="utf-8")
    env = {**isolated_env(uuid.uuid4().hex[:10], tmp), "AICHAT_EXPERIMENTS_FILE": str(tmp / "experiments.toml")}
    sys_ = RunningSystem(env=env, logs=tmp / "logs")
    async with cleaned_up(sys_):
        sys_.start("pipeline", "shipper")
        yield sys_


async def _ask(ws: ClientConnection, text: str, client_id: str) -> list[dict[str, Any]]:
    await ws.send(orjson.dumps({"type": "query", "id": client_id, "text": text}).decode())
    frames = []
    while True:
        frame = orjson.loads(await ws.recv())
        frames.append(frame)
        if frame["type"] in ("done", "error") and frame["id"] == client_id:
            return frames


async def _rate(ws: ClientConnection, query_id: str, rating: int, comment: str) -> dict[str, Any]:
    await ws.send(orjson.dumps({"type": "feedback", "id": "f1", "query_id": query_id,
                                "rating": rating, "comment": comment}).decode())
    reply: dict[str, Any] = orjson.loads(await ws.recv())
    return reply


async def test_a_rating_over_the_websocket_lands_in_the_summary_and_the_report(
    system: RunningSystem, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = system.settings()
    async with DocumentPublisher(settings) as publisher:
        await publisher.publish(DocumentEvent(doc_id="handbook/vacation", version=1,
                                              title="Vacation policy", text=TEXT))
    expected = Experiments.load(Path(system.env["AICHAT_EXPERIMENTS_FILE"])).assign("default", "e2e")
    async with connect(system.ws_url) as ws:

        async def answered() -> list[dict[str, Any]] | None:
            frames = await _ask(ws, "How many days of paid vacation do I get?", str(uuid.uuid4()))
            sources = [f for f in frames if f["type"] == "sources"]
            return frames if sources and sources[0]["sources"] and frames[-1]["type"] == "done" else None

        frames = await eventually(answered, timeout_s=90, what="the document answers the question")
        query_id = frames[0]["query_id"]
    async with connect(system.ws_url_for(user="mallory")) as other:  # not theirs to rate
        refused = await _rate(other, query_id, 1, "great")
    async with connect(system.ws_url) as ws:  # the asker, on a new connection
        ack = await _rate(ws, query_id, -1, "the carry-over deadline is missing")
    assert refused["type"] == "error" and refused["code"] == "unknown_query"
    assert ack == {"type": "feedback_ack", "id": "f1", "query_id": query_id}

    es = elastic_client(settings)
    index = summary_index(settings.elastic_index_prefix)

    async def rated() -> dict[str, Any] | None:
        try:
            doc = await es.get(index=index, id=query_id)
        except ApiError as exc:  # not there yet, or its new index's shard not yet allocated
            if exc.meta.status in (404, 503):
                return None
            raise
        source: dict[str, Any] = doc["_source"]
        return source if (source.get("aichat") or {}).get("feedback") else None

    try:
        summary = await eventually(rated, timeout_s=30, what="the rating in the summary")
    finally:
        await es.close()
    a = summary["aichat"]
    assert a["feedback"]["rating"] == -1
    assert a["feedback"]["comment"] == "the carry-over deadline is missing"
    assert a["feedback"]["rated_at"]
    assert (a["experiment"], a["variant"], a["user"], a["outcome"]) == (
        EXPERIMENT, expected.variant, "e2e", "done")
    assert a["top_k"] == (expected.top_k or 5)

    async def reported() -> dict[str, Any] | None:  # the term query sees the summary once refreshed
        report = build_report(EXPERIMENT, await fetch_summaries(settings, EXPERIMENT))
        return report if report["variants"] and report["variants"][0]["feedback"]["k"] else None

    report = await eventually(reported, timeout_s=15, what="the experiment's report")
    (row,) = report["variants"]
    assert row["variant"] == expected.variant and row["answered"] >= 1
    assert (row["feedback"]["k"], row["positive"]["k"], row["positive"]["n"]) == (1, 0, 1)
    for key, value in system.env.items():
        monkeypatch.setenv(key, value)
    args = build_parser().parse_args(["experiments", "report", EXPERIMENT])
    assert await asyncio.to_thread(args.func, args) == 0  # the command runs its own event loop
    out = capsys.readouterr().out
    assert f"experiment {EXPERIMENT}" in out and expected.variant in out and "(0/1)" in out

    down = f'aichat_gateway_feedback_total{{experiment="{EXPERIMENT}",rating="down",variant="{expected.variant}"}}'
    assert await metric(system.gateway_ops_url, down) == 1
    assert await metric(system.gateway_ops_url, "aichat_gateway_frames_refused_total{code=\"unknown_query\"}") == 1
