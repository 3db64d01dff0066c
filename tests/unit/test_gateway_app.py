"""The gateway app over its seams: an in-process transport instead of Kafka,
``httpx.MockTransport`` instead of Weaviate/Elasticsearch/workers. No patching."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import ConsumerRecord
from starlette.requests import Request
from starlette.responses import Response
from starlette.testclient import TestClient, WebSocketTestSession
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from query_gateway.app import create_app
from query_gateway.client import ask
from query_gateway.config import GatewaySettings
from query_gateway.errors import KafkaUnavailable
from query_gateway.health import Check
from query_gateway.routing import AnswerQueue, AnswerRouter
from query_gateway.server import build_server
from schemas.codec import encode
from schemas.events import AnswerError, AnswerEvent, QueryCancelled, QueryEvent, Source

Script = Callable[[QueryEvent], list[AnswerEvent]]


def full_answer(event: QueryEvent) -> list[AnswerEvent]:
    qid = event.query_id
    return [
        AnswerEvent(
            query_id=qid,
            seq=0,
            kind="sources",
            sources=[Source(doc_id="d1", chunk_id="c1", title="Kafka", score=0.9)],
        ),
        AnswerEvent(query_id=qid, seq=1, kind="token", delta="Kafka "),
        AnswerEvent(query_id=qid, seq=2, kind="token", delta="is a log."),
        AnswerEvent(
            query_id=qid, seq=3, kind="done", timings_ms={"retrieve": 5.0, "generate": 9.0}
        ),
    ]


def silence(event: QueryEvent) -> list[AnswerEvent]:
    return []


class FakeTransport:
    """In-process stand-in for Kafka: ``publish`` feeds the scripted answer events."""

    def __init__(
        self,
        script: Script = full_answer,
        *,
        publish_error: str | None = None,
        answer_delay_s: float = 0.0,
    ) -> None:
        self.script = script
        self.answer_delay_s = answer_delay_s
        self.publish_error = publish_error
        self.healthy = True
        self.published: list[QueryEvent] = []
        self.cancelled: list[QueryCancelled] = []
        self.queues: dict[str, AnswerQueue] = {}
        self.started = self.stopped = False
        self.registered_before_publish: list[bool] = []

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    def register(self, query_id: str) -> AnswerQueue:
        queue: AnswerQueue = asyncio.Queue()
        self.queues[query_id] = queue
        return queue

    def unregister(self, query_id: str) -> None:
        self.queues.pop(query_id, None)

    async def publish(self, event: QueryEvent) -> None:
        self.registered_before_publish.append(event.query_id in self.queues)
        if self.publish_error:
            raise KafkaUnavailable(self.publish_error)
        self.published.append(event)
        if self.answer_delay_s:
            asyncio.get_running_loop().call_later(self.answer_delay_s, self._feed, event)
        else:
            self._feed(event)

    def _feed(self, event: QueryEvent) -> None:
        queue = self.queues.get(event.query_id)
        if queue is None:  # cancelled before the answer came
            return
        for answer in self.script(event):
            queue.put_nowait(answer)

    async def cancel(self, event: QueryCancelled) -> None:
        self.cancelled.append(event)

    async def check(self) -> str:
        if not self.healthy:
            raise KafkaUnavailable("broker unreachable")
        return "fake broker"


def settings(**overrides: Any) -> GatewaySettings:
    values: dict[str, Any] = {
        "gateway_auth": "disabled",  # the protocol tests; test_gateway_auth.py has the JWT ones
        "topic_prefix": "t1.",
        "gateway_reply_partition": 3,
        "answer_deadline_ms": 300,
        "answer_grace_ms": 0,
        "max_frame_bytes": 2048,
        "max_query_chars": 100,
        "max_inflight_per_connection": 2,
        "worker_health_urls": ["http://w1:6066/health/ready", "http://w2:6066/health/ready"],
    }
    values.update(overrides)
    return GatewaySettings(**values)


@pytest.fixture
def transport() -> FakeTransport:
    return FakeTransport()


@pytest.fixture
def client(transport: FakeTransport) -> Iterator[TestClient]:
    app = create_app(settings(), transport=transport, checks={"kafka": transport.check})
    with TestClient(app) as test_client:
        yield test_client


def query(text: str = "what is kafka?", id: str = "q1", **extra: Any) -> dict[str, Any]:
    return {"type": "query", "id": id, "text": text, **extra}


def receive_until_final(ws: WebSocketTestSession) -> list[dict[str, Any]]:
    frames = []
    while True:
        frame = ws.receive_json()
        frames.append(frame)
        if frame["type"] in ("done", "error"):
            return frames


def assert_still_open(ws: WebSocketTestSession) -> None:
    ws.send_json({"type": "ping"})
    assert ws.receive_json() == {"type": "pong"}


def operator_get(client: TestClient, path: str) -> httpx.Response:
    """GET ``path`` of the operator app (served on its own listener in production), on the
    loop the public app's lifespan runs on: the checks use its clients."""

    async def get() -> httpx.Response:
        transport = httpx.ASGITransport(app=client.app.state.operator)  # type: ignore[attr-defined]
        async with httpx.AsyncClient(transport=transport, base_url="http://operator") as http:
            return await http.get(path)

    assert client.portal is not None, "inside `with TestClient(app)` only"
    return client.portal.call(get)


