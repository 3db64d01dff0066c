"""Limits and session ends of the gateway on an in-process transport: per-user rate
limits, literal query/filter strings, cancellation events, slow clients, ping
timeouts, oversize frames, TLS, shutdown, token redaction in logs."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import logging
import os
import socket
import ssl
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from prometheus_client import REGISTRY
from starlette.testclient import TestClient
from websockets.exceptions import ConnectionClosed

from query_gateway.app import create_app
from query_gateway.client import ask, connect_gateway
from query_gateway.ratelimit import LocalRateLimiter
from query_gateway.server import RedactTokens
from schemas.codec import decode, encode
from schemas.events import AnswerEvent, QueryEvent
from tests.unit.test_gateway_app import (
    FakeTransport,
    assert_still_open,
    query,
    receive_until_final,
    serving,
    settings,
    stop,
)


def sample(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


# -- rate limits -----------------------------------------------------------------------------


def test_token_bucket_refills_at_the_configured_rate() -> None:
    bucket = LocalRateLimiter(per_minute=60, burst=3)  # one query per second
    assert [bucket.take("u", 100.0) for _ in range(3)] == [None, None, None]
    assert bucket.take("u", 100.0) == pytest.approx(1.0)
    assert bucket.take("u", 100.5) == pytest.approx(0.5)  # a refused try costs nothing
    assert bucket.take("u", 101.0) is None
    assert bucket.take("other", 101.0) is None  # per user
    assert bucket.take("u", 1000.0) is None  # full again, never above the burst
    assert [bucket.take("u", 1000.0) for _ in range(3)][-1] == pytest.approx(1.0)


def test_bucket_map_is_bounded() -> None:
    bucket = LocalRateLimiter(per_minute=60, burst=1, max_keys=100)
    for i in range(1_000):
        bucket.take(f"user{i}", 0.0)
    assert len(bucket._buckets) == 100


def test_rate_limit_exceeded_is_an_error_frame_with_retry_after() -> None:
    transport = FakeTransport()
    s = settings(rate_limit_per_minute=6, rate_limit_burst=2, max_inflight_per_connection=8)
    before = sample("aichat_gateway_rate_limited_total", {"limit": "user_queries"})
    with TestClient(create_app(s, transport=transport, checks={})) as client:
        with client.websocket_connect("/ws?user=alice") as ws:
            for n in range(2):
                ws.send_json(query(id=f"ok{n}"))
                assert receive_until_final(ws)[-1]["type"] == "done"
            ws.send_json(query(id="third"))
            frame = ws.receive_json()
            assert (frame["type"], frame["id"], frame["code"]) == ("error", "third", "rate_limited")
            assert 9.0 <= frame["retry_after"] <= 10.0  # 6 per minute: one every 10 s
            assert "6 per minute" in frame["message"] and frame["error_id"]
            assert_still_open(ws)
        # the budget is the user's, not the connection's; other users have their own
        with client.websocket_connect("/ws?user=alice") as ws:
            ws.send_json(query(id="again"))
            assert ws.receive_json()["code"] == "rate_limited"
        with client.websocket_connect("/ws?user=bob") as ws:
            ws.send_json(query(id="b"))
            assert receive_until_final(ws)[-1]["type"] == "done"
    assert len(transport.published) == 3
    assert sample("aichat_gateway_rate_limited_total", {"limit": "user_queries"}) == before + 2


def test_too_many_inflight_counts_as_a_connection_limit() -> None:
    transport = FakeTransport(script=lambda event: [])
    before = sample("aichat_gateway_rate_limited_total", {"limit": "connection_inflight"})
    with TestClient(create_app(settings(), transport=transport, checks={})) as client:
        with client.websocket_connect("/ws") as ws:
            for n in range(3):
                ws.send_json(query(id=f"q{n}"))
                ws.receive_json()
    assert sample("aichat_gateway_rate_limited_total", {"limit": "connection_inflight"}) == before + 1


class BrokenLimiter(LocalRateLimiter):
    async def acquire(self, key: str) -> float | None:
        from query_gateway.ratelimit import RateLimiterUnavailable

        raise RateLimiterUnavailable("redis down")


def test_a_failing_rate_limiter_lets_queries_through_and_is_counted() -> None:
    transport = FakeTransport()
    before = sample("aichat_gateway_rate_limiter_errors_total")
    app = create_app(settings(), transport=transport, checks={}, limiter=BrokenLimiter(60, 1))
    with TestClient(app) as client, client.websocket_connect("/ws") as ws:
        for n in range(3):
            ws.send_json(query(id=f"q{n}"))
            assert receive_until_final(ws)[-1]["type"] == "done"
    assert sample("aichat_gateway_rate_limiter_errors_total") == before + 3


# -- literal text ----------------------------------------------------------------------------

TRICKY = ['\\"', '"', "}", "{", "*:*", "category:secret", "' OR '1'='1", "a\\u0000b", "\u0000",
          "where: {path: [\"tenant\"]}", "한국어 질문", "<script>alert(1)</script>"]


def test_query_and_filter_strings_pass_through_as_literal_values() -> None:
    transport = FakeTransport()
    s = settings(max_query_chars=200, rate_limit_burst=100)
    with TestClient(create_app(s, transport=transport, checks={})) as client:
        with client.websocket_connect("/ws") as ws:
            for n, text in enumerate(TRICKY):
                ws.send_json(query(text=f"x {text}", id=f"q{n}", filters={"category": text, "k": text}))
                assert receive_until_final(ws)[-1]["type"] == "done"
    assert [e.text for e in transport.published] == [f"x {t}" for t in TRICKY]
    for event, text in zip(transport.published, TRICKY, strict=True):
        assert event.filters == {"category": text, "k": text}
        assert event.tenant == "default"  # a filter can never name another tenant
        again = decode(QueryEvent, encode(event))  # what the answerer reads back
        assert again.filters == {"category": text, "k": text} and again.text == f"x {text}"


@pytest.mark.parametrize(
    "filters",
    [{"tenant": "other"}, {"bad key": "v"}, {"a}": "v"}, {"k": {"$ne": 1}}, {"k": ["a", "b"]}],
)
def test_filters_that_are_not_plain_scalar_equality_are_refused(filters: dict[str, Any]) -> None:
    transport = FakeTransport()
    with TestClient(create_app(settings(), transport=transport, checks={})) as client:
        with client.websocket_connect("/ws") as ws:
            ws.send_json(query(filters=filters))
            frame = ws.receive_json()
    if "tenant" in filters:  # a legal key: passes as metadata equality, never as the tenant
        assert frame["type"] == "ack"
        assert transport.published[0].tenant == "default"
        assert transport.published[0].filters == {"tenant": "other"}
    else:
        assert (frame["type"], frame["code"]) == ("error", "invalid_query")
        assert transport.published == []


# -- cancellation events ----------------------------------------------------------------------


async def wait_for_cancellations(transport: FakeTransport, n: int) -> None:
    async with asyncio.timeout(5):
        while len(transport.cancelled) < n:  # noqa: ASYNC110 (published in the background)
            await asyncio.sleep(0.01)


async def test_cancel_and_disconnect_publish_query_cancelled() -> None:
    transport = FakeTransport(script=lambda event: [])
    server, task, url = await serving(settings(gateway_port=0, answer_deadline_ms=10_000), transport)
    try:
        async with connect_gateway(f"{url}?user=carol") as ws:
            await ws.send(orjson.dumps(query(id="a")).decode())
            ack = orjson.loads(await ws.recv())
            await ws.send(orjson.dumps({"type": "cancel", "id": "a"}).decode())
            frame = orjson.loads(await ws.recv())
            assert (frame["id"], frame["code"]) == ("a", "cancelled")
            await wait_for_cancellations(transport, 1)
            await ws.send(orjson.dumps(query(id="b")).decode())
            ack_b = orjson.loads(await ws.recv())
        # the client left with "b" in flight
        await wait_for_cancellations(transport, 2)
    finally:
        await stop(server, task)
    first, second = transport.cancelled
    assert (first.query_id, first.reason, first.user, first.tenant) == (
        ack["query_id"], "client", "carol", "default")
    assert (second.query_id, second.reason) == (ack_b["query_id"], "disconnected")
    assert first.trace_id == first.query_id and first.type == "query_cancelled"
    assert first.session_id == transport.published[0].session_id


def test_kafka_cancellation_record_has_the_query_key_and_type_header() -> None:
    from schemas import events

    event = events.QueryCancelled(query_id="q-1", trace_id="q-1", reason="client")
    body = orjson.loads(encode(event))
    assert body["type"] == "query_cancelled" and body["query_id"] == "q-1"
    assert body["schema_version"] == 1 and body["reason"] == "client"
    assert events.cancellation_headers() == [("aichat-event-type", b"query_cancelled")]


def test_cancellations_can_be_switched_off() -> None:
    transport = FakeTransport(script=lambda event: [])
    app = create_app(settings(publish_cancellations=False), transport=transport, checks={})
    with TestClient(app) as client, client.websocket_connect("/ws") as ws:
        ws.send_json(query())
        ws.receive_json()
        ws.send_json({"type": "cancel", "id": "q1"})
        assert ws.receive_json()["code"] == "cancelled"
    assert transport.cancelled == []


# -- slow clients, pings, oversize frames -----------------------------------------------------


async def test_a_client_that_does_not_read_is_disconnected_not_buffered() -> None:
    big = os.urandom(8_192).hex()  # does not shrink under permessage-deflate (4 KiB window)

    def flood(event: QueryEvent) -> list[AnswerEvent]:
        return [AnswerEvent(query_id=event.query_id, seq=i, kind="token", delta=big) for i in range(4_000)]

    transport = FakeTransport(script=flood)
    s = settings(gateway_port=0, answer_deadline_ms=30_000, outgoing_queue_size=8, slow_client_timeout_s=0.5)
    server, task, url = await serving(s, transport)
    before = sample("aichat_gateway_sessions_ended_total", {"reason": "slow_client"})
    hub = server.config.app.state.hub
    try:
        # a client that stops reading: tiny receive buffer, no reads after the ack
        async with connect_gateway(url, max_queue=1, close_timeout=0.5) as ws:
            await ws.send(orjson.dumps(query()).decode())
            async with asyncio.timeout(20):
                while sample("aichat_gateway_sessions_ended_total", {"reason": "slow_client"}) == before:  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
                while hub.connections:  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
        await wait_for_cancellations(transport, 1)
    finally:
        await stop(server, task)
    assert transport.cancelled[0].reason == "slow_client"


def raw_upgrade(port: int, path: str = "/ws") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
         f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(4096)
    assert response.startswith(b"HTTP/1.1 101"), response
    return sock


async def test_a_client_that_does_not_answer_pings_is_closed() -> None:
    s = settings(gateway_port=0, ws_ping_interval_s=0.2, ws_ping_timeout_s=0.3)
    server, task, _ = await serving(s, FakeTransport())
    try:
        sock = await asyncio.to_thread(raw_upgrade, server.port)  # never answers a ping
        received = b""

        def read_until_closed() -> None:
            nonlocal received
            sock.settimeout(5)
            while chunk := sock.recv(4096):
                received += chunk

        started = time.monotonic()
        await asyncio.to_thread(read_until_closed)
        sock.close()
    finally:
        await stop(server, task)
    assert time.monotonic() - started < 3
    assert received[:1] == b"\x89"  # it got a ping (opcode 9) first …
    assert b"\x88" in received  # … then a close frame (1011 keepalive ping timeout)


async def test_a_frame_over_the_hard_limit_closes_with_1009() -> None:
    server, task, url = await serving(settings(gateway_port=0), FakeTransport())
    try:
        async with connect_gateway(url) as ws:
            await ws.send(orjson.dumps(query(text="x" * (2 * 1024 * 1024))).decode())
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 5)
    finally:
        await stop(server, task)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


# -- TLS ---------------------------------------------------------------------------------------


def self_signed(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                       x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return cert_path, key_path


async def test_wss_with_a_configured_certificate(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    s = settings(gateway_port=0, gateway_tls_certfile=cert, gateway_tls_keyfile=key)
    server, task, url = await serving(s, FakeTransport())
    try:
        assert url.startswith("wss://")
        trusted = ssl.create_default_context(cafile=str(cert))
        frames = [f async for f in ask(url, "what is kafka?", ssl=trusted)]
        assert frames[-1]["type"] == "done"
        with pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED|certificate verify"):
            _ = [f async for f in ask(url, "hi")]  # not trusted by default
    finally:
        await stop(server, task)


def test_a_key_without_a_certificate_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="AICHAT_GATEWAY_TLS_CERTFILE"):
        settings(gateway_tls_keyfile="/tmp/key.pem")


# -- shutdown ----------------------------------------------------------------------------------


async def test_shutdown_fails_queries_still_running_after_the_drain() -> None:
    transport = FakeTransport(script=lambda event: [])  # never answered
    s = settings(gateway_port=0, answer_deadline_ms=30_000, shutdown_timeout_s=0.5)
    server, task, url = await serving(s, transport)
    frames: list[dict[str, Any]] = []
    try:
        async with connect_gateway(url) as ws:
            await ws.send(orjson.dumps(query(id="a")).decode())
            frames.append(orjson.loads(await ws.recv()))
            server.should_exit = True
            with pytest.raises(ConnectionClosed) as closed:
                async with asyncio.timeout(10):
                    while True:
                        frames.append(orjson.loads(await ws.recv()))
        await asyncio.wait_for(task, 10)
    finally:
        await stop(server, task)
    assert [(f["type"], f.get("code")) for f in frames] == [("ack", None), ("error", "shutting_down")]
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
    assert transport.cancelled[0].reason == "shutdown"
    assert transport.stopped


# -- logs --------------------------------------------------------------------------------------


def test_tokens_in_urls_are_redacted_from_server_logs() -> None:
    record = logging.LogRecord(
        "uvicorn.error", logging.INFO, __file__, 1, '%s - "WebSocket %s" [accepted]',
        ("127.0.0.1:5", "/ws?user=a&token=eyJhbGciOi.eyJzdWIi.sig&x=1"), None,
    )
    assert RedactTokens().filter(record)
    assert record.getMessage() == '127.0.0.1:5 - "WebSocket /ws?user=a&token=[redacted]&x=1" [accepted]'



def test_the_stacks_redis_is_loopback_only_and_keeps_nothing(tmp_path: Path) -> None:
    from infra.config import StackSettings
    from infra.redis.launcher import redis_port, render_config

    conf = render_config(6390, tmp_path)
    assert "bind 127.0.0.1\n" in conf and "port 6390\n" in conf and "protected-mode yes" in conf
    assert 'save ""' in conf and "appendonly no" in conf and "maxmemory-policy volatile-ttl" in conf
    assert redis_port(StackSettings()) == 6379
