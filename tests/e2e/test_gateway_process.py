"""One real gateway process on the real Kafka, with no answerer running: the JWT
matrix refused at the handshake, oversize frames, the deadline error when nobody
answers, and SIGTERM with a query in flight."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jwt
import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from websockets.exceptions import ConnectionClosed, InvalidStatus

from infra.kafka.topics import ensure_topics
from query_gateway.client import ask, connect_gateway
from schemas.codec import decode
from schemas.events import QueryEvent
from tests.support import RunningSystem, cleaned_up, isolated_env


@pytest.fixture(scope="module")
async def gateway(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningSystem]:
    tmp = tmp_path_factory.mktemp("gateway")
    env = isolated_env(uuid.uuid4().hex[:10], tmp)
    env.update({
        "AICHAT_ANSWER_DEADLINE_MS": "1500",
        "AICHAT_ANSWER_GRACE_MS": "500",
        "AICHAT_SHUTDOWN_TIMEOUT_S": "1",
        "AICHAT_GATEWAY_ALLOWED_ORIGINS": '["https://chat.example.com"]',
    })
    sys_ = RunningSystem(env=env, logs=tmp / "logs")
    await ensure_topics(sys_.settings())  # no worker creates them here
    async with cleaned_up(sys_):
        sys_.start()  # the gateway only: nobody answers
        yield sys_


def claims(**changes: Any) -> dict[str, Any]:
    body = {"sub": "e2e", "tenant": "default", "aud": "aichat", "iss": "aichat",
            "exp": int(time.time()) + 300}
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


def signed(system: RunningSystem, **changes: Any) -> str:
    secret = open(system.env["AICHAT_JWT_SECRET_FILE"], encoding="utf-8").read().strip()
    return jwt.encode(claims(**changes), secret, algorithm="HS256")


def alg_none() -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(orjson.dumps(data)).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims())}."


async def test_the_jwt_matrix_is_refused_at_the_handshake(gateway: RunningSystem) -> None:
    url = gateway.base_ws_url
    cases: dict[str, tuple[str | None, str | None, int, str]] = {
        "no token": (None, None, 401, "missing_token"),
        "expired": (signed(gateway, exp=int(time.time()) - 120), None, 401, "token_expired"),
        "alg none": (alg_none(), None, 401, "invalid_token"),
        "wrong aud": (signed(gateway, aud="billing"), None, 401, "invalid_token"),
        "wrong iss": (signed(gateway, iss="https://idp.evil"), None, 401, "invalid_token"),
        "foreign origin": (signed(gateway), "https://evil.example", 403, "origin_not_allowed"),
    }
    for case, (token, origin, status, code) in cases.items():
        with pytest.raises(InvalidStatus) as refused:
            async with connect_gateway(url, token=token, origin=origin):
                pass
        response = refused.value.response
        body = orjson.loads(response.body)
        assert (response.status_code, body["code"]) == (status, code), case
        assert body["error_id"], case
    # the same token from an allowed origin and from a non-browser client is accepted
    for origin in ("https://chat.example.com", None):
        async with connect_gateway(url, token=signed(gateway), origin=origin) as ws:
            await ws.send('{"type":"ping"}')
            assert orjson.loads(await ws.recv()) == {"type": "pong"}
    log = (gateway.logs / "gateway.log").read_text(encoding="utf-8")
    assert "eyJ" not in log  # no JWT (base64 of '{"') anywhere in the log


async def test_metrics_and_check_details_only_on_the_operator_port(gateway: RunningSystem) -> None:
    public = f"http://127.0.0.1:{gateway.env['AICHAT_GATEWAY_PORT']}"
    async with httpx.AsyncClient(timeout=10) as http:
        assert (await http.get(f"{public}/metrics")).status_code == 404
        ready = await http.get(f"{public}/health/ready")
        assert set(ready.json()) == {"status"}  # ready or not, nothing about what is behind
        metrics = await http.get(f"{gateway.gateway_ops_url}/metrics")
        assert metrics.status_code == 200 and "aichat_gateway_open_connections" in metrics.text
        detailed = (await http.get(f"{gateway.gateway_ops_url}/health/ready")).json()
        assert {"kafka", "weaviate", "elasticsearch", "model"} <= set(detailed["checks"])
        assert detailed["status"] == ready.json()["status"]


async def test_a_flood_of_refused_frames_logs_a_line_not_megabytes(gateway: RunningSystem) -> None:
    log = gateway.logs / "gateway.log"
    before = log.stat().st_size
    async with connect_gateway(gateway.ws_url) as ws:
        for _ in range(200):  # each 16 KB: 3.2 MB of log text before the refusal log
            await ws.send(orjson.dumps({"type": "x" * 16_000}).decode())
            frame = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
            assert frame["code"] == "unknown_type" and len(frame["message"]) < 200
    assert log.stat().st_size - before < 10_000


async def test_oversize_frames(gateway: RunningSystem) -> None:
    async with connect_gateway(gateway.ws_url) as ws:
        await ws.send(orjson.dumps({"type": "query", "id": "big", "text": "x" * 20_000}).decode())
        frame = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
        assert (frame["type"], frame["code"]) == ("error", "frame_too_large")
        await ws.send('{"type":"ping"}')
        assert orjson.loads(await ws.recv()) == {"type": "pong"}  # still open
        await ws.send("x" * (2 * 1024 * 1024))
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


async def test_no_answerer_means_a_deadline_error_not_silence(gateway: RunningSystem) -> None:
    started = time.monotonic()
    frames = [f async for f in ask(gateway.ws_url, "Is anyone there?", idle_timeout_s=10)]
    elapsed = time.monotonic() - started
    assert [f["type"] for f in frames] == ["ack", "error"]
    assert frames[-1]["code"] == "deadline_exceeded" and frames[-1]["error_id"]
    assert 1.5 <= elapsed < 5
    settings = gateway.settings()
    consumer = AIOKafkaConsumer(settings.topic("queries"), bootstrap_servers=settings.kafka_bootstrap,
                                auto_offset_reset="earliest", enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        batch = await consumer.getmany(timeout_ms=5_000)
        events = [decode(QueryEvent, r.value) for rs in batch.values() for r in rs]
    finally:
        await consumer.stop()
    (event,) = [e for e in events if e.query_id == frames[0]["query_id"]]
    assert (event.user, event.tenant, event.text) == ("e2e", "default", "Is anyone there?")
    assert 1.0 < (event.deadline - event.produced_at).total_seconds() <= 1.6


async def test_sigterm_fails_the_query_in_flight_and_closes_1012(gateway: RunningSystem) -> None:
    child = next(c for c in gateway.children if c.name == "gateway")
    assert child.proc is not None
    frames: list[dict[str, Any]] = []
    async with connect_gateway(gateway.ws_url) as ws:
        await ws.send(orjson.dumps({"type": "query", "id": "late", "text": "anyone?"}).decode())
        frames.append(orjson.loads(await ws.recv()))
        os.killpg(child.proc.pid, signal.SIGTERM)
        with pytest.raises(ConnectionClosed) as closed:
            async with asyncio.timeout(15):
                while True:
                    frames.append(orjson.loads(await ws.recv()))
    # uvicorn re-raises the signal once its graceful shutdown is complete
    assert await asyncio.to_thread(child.proc.wait, 15) in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in (gateway.logs / "gateway.log").read_text("utf-8")
    assert frames[0]["type"] == "ack"
    # within the 1 s drain the deadline (1.5 s) has not passed: the query fails as shutting_down
    assert [(f["id"], f["code"]) for f in frames[1:]] == [("late", "shutting_down")]
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