# -- websocket ---------------------------------------------------------------------------------


def test_query_streams_ack_sources_tokens_done(
    client: TestClient, transport: FakeTransport
) -> None:
    with client.websocket_connect("/ws?user=alice") as ws:
        ws.send_json(query(top_k=3, filters={"lang": "en"}))
        frames = receive_until_final(ws)

    assert [f["type"] for f in frames] == ["ack", "sources", "token", "token", "done"]
    assert all(f["id"] == "q1" for f in frames)
    (event,) = transport.published
    assert frames[0]["query_id"] == event.query_id
    assert frames[1]["sources"][0]["doc_id"] == "d1"
    assert "".join(f["delta"] for f in frames if f["type"] == "token") == "Kafka is a log."
    assert frames[-1]["timings_ms"]["retrieve"] == 5.0
    assert frames[-1]["timings_ms"]["gateway_total"] >= 0
    # the event the answerer gets
    assert event.text == "what is kafka?" and event.top_k == 3 and event.filters == {"lang": "en"}
    assert (event.user, event.tenant) == ("alice", "default")
    assert event.reply_to.topic == "t1.answers" and event.reply_to.partition == 3
    assert event.trace_id == event.query_id and event.session_id
    assert event.deadline > datetime.now(UTC)
    assert transport.registered_before_publish == [True]
    assert transport.queues == {}  # unregistered once done


def test_user_defaults_to_anonymous(client: TestClient, transport: FakeTransport) -> None:
    with client.websocket_connect("/ws") as ws:
        ws.send_json(query())
        receive_until_final(ws)
    assert transport.published[0].user == "anonymous"


def test_deadline_exceeded_when_no_final_event(transport: FakeTransport) -> None:
    transport.script = lambda event: full_answer(event)[:2]  # sources and one token, then nothing
    app = create_app(settings(answer_deadline_ms=200), transport=transport, checks={})
    with TestClient(app) as client, client.websocket_connect("/ws") as ws:
        ws.send_json(query())
        frames = receive_until_final(ws)
        assert_still_open(ws)
    assert [f["type"] for f in frames] == ["ack", "sources", "token", "error"]
    assert frames[-1]["code"] == "deadline_exceeded"
    assert frames[-1]["id"] == "q1" and frames[-1]["error_id"]
    assert transport.queues == {}


def test_answerer_error_is_forwarded(client: TestClient, transport: FakeTransport) -> None:
    transport.script = lambda event: [
        AnswerEvent(
            query_id=event.query_id,
            seq=0,
            kind="error",
            error=AnswerError(code="retrieval_failed", message="weaviate down", error_id="e1"),
        )
    ]
    with client.websocket_connect("/ws") as ws:
        ws.send_json(query())
        frames = receive_until_final(ws)
    assert frames[-1] == {
        "type": "error",
        "id": "q1",
        "code": "retrieval_failed",
        "message": "weaviate down",
        "error_id": "e1",
    }


def test_duplicate_answer_events_are_sent_once(
    client: TestClient, transport: FakeTransport
) -> None:
    transport.script = lambda event: [
        full_answer(event)[1],
        full_answer(event)[1],  # redelivered (at-least-once)
        full_answer(event)[3],
    ]
    with client.websocket_connect("/ws") as ws:
        ws.send_json(query())
        frames = receive_until_final(ws)
    assert [f["type"] for f in frames] == ["ack", "token", "done"]


