"""Helpers for integration and e2e tests: isolated names, child processes, clean-up.

Each test system gets its own topic prefix, Weaviate collection and Elasticsearch
index prefix, so tests never see each other's data on the shared local stack.
Its gateway requires JWTs signed with a per-system secret; ``RunningSystem.ws_url``
carries a valid ``?token=`` so ``ask(system.ws_url, …)`` just works.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from infra.cleanup import drop_isolated_state
from infra.up import Child, wait_ready
from query_gateway.dev_jwt import mint
from streams.config import WorkerSettings

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def isolated_env(unique: str, tmp: Path) -> dict[str, str]:
    worker_port, shipper_port, gateway_port = free_port(), free_port(), free_port()
    gateway_ops_port, ingest_port = free_port(), free_port()
    secret_file = tmp / "jwt.secret"
    secret_file.parent.mkdir(parents=True, exist_ok=True)
    secret_file.write_text(secrets.token_urlsafe(48), encoding="utf-8")
    return {
        "AICHAT_GATEWAY_AUTH": "jwt",
        "AICHAT_JWT_ALGORITHM": "HS256",
        "AICHAT_JWT_SECRET_FILE": str(secret_file),
        # tests poll with many queries; the rate-limit tests set their own budget
        "AICHAT_RATE_LIMIT_PER_MINUTE": "60000",
        "AICHAT_RATE_LIMIT_BURST": "1000",
        "AICHAT_TOPIC_PREFIX": f"t{unique}.",
        "AICHAT_TOPIC_PARTITIONS": "2",
        "AICHAT_WEAVIATE_COLLECTION": f"T{unique}",
        "AICHAT_ELASTIC_INDEX_PREFIX": f"t{unique}",
        "AICHAT_WORKER_WEB_PORT": str(worker_port),
        "AICHAT_SHIPPER_WEB_PORT": str(shipper_port),
        "AICHAT_INGEST_WEB_PORT": str(ingest_port),  # beside an answer worker on the worker port
        "AICHAT_GATEWAY_PORT": str(gateway_port),
        "AICHAT_GATEWAY_OPS_PORT": str(gateway_ops_port),  # /metrics, detailed readiness
        "AICHAT_WORKER_HEALTH_URLS": f'["http://127.0.0.1:{worker_port}/health/ready"]',
        "AICHAT_WORKER_DATA_DIR": str(tmp / "worker"),
        "AICHAT_LOG_FORMAT": "json",
    }


@dataclass
class RunningSystem:
    """Workers and gateway started as real processes against the real stack."""

    env: dict[str, str]
    logs: Path
    children: list[Child] = field(default_factory=list)

    def settings(self) -> WorkerSettings:
        return WorkerSettings(**{k[len("AICHAT_"):].lower(): v for k, v in self.env.items()
                                 if k[len("AICHAT_"):].lower() in WorkerSettings.model_fields})

    def token(self, user: str = "e2e", tenant: str = "default", ttl_s: float = 7200.0) -> str:
        """A JWT the system's gateways accept (HS256, the test's own secret)."""
        secret = Path(self.env["AICHAT_JWT_SECRET_FILE"]).read_text(encoding="utf-8").strip()
        return mint(secret, user=user, tenant=tenant, ttl_s=ttl_s)

    @property
    def base_ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.env['AICHAT_GATEWAY_PORT']}/ws"

    @property
    def gateway_ops_url(self) -> str:
        """The gateway's operator listener: ``/metrics`` and the detailed ``/health/ready``."""
        return f"http://127.0.0.1:{self.env['AICHAT_GATEWAY_OPS_PORT']}"

    def ws_url_for(self, user: str = "e2e", tenant: str = "default") -> str:
        return f"{self.base_ws_url}?token={self.token(user, tenant)}"

    @property
    def ws_url(self) -> str:
        """The gateway's websocket with a valid token for user ``e2e`` of tenant ``default``."""
        return self.ws_url_for()

    def start(self, *roles: str, gateway: bool = True) -> None:
        cli = [sys.executable, "-m", "streams.cli"]
        ports = {"pipeline": self.env["AICHAT_WORKER_WEB_PORT"], "answer": self.env["AICHAT_WORKER_WEB_PORT"],
                 "ingest": self.env["AICHAT_INGEST_WEB_PORT"], "shipper": self.env["AICHAT_SHIPPER_WEB_PORT"]}
        for role in roles:
            port = ports[role]
            self.children.append(Child(role, [*cli, "worker", "--role", role, "--web-port", port],
                                       f"http://127.0.0.1:{port}/health/ready", self.logs / f"{role}.log"))
        if gateway:
            port = self.env["AICHAT_GATEWAY_PORT"]
            self.children.append(Child("gateway", [*cli, "gateway"],
                                       f"http://127.0.0.1:{port}/health/live", self.logs / "gateway.log"))
        env = {**os.environ, **self.env}
        for child in self.children:
            child.start(env=env)
        for child in self.children:
            wait_ready(child, timeout_s=180)

    def stop(self) -> None:
        for child in reversed(self.children):
            child.stop()

    def log_tails(self) -> str:
        from infra.proc import tail

        return "\n".join(f"--- {c.name} ---\n" + "\n".join(tail(c.log_path, 30)) for c in self.children)


@asynccontextmanager
async def cleaned_up(system: RunningSystem) -> AsyncIterator[RunningSystem]:
    """Yield ``system``; on a failure print its processes' log tails; always stop it and
    drop its topics, collections and indices."""
    try:
        yield system
    except BaseException:
        print(system.log_tails())
        raise
    finally:
        system.stop()
        await drop_isolated_state(system.settings())


async def metric(url: str, name: str) -> float:
    """The samples of ``url``/metrics whose line starts with ``name`` (a metric name, with the
    start of its labels if wanted), summed: e.g. a gateway replica's operator listener."""
    async with httpx.AsyncClient(timeout=5) as http:
        text = (await http.get(f"{url}/metrics")).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and not line.startswith("#"))


async def eventually(probe: Callable[[], Awaitable[T | None]], *, timeout_s: float, what: str) -> T:
    """Poll ``probe`` until it returns something truthy; fail with ``what`` after the timeout."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what} (last: {last!r})")
