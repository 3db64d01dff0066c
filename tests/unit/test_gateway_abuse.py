"""Abuse limits of the gateway: caps on open websockets (per user, per client address,
in total), the idle timeout, refusals that cannot flood the log, and the operator
listener that keeps /metrics and the detailed readiness off the public port."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import socket
from typing import Any

import httpx
import orjson
import pytest
from starlette.testclient import TestClient, WebSocketDenialResponse
from websockets.exceptions import ConnectionClosed

from query_gateway.admission import ConnectionCaps, client_key
from query_gateway.app import REFUSED_UPGRADE, create_app
from query_gateway.client import connect_gateway
from query_gateway.config import GatewaySettings
from query_gateway.errors import GatewayBusy, GatewayError, TooManyConnections
from query_gateway.refusals import RefusalLog, excerpt
from query_gateway.server import RedactTokens, serve_async
from streams.config import load_settings
from streams.errors import ConfigError
from tests.unit.test_gateway_app import (
    FakeTransport,
    assert_still_open,
    operator_get,
    query,
    receive_until_final,
    serving,
    settings,
    stop,
)
from tests.unit.test_gateway_limits import sample

REFUSALS_LOGGER = "query_gateway.refusals"


def refusal_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == REFUSALS_LOGGER]


# -- connection caps -----------------------------------------------------------------------------


def test_a_user_at_the_connection_cap_is_refused_429_until_one_closes() -> None:
    app = create_app(settings(max_connections_per_user=2), transport=FakeTransport(), checks={})
    before = sample("aichat_gateway_connections_refused_total", {"limit": "user"})
    with TestClient(app) as client:
        with client.websocket_connect("/ws?user=alice") as first:
            with client.websocket_connect("/ws?user=alice"):
                with pytest.raises(WebSocketDenialResponse) as denied:
                    with client.websocket_connect("/ws?user=alice"):
                        pass
                with client.websocket_connect("/ws?user=bob") as bob:  # another user has room
                    assert_still_open(bob)
            # one of alice's closed: her slot is free again
            with client.websocket_connect("/ws?user=alice") as again:
                assert_still_open(again)
            assert_still_open(first)
    assert denied.value.status_code == 429
    body = denied.value.json()
    assert (body["error"], body["code"]) == ("too_many_requests", "too_many_connections")
    assert "the limit is 2" in body["message"] and body["error_id"]
    assert sample("aichat_gateway_connections_refused_total", {"limit": "user"}) == before + 1


def test_one_client_address_at_its_cap_is_refused_whatever_the_user() -> None:
    app = create_app(settings(max_connections_per_client=2), transport=FakeTransport(), checks={})
    before = sample("aichat_gateway_connections_refused_total", {"limit": "client"})
    with TestClient(app) as client:
        with client.websocket_connect("/ws?user=a"), client.websocket_connect("/ws?user=b"):
            with pytest.raises(WebSocketDenialResponse) as denied:
                with client.websocket_connect("/ws?user=c"):
                    pass
    assert denied.value.status_code == 429
    assert denied.value.json()["code"] == "too_many_connections"
    assert "your address" in denied.value.json()["message"]
    assert sample("aichat_gateway_connections_refused_total", {"limit": "client"}) == before + 1


def test_a_full_replica_answers_503_gateway_busy() -> None:
    app = create_app(settings(max_connections=2), transport=FakeTransport(), checks={})
    before = sample("aichat_gateway_connections_refused_total", {"limit": "total"})
    with TestClient(app) as client:
        with client.websocket_connect("/ws?user=a"), client.websocket_connect("/ws?user=b"):
            with pytest.raises(WebSocketDenialResponse) as denied:
                with client.websocket_connect("/ws?user=c"):
                    pass
        with client.websocket_connect("/ws?user=c") as ws:  # room again once they closed
            ws.send_json(query())
            assert receive_until_final(ws)[-1]["type"] == "done"
    assert denied.value.status_code == 503
    assert (denied.value.json()["error"], denied.value.json()["code"]) == ("unavailable", "gateway_busy")
    assert sample("aichat_gateway_connections_refused_total", {"limit": "total"}) == before + 1


def test_caps_are_checked_and_taken_at_once_and_released_once() -> None:
    caps = ConnectionCaps(total=3, per_user=2, per_client=3)
    a1, a2 = caps.admit("t/alice", "10.0.0.1"), caps.admit("t/alice", "10.0.0.2")
    with pytest.raises(TooManyConnections) as refused:
        caps.admit("t/alice", "10.0.0.3")
    assert refused.value.reason == "user" and not isinstance(refused.value, GatewayBusy)
    b = caps.admit("t/bob", "10.0.0.1")
    with pytest.raises(GatewayBusy) as busy:
        caps.admit("t/carol", "10.0.0.9")
    assert busy.value.reason == "total" and busy.value.status == 503 and busy.value.retriable
    a1.release()
    a1.release()  # idempotent: no slot is given back twice
    assert caps.open == 2
    caps.admit("t/alice", "10.0.0.3")
    with pytest.raises(GatewayBusy):
        caps.admit("t/dave", "10.0.0.4")
    for slot in (a2, b):
        slot.release()
    assert caps.open == 1
    assert set(caps._users) == {"t/alice"} and set(caps._clients) == {"10.0.0.3"}  # no leftovers


def test_client_address_is_ipv4_or_an_ipv6_64() -> None:
    assert client_key("203.0.113.9") == "203.0.113.9"
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:bbbb::2") == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("::ffff:198.51.100.7") == "198.51.100.7"
    assert client_key(None) == "unknown"
    assert client_key("x" * 500) == "x" * 64


# -- logs of refusals ----------------------------------------------------------------------------


def test_a_flood_of_refused_frames_logs_one_short_line(caplog: pytest.LogCaptureFixture) -> None:
    """200 frames with a 16 KB type used to log 3.2 MB; now one line of at most a prefix."""
    transport = FakeTransport()
    s = settings(max_frame_bytes=20_000, refusal_log_interval_s=3600)
    huge = "x" * 16_000
    suppressed_before = sample("aichat_gateway_refusal_logs_suppressed_total")
    refused_before = sample("aichat_gateway_frames_refused_total", {"code": "unknown_type"})
    with caplog.at_level(logging.DEBUG), TestClient(create_app(s, transport=transport, checks={})) as client:
        with client.websocket_connect("/ws") as ws:
            frames = []
            for _ in range(200):
                ws.send_text(orjson.dumps({"type": huge}).decode())
                frames.append(ws.receive_json())
            ws.send_text('{"type":"forged\\n2025-01-01 CRITICAL all data deleted"}')
            forged = ws.receive_json()
            ws.send_text("{oops")  # another reason: a line of its own
            ws.receive_json()
            assert_still_open(ws)
    assert {(f["type"], f["code"]) for f in frames} == {("error", "unknown_type")}
    assert all(len(f["message"]) < 200 for f in frames)  # the frame echoes a prefix only
    assert "+15936 chars" in frames[0]["message"]
    lines = refusal_lines(caplog)
    assert len(lines) == 2, lines
    assert "unknown_type" in lines[0] and "bad_json" in lines[1]
    assert all(len(line) < 400 for line in lines)
    assert sum(len(r.getMessage()) for r in caplog.records) < 5_000
    assert sample("aichat_gateway_refusal_logs_suppressed_total") == suppressed_before + 200
    assert sample("aichat_gateway_frames_refused_total", {"code": "unknown_type"}) == refused_before + 201
    # control characters in what the client sent are escaped, never a second log line
    assert "\n" not in forged["message"] and "\\x0a2025-01-01" in forged["message"]


def test_refused_upgrades_are_logged_once_per_client_and_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = create_app(settings(refusal_log_interval_s=3600), transport=FakeTransport(), checks={})
    evil = "https://" + "e" * 5_000 + ".example"
    with caplog.at_level(logging.INFO), TestClient(app) as client:
        for _ in range(50):
            with pytest.raises(WebSocketDenialResponse) as denied:
                with client.websocket_connect("/ws", headers={"origin": evil}):
                    pass
            assert denied.value.status_code == 403
    (line,) = refusal_lines(caplog)
    assert "origin_not_allowed" in line and "testclient" in line
    assert len(line) < 400 and "(+" in line  # a prefix of the origin, and how much was cut
    assert len(denied.value.json()["message"]) < 200


def test_refusal_log_says_how_many_it_left_out() -> None:
    now = [0.0]
    log = logging.getLogger("test.refusals")
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    handler = Keep()
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        refusals = RefusalLog(10.0, log=log, max_lines=3, clock=lambda: now[0])
        assert refusals.log("1.2.3.4", "frame/bad_json", "refused %s", "a")
        assert not any(refusals.log("1.2.3.4", "frame/bad_json", "refused %s", "b") for _ in range(5))
        assert refusals.log("1.2.3.4", "frame/unknown_type", "refused %s", "c")  # another reason
        assert refusals.log("5.6.7.8", "frame/bad_json", "refused %s", "d")  # another client
        assert not refusals.log("9.9.9.9", "frame/bad_json", "refused %s", "e")  # 3 lines: spent
        now[0] = 10.0  # the next interval
        assert refusals.log("1.2.3.4", "frame/bad_json", "refused %s", "f")
        assert refusals.log("9.9.9.9", "frame/bad_json", "refused %s", "g")
    finally:
        log.removeHandler(handler)
    assert records == [
        "refused a", "refused c", "refused d",
        "refused f (5 more like it suppressed since the last line)",
        "refused g (1 more like it suppressed since the last line)",
    ]


def test_refusal_log_remembers_a_bounded_number_of_clients() -> None:
    refusals = RefusalLog(60.0, max_lines=10**9, max_keys=100, clock=lambda: 0.0)
    for n in range(1_000):
        refusals.log(f"10.0.{n // 256}.{n % 256}", "frame/bad_json", "refused")
    assert len(refusals._windows) == 100


def test_excerpt_escapes_control_characters_and_says_what_was_cut() -> None:
    assert excerpt("plain") == "'plain'"
    assert excerpt("a\nb\x1b[2J\u202etxt") == "'a\\x0ab\\x1b[2J\\u202etxt'"
    assert excerpt("it's a \\x41") == "'it\\'s a \\\\x41'"  # no look-alike of an escape
    assert excerpt("x" * 100) == "'" + "x" * 64 + "'…(+36 chars)"
    assert excerpt({"k": 1}) == "{'k': 1}"
    assert excerpt("bare\ttext", quote=False) == "bare\\x09text"


def test_uvicorn_lines_of_refused_upgrades_are_dropped_and_long_urls_cut() -> None:
    def record() -> logging.LogRecord:
        return logging.LogRecord(
            "uvicorn.error", logging.INFO, __file__, 1, '%s - "WebSocket %s" %d',
            ("1.2.3.4:5", "/ws?pad=" + "p" * 10_000 + "&token=secret.jwt.sig", 403), None,
        )

    def refused() -> bool:
        REFUSED_UPGRADE.set(True)
        return RedactTokens().filter(record())

    assert contextvars.copy_context().run(refused) is False  # the app logged it, rate-limited
    accepted = record()
    assert RedactTokens().filter(accepted)
    message = accepted.getMessage()
    assert len(message) < 400 and "secret" not in message and "(+" in message


def test_the_servers_own_refusals_are_logged_once_per_interval() -> None:
    """A flood of malformed upgrades: uvicorn says "connection rejected" for each."""
    now = [0.0]
    redaction = RedactTokens()
    redaction.throttle = RefusalLog(10.0, clock=lambda: now[0])

    def rejected() -> logging.LogRecord:
        return logging.LogRecord("uvicorn.error", logging.INFO, __file__, 1,
                                 "connection rejected (%d %s)", (400, "Bad Request"), None)

    assert redaction.filter(rejected())
    assert not any(redaction.filter(rejected()) for _ in range(99))
    now[0] = 10.0
    later = rejected()
    assert redaction.filter(later)
    assert later.getMessage() == (
        "connection rejected (400 Bad Request) (99 more like it suppressed since the last line)"
    )


# -- idle timeout ----------------------------------------------------------------------------------


async def test_an_idle_connection_is_told_and_closed_with_4410() -> None:
    s = settings(gateway_port=0, ws_idle_timeout_s=0.3)
    server, task, url = await serving(s, FakeTransport())
    before = sample("aichat_gateway_sessions_ended_total", {"reason": "idle"})
    try:
        async with connect_gateway(url) as ws:
            frame = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 10)
    finally:
        await stop(server, task)
    assert (frame["type"], frame["id"], frame["code"]) == ("error", None, "idle_timeout")
    assert "no frame for 0.3s" in frame["message"]
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4410, "idle_timeout")
    assert sample("aichat_gateway_sessions_ended_total", {"reason": "idle"}) == before + 1


async def test_a_connection_waiting_for_its_answer_is_not_idle() -> None:
    transport = FakeTransport(answer_delay_s=1.0)  # longer than the idle timeout
    s = settings(gateway_port=0, ws_idle_timeout_s=0.3, answer_deadline_ms=10_000)
    server, task, url = await serving(s, transport)
    frames: list[dict[str, Any]] = []
    try:
        async with connect_gateway(url) as ws:
            await ws.send(orjson.dumps(query()).decode())
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    frames.append(orjson.loads(await asyncio.wait_for(ws.recv(), 10)))
    finally:
        await stop(server, task)
    # the whole answer arrived; only then, with nothing in flight, did idleness end it
    assert [f["type"] for f in frames] == ["ack", "sources", "token", "token", "done", "error"]
    assert frames[-1]["code"] == "idle_timeout"
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4410
    assert transport.cancelled == []  # nothing was cut short


async def test_frames_keep_a_connection_from_being_idle() -> None:
    s = settings(gateway_port=0, ws_idle_timeout_s=1.0)
    server, task, url = await serving(s, FakeTransport())
    replies = []
    try:
        async with connect_gateway(url) as ws:
            for _ in range(20):  # 2 s of pings, 0.1 s apart: twice the idle timeout
                await ws.send('{"type":"ping"}')
                replies.append(orjson.loads(await asyncio.wait_for(ws.recv(), 10)))
                await asyncio.sleep(0.1)
    finally:
        await stop(server, task)
    assert replies == [{"type": "pong"}] * 20


# -- the operator listener ---------------------------------------------------------------------------


async def test_metrics_and_details_are_on_the_operator_listener_only() -> None:
    transport = FakeTransport()
    s = settings(gateway_port=0)
    server, task, _ = await serving(s, transport, checks={"kafka": transport.check})
    public = f"http://127.0.0.1:{server.port}"
    operator = f"http://127.0.0.1:{server.operator_port}"
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            assert server.operator_port != server.port
            assert (await http.get(f"{public}/metrics")).status_code == 404
            ready = await http.get(f"{public}/health/ready")
            assert (ready.status_code, ready.json()) == (200, {"status": "ready"})
            assert (await http.get(f"{public}/health/live")).status_code == 200

            metrics = await http.get(f"{operator}/metrics")
            assert metrics.status_code == 200 and "aichat_gateway_open_connections" in metrics.text
            detailed = (await http.get(f"{operator}/health/ready")).json()
            assert detailed["status"] == "ready" and detailed["checks"]["kafka"]["detail"] == "fake broker"
            assert (await http.get(f"{operator}/")).status_code == 404  # no chat page there
            transport.healthy = False
            failing = await http.get(f"{operator}/health/ready")
            assert failing.status_code == 503
            assert failing.json()["checks"]["kafka"]["detail"] == "broker unreachable"
        with pytest.raises(Exception):  # noqa: B017 (any refusal: there is no websocket there)
            async with connect_gateway(f"ws://127.0.0.1:{server.operator_port}/ws"):
                pass
    finally:
        await stop(server, task)


async def test_an_operator_port_in_use_stops_the_start_naming_the_setting() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        transport = FakeTransport()
        s = settings(gateway_port=0, gateway_ops_port=port)
        with pytest.raises(GatewayError, match="AICHAT_GATEWAY_OPS_PORT"):
            await asyncio.wait_for(serve_async(s, create_app(s, transport=transport, checks={})), 20)
    assert not transport.started  # failed before the app opened any client


def test_the_operator_port_is_next_to_the_gateway_port_unless_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert settings(gateway_port=9000).ops_port == 9001
    assert settings(gateway_port=9000, gateway_ops_port=9100).ops_port == 9100
    assert settings(gateway_port=0).ops_port == 0  # tests: any free port for both
    assert settings().gateway_ops_host == "127.0.0.1"
    monkeypatch.setenv("AICHAT_GATEWAY_PORT", "9000")
    monkeypatch.setenv("AICHAT_GATEWAY_OPS_PORT", "9000")
    with pytest.raises(ConfigError, match="AICHAT_GATEWAY_OPS_PORT: .*differ"):
        load_settings(GatewaySettings)
    monkeypatch.setenv("AICHAT_GATEWAY_PORT", "65535")
    monkeypatch.delenv("AICHAT_GATEWAY_OPS_PORT")
    with pytest.raises(ConfigError, match="AICHAT_GATEWAY_OPS_PORT"):
        load_settings(GatewaySettings)
    monkeypatch.setenv("AICHAT_GATEWAY_PORT", "8000")
    monkeypatch.setenv("AICHAT_GATEWAY_TRUSTED_PROXIES", '["10.0.0.0/8", "proxy.local"]')
    with pytest.raises(ConfigError, match="AICHAT_GATEWAY_TRUSTED_PROXIES"):
        load_settings(GatewaySettings)


def test_public_readiness_shares_one_run_and_reuses_it() -> None:
    calls = []

    async def counted() -> str:
        calls.append(1)
        return "ok"

    cached = create_app(settings(readiness_cache_s=60), transport=FakeTransport(), checks={"kafka": counted})
    with TestClient(cached) as client:
        assert [client.get("/health/ready").status_code for _ in range(5)] == [200] * 5
        assert len(calls) == 1  # five public probes, one run of the checks
        operator_get(client, "/health/ready")
        operator_get(client, "/health/ready")
        assert len(calls) == 3  # the operator's readiness always runs them
        client.app.state.hub.draining = True  # type: ignore[attr-defined]
        assert client.get("/health/ready").status_code == 503
    calls.clear()
    uncached = create_app(settings(readiness_cache_s=0), transport=FakeTransport(), checks={"kafka": counted})
    with TestClient(uncached) as client:
        client.get("/health/ready")
        client.get("/health/ready")
    assert len(calls) == 2


def test_production_defaults_of_the_limits() -> None:
    s = GatewaySettings(gateway_auth="disabled")
    assert (s.max_connections, s.max_connections_per_user, s.max_connections_per_client) == (5_000, 8, 64)
    assert (s.ws_idle_timeout_s, s.refusal_log_interval_s, s.readiness_cache_s) == (300.0, 10.0, 1.0)
    assert (s.gateway_ops_host, s.ops_port, s.gateway_trusted_proxies) == ("127.0.0.1", 8001, ["127.0.0.1"])