def test_an_answerer_replay_equal_to_what_was_sent_continues_the_answer(
    client: TestClient, transport: FakeTransport
) -> None:
    # the answerer died after seq 1 and its successor answers the query again from seq 0
    transport.script = lambda event: [*full_answer(event)[:2], *full_answer(event)]
    with client.websocket_connect("/ws") as ws:
        ws.send_json(query())
        frames = receive_until_final(ws)
    assert [f["type"] for f in frames] == ["ack", "sources", "token", "token", "done"]
    assert "".join(f["delta"] for f in frames if f["type"] == "token") == "Kafka is a log."


def test_an_answerer_replay_that_differs_ends_the_query_with_an_error(
    client: TestClient, transport: FakeTransport
) -> None:
    # a sampling model answers differently the second time: never splice the two runs
    def script(event: QueryEvent) -> list[AnswerEvent]:
        first = full_answer(event)
        other = AnswerEvent(query_id=event.query_id, seq=1, kind="token", delta="Logs are ")
        return [*first[:2], first[0], other, *first[2:]]

    transport.script = script
    with client.websocket_connect("/ws") as ws:
        ws.send_json(query())
        frames = receive_until_final(ws)
        assert_still_open(ws)
    assert [f["type"] for f in frames] == ["ack", "sources", "token", "error"]
    assert frames[-1]["code"] == "answer_interrupted" and "ask again" in frames[-1]["message"]


def test_kafka_unavailable_is_an_error_frame(transport: FakeTransport) -> None:
    transport.publish_error = "could not publish the query to 't1.queries': timeout"
    app = create_app(settings(), transport=transport, checks={})
    with TestClient(app) as client, client.websocket_connect("/ws") as ws:
        ws.send_json(query())
        (frame,) = receive_until_final(ws)
        assert_still_open(ws)
    assert frame["type"] == "error" and frame["id"] == "q1"
    assert frame["code"] == "kafka_unavailable"
    assert "t1.queries" in frame["message"]


@pytest.mark.parametrize(
    ("send", "code", "id"),
    [
        ("{oops", "bad_json", None),
        ('{"type":"subscribe","id":"q5"}', "unknown_type", "q5"),
        ('{"type":"query","id":"q1","text":"' + "x" * 3000 + '"}', "frame_too_large", None),
        ('{"type":"query","id":"q1","text":"' + "x" * 101 + '"}', "query_too_long", "q1"),
        ('{"type":"query","id":"q1","text":"t","top_k":99}', "invalid_query", "q1"),
        ('{"type":"cancel","id":"nope"}', "unknown_id", "nope"),
    ],
)
def test_refusals_keep_the_connection_open(
    client: TestClient, send: str, code: str, id: str | None
) -> None:
    with client.websocket_connect("/ws") as ws:
        ws.send_text(send)
        frame = ws.receive_json()
        assert frame["type"] == "error"
        assert (frame["code"], frame["id"]) == (code, id)
        assert frame["message"] and frame["error_id"]
        assert_still_open(ws)
        ws.send_json(query(id="after"))  # and still answers queries
        assert receive_until_final(ws)[-1]["type"] == "done"


def test_binary_frame_is_refused(client: TestClient) -> None:
    with client.websocket_connect("/ws") as ws:
        ws.send_bytes(b'{"type":"ping"}')
        frame = ws.receive_json()
        assert frame["code"] == "bad_json" and "binary" in frame["message"]
        assert_still_open(ws)


def test_too_many_inflight_and_duplicate_ids(client: TestClient, transport: FakeTransport) -> None:
    transport.script = silence
    with client.websocket_connect("/ws") as ws:
        ws.send_json(query(id="a"))
        assert ws.receive_json()["type"] == "ack"
        ws.send_json(query(id="a"))
        assert ws.receive_json()["code"] == "duplicate_id"
        ws.send_json(query(id="b"))
        assert ws.receive_json()["type"] == "ack"
        ws.send_json(query(id="c"))
        refused = ws.receive_json()
        assert (refused["code"], refused["id"]) == ("too_many_inflight", "c")
        assert "limit is 2" in refused["message"]
        assert_still_open(ws)
    assert len(transport.published) == 2


def test_concurrent_queries_on_one_connection(client: TestClient, transport: FakeTransport) -> None:
    with client.websocket_connect("/ws") as ws:
        ws.send_json(query(id="a"))
        ws.send_json(query(id="b"))
        frames = [ws.receive_json() for _ in range(10)]
    for client_id in ("a", "b"):
        mine = [f["type"] for f in frames if f["id"] == client_id]
        assert mine == ["ack", "sources", "token", "token", "done"]


def test_cancel_stops_forwarding(client: TestClient, transport: FakeTransport) -> None:
    transport.script = silence
    with client.websocket_connect("/ws") as ws:
        ws.send_json(query())
        ack = ws.receive_json()
        ws.send_json({"type": "cancel", "id": "q1"})
        frame = ws.receive_json()
        assert (frame["type"], frame["id"], frame["code"]) == ("error", "q1", "cancelled")
        assert ack["query_id"] not in transport.queues
        assert_still_open(ws)  # no deadline error follows the cancel
        ws.send_json(query())  # the id is free again
        assert ws.receive_json()["type"] == "ack"


# -- HTTP --------------------------------------------------------------------------------------


def test_live(client: TestClient) -> None:
    response = client.get("/health/live")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def probes(seen: list[str], *, worker2: int = 200, es_status: str = "green") -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        if request.url.path == "/v1/.well-known/ready":
            return httpx.Response(200)
        if request.url.path == "/_cluster/health":
            return httpx.Response(200, json={"status": es_status})
        if request.url.host == "w1":
            return httpx.Response(200, json={"status": "ready"})
        if request.url.host == "w2":
            return httpx.Response(worker2)
        return httpx.Response(404)

    return httpx.MockTransport(handler)


def test_ready_when_every_check_passes(transport: FakeTransport) -> None:
    seen: list[str] = []
    app = create_app(settings(), transport=transport, http_transport=probes(seen))
    with TestClient(app) as client:
        response = operator_get(client, "/health/ready")
        probed = sorted(seen)
        public = client.get("/health/ready")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["status"] == "ready"
    assert (public.status_code, public.json()) == (200, {"status": "ready"})
    assert set(body["checks"]) == {"kafka", "weaviate", "elasticsearch", "model"}
    assert all(check["ok"] for check in body["checks"].values())
    assert probed == [
        "http://127.0.0.1:8080/v1/.well-known/ready",
        "http://127.0.0.1:9200/_cluster/health",
        "http://w1:6066/health/ready",
        "http://w2:6066/health/ready",
    ]


@pytest.mark.parametrize(
    ("failing", "worker2", "es_status", "kafka_healthy", "words"),
    [
        ("model", 503, "green", True, "w2:6066"),
        ("elasticsearch", 200, "red", True, "'red'"),
        ("kafka", 200, "green", False, "broker unreachable"),
    ],
)
def test_not_ready_names_the_failing_check(
    transport: FakeTransport,
    failing: str,
    worker2: int,
    es_status: str,
    kafka_healthy: bool,
    words: str,
) -> None:
    transport.healthy = kafka_healthy
    app = create_app(
        settings(),
        transport=transport,
        http_transport=probes([], worker2=worker2, es_status=es_status),
    )
    with TestClient(app) as client:
        response = operator_get(client, "/health/ready")
        public = client.get("/health/ready")
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert [name for name, check in checks.items() if not check["ok"]] == [failing]
    assert words in checks[failing]["detail"]
    # the public listener says not ready, and nothing about what is behind it
    assert (public.status_code, public.json()) == (503, {"status": "not_ready"})
    assert words not in public.text and failing not in public.text


def test_ready_check_that_hangs_times_out(transport: FakeTransport) -> None:
    async def hangs() -> str:
        await asyncio.sleep(30)
        return "never"

    app = create_app(
        settings(readiness_timeout_s=0.1), transport=transport, checks={"weaviate": hangs}
    )
    with TestClient(app) as client:
        response = operator_get(client, "/health/ready")
    assert response.status_code == 503
    check = response.json()["checks"]["weaviate"]
    assert (check["ok"], check["detail"]) == (False, "no answer within 0.1s")
    assert check["ms"] < 5_000


def test_unhandled_error_returns_only_an_error_id(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    async def boom(request: Request) -> Response:
        raise RuntimeError("secret connection string postgres://u:p@h")

    client.app.add_route("/boom", boom)  # type: ignore[attr-defined]
    with caplog.at_level(logging.ERROR, logger="query_gateway.app"):
        response = client.get("/boom")
    assert response.status_code == 500
    body = response.json()
    assert set(body) == {"error", "error_id"} and body["error"] == "internal"
    assert "secret" not in response.text
    (record,) = [r for r in caplog.records if r.name == "query_gateway.app"]
    assert body["error_id"] in record.getMessage() and record.exc_info is not None


def test_metrics_on_the_operator_app_and_the_page(client: TestClient) -> None:
    with client.websocket_connect("/ws") as ws:
        ws.send_text("{oops")
        ws.receive_json()
    metrics = operator_get(client, "/metrics")
    assert metrics.status_code == 200
    assert "aichat_gateway_open_connections" in metrics.text
    assert 'aichat_gateway_frames_refused_total{code="bad_json"}' in metrics.text
    assert client.get("/metrics").status_code == 404  # never on the public listener
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "/ws" in page.text


def test_lifespan_starts_and_stops_the_transport(transport: FakeTransport) -> None:
    with TestClient(create_app(settings(), transport=transport, checks={})):
        assert transport.started and not transport.stopped
    assert transport.stopped


# -- a real server and the client --------------------------------------------------------------


async def serving(
    s: GatewaySettings, transport: FakeTransport, checks: Mapping[str, Check] | None = None
) -> tuple[Any, asyncio.Task[None], str]:
    """The app served by uvicorn on ``s`` (``gateway_port=0``: a free port), once it listens,
    with the websocket URL (``wss://`` when ``s`` has TLS); end it with :func:`stop`."""
    server = build_server(s, create_app(s, transport=transport, checks=checks or {}))
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(10):
        while not server.started:  # noqa: ASYNC110 (uvicorn offers no event)
            await asyncio.sleep(0.01)
    scheme = "wss" if s.tls else "ws"
    return server, task, f"{scheme}://127.0.0.1:{server.port}/ws"


async def stop(server: Any, task: asyncio.Task[None]) -> None:
    server.should_exit = True
    await asyncio.wait_for(task, 20)


async def test_ask_over_a_real_server() -> None:
    transport = FakeTransport()
    server, task, url = await serving(settings(gateway_port=0), transport)
    try:
        frames = [frame async for frame in ask(url, "what is kafka?", top_k=2)]
    finally:
        await stop(server, task)
    assert [f["type"] for f in frames] == ["ack", "sources", "token", "token", "done"]
    assert transport.published[0].top_k == 2
    assert transport.stopped


async def test_shutdown_drains_inflight_queries_and_refuses_new_ones() -> None:
    transport = FakeTransport(answer_delay_s=1.0)
    server, task, url = await serving(settings(gateway_port=0, answer_deadline_ms=5_000), transport)
    frames: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(10):
            async with connect(url) as ws:
                await ws.send(orjson.dumps(query(id="a")).decode())
                assert orjson.loads(await ws.recv())["type"] == "ack"
                server.should_exit = True  # as on SIGTERM
                await asyncio.sleep(0.4)  # the answer to "a" is due at 1.0 s
                await ws.send(orjson.dumps(query(id="b")).decode())
                while not frames or frames[-1]["type"] != "done":
                    frames.append(orjson.loads(await ws.recv()))
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.recv()
            await task
    finally:
        await stop(server, task)
    assert (frames[0]["id"], frames[0]["code"]) == ("b", "shutting_down")
    assert [f["type"] for f in frames[1:]] == ["sources", "token", "token", "done"]
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
    assert transport.stopped


# -- routing rules (no broker) -----------------------------------------------------------------


def record(value: bytes, offset: int = 0) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        topic="t1.answers",
        partition=3,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=b"k",
        value=value,
        checksum=None,
        serialized_key_size=1,
        serialized_value_size=len(value),
        headers=(),
    )


async def test_router_drops_unknown_and_invalid_events_and_fails_slow_queries() -> None:
    router = AnswerRouter(
        bootstrap_servers="unused:9092", topic="t1.answers", partition=3, queue_size=3
    )
    queue = router.register("q")
    router.dispatch(record(b"not json"))
    router.dispatch(record(encode(AnswerEvent(query_id="someone-else", seq=0, kind="done"))))
    assert queue.empty()

    tokens = [AnswerEvent(query_id="q", seq=i, kind="token", delta=str(i)) for i in range(5)]
    for event in tokens:
        router.dispatch(record(encode(event)))
    got = [queue.get_nowait() for _ in range(queue.qsize())]
    # the client fell behind: it gets what was buffered, then a final slow_consumer error
    assert [e.kind for e in got] == ["token", "token", "error"]
    assert got[-1].error is not None and got[-1].error.code == "slow_consumer"
    assert router.registered == 0  # later events of q are dropped, not queued
    router.register("x")
    with pytest.raises(ValueError, match="already registered"):
        router.register("x")
