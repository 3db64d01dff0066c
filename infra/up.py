"""``aichat up``: the whole system on this machine, until Ctrl-C.

1. ``aichat stack up``: Kafka, Elasticsearch, Weaviate (provisioned on first use).
2. Three workers and the gateway, as child processes whose logs go to
   ``<stack_dir>/app/<name>.log``; each must report ready. Answering and ingesting
   are separate workers (roles ``answer`` and ``ingest``, two consumer groups), so a
   question never queues behind a bulk ingest (the ingest worker can also lower its
   own CPU priority: ``AICHAT_INGEST_NICE``, default 0). ``shipper`` ships every topic to
   Elasticsearch. The first start after the one-``pipeline``-worker layout hands the
   old group's offsets to the two new groups (infra/groups.py): nothing is replayed.
3. The bundled sample corpus is ingested when the collection is empty, and
   ``up`` waits until it is searchable.
4. It prints the chat page (with a 12-hour ``?token=``), the websocket URL and an
   ``aichat ask`` example, then supervises: a child that dies ends ``up`` with its log tail. Ctrl-C
   stops the children (SIGTERM, then SIGKILL after a deadline) and the stack
   ``up`` started.

Authentication stays on: unless a key is configured, ``up`` keeps a random HS256
secret in the gateway's ``AICHAT_GATEWAY_LOCAL_SECRET_FILE`` (by default in the stack's
``<stack_dir>/gateway/``) and hands it to the gateway as ``AICHAT_JWT_SECRET_FILE``, its
place as ``AICHAT_GATEWAY_LOCAL_SECRET_FILE``; ``aichat ask`` and ``aichat token`` mint from it.
Redis joins the stack when ``AICHAT_REDIS_URL`` points at this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from aiokafka.errors import KafkaError

from infra import stack
from infra.config import StackSettings
from infra.groups import adopt_offsets
from infra.proc import tail, terminate_group
from ingest import SAMPLE_DIR
from ingest.readers import read_document
from ingest.sdk import DocumentPublisher
from query_gateway.config import GatewaySettings
from query_gateway.dev_jwt import ensure_secret, local_secret_path, mint
from streams.config import WorkerSettings, load_settings
from streams.vectorstore import WeaviateStore

READY_TIMEOUT_S = 240.0
STOP_DEADLINE_S = 30.0


@dataclass
class Child:
    name: str
    argv: list[str]
    health_url: str
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self, env: Mapping[str, str] | None = None) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(  # noqa: S603 - our own entry point
                self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, env=None if env is None else dict(env),
            )

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.alive and self.proc is not None:
            terminate_group(self.proc.pid, STOP_DEADLINE_S)
            self.proc.wait(timeout=5)


#: the worker roles ``up`` runs, with their web port's offset from AICHAT_WORKER_WEB_PORT;
#: the answer worker keeps the base port, which the gateway's readiness checks by default
WORKER_ROLES = (("answer", 0), ("ingest", 2), ("shipper", 1))


def worker_child(role: str, port: int, logs: Path) -> Child:
    return Child(role, [sys.executable, "-m", "streams.cli", "worker", "--role", role, "--web-port", str(port)],
                 f"http://127.0.0.1:{port}/health/ready", logs / f"{role}.log")


def children(worker: WorkerSettings, gateway: GatewaySettings, logs: Path) -> list[Child]:
    cli = [sys.executable, "-m", "streams.cli"]
    return [
        *(worker_child(role, worker.worker_web_port + offset, logs) for role, offset in WORKER_ROLES),
        Child("gateway", [*cli, "gateway"],
              f"{'https' if gateway.tls else 'http'}://{gateway.gateway_host}:{gateway.gateway_port}"
              "/health/live", logs / "gateway.log"),
    ]


def wait_ready(child: Child, timeout_s: float = READY_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not child.alive:
            raise RuntimeError(f"{child.name} exited during start-up; see {child.log_path}")
        try:
            # liveness of our own child on loopback: a self-signed certificate is fine here
            if httpx.get(child.health_url, timeout=2, verify=False).status_code == 200:  # nosec B501
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise RuntimeError(f"{child.name} not ready within {timeout_s:.0f}s; see {child.log_path}")


async def ingest_sample_if_empty(worker: WorkerSettings, timeout_s: float = 180.0) -> int:
    """Publish the sample corpus when the collection is empty; wait until it is searchable."""
    store = WeaviateStore(worker)
    await store.start()
    try:
        if await store.count() > 0:
            return 0
        docs = [
            read_document(path, doc_id=f"sample/{path.name}", version=1)
            for path in sorted(SAMPLE_DIR.glob("*.md"))
        ]
        async with DocumentPublisher(worker) as publisher:
            for doc in docs:
                await publisher.publish(doc)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if await store.count() >= len(docs):
                return len(docs)
            await asyncio.sleep(0.5)
        raise RuntimeError(f"sample corpus not searchable within {timeout_s:.0f}s")
    finally:
        await store.stop()


def gateway_auth_env(gateway: GatewaySettings, stack_settings: StackSettings) -> dict[str, str]:
    """``AICHAT_JWT_SECRET_FILE`` of a local secret when auth is on and no key is configured:
    the gateway's ``AICHAT_GATEWAY_LOCAL_SECRET_FILE`` if set, else the one in the stack's
    directory, handed down as that setting too."""
    if gateway.gateway_auth != "jwt" or gateway.jwt_algorithm != "HS256" or gateway.jwt_secret:
        return {}
    path = gateway.gateway_local_secret_file or local_secret_path(stack_settings.stack_dir)
    ensure_secret(path)
    return {"AICHAT_JWT_SECRET_FILE": str(path), "AICHAT_GATEWAY_LOCAL_SECRET_FILE": str(path)}


def chat_token(gateway: GatewaySettings, env: dict[str, str]) -> str | None:
    """A 12-hour token for the printed chat URL (None: auth is off or not ours to mint)."""
    if gateway.gateway_auth != "jwt" or gateway.jwt_algorithm != "HS256":
        return None
    if gateway.jwt_secret is not None:
        secret = gateway.jwt_secret.get_secret_value()
    elif "AICHAT_JWT_SECRET_FILE" in env:
        secret = Path(env["AICHAT_JWT_SECRET_FILE"]).read_text(encoding="utf-8").strip()
    else:
        return None
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "local"
    return mint(secret, user=user or "local", ttl_s=12 * 3600, audience=gateway.jwt_audience,
                issuer=gateway.jwt_issuer)


def _redis_is_local(gateway: GatewaySettings) -> bool:
    if gateway.redis_url is None:
        return False
    return urlsplit(gateway.redis_url.get_secret_value()).hostname in {"127.0.0.1", "localhost"}


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def run_up(args: argparse.Namespace) -> int:
    stack_settings = load_settings(StackSettings)
    worker = load_settings(WorkerSettings)
    gateway = load_settings(GatewaySettings)
    services = [*stack.SERVICES, *(["redis"] if _redis_is_local(gateway) else [])]
    auth_env = gateway_auth_env(gateway, stack_settings)
    print("1/4 bringing up Kafka, Elasticsearch and Weaviate (first run: downloads and builds) …")
    statuses = stack.up(stack_settings, services=services)
    for status in statuses:
        print(f"    {status.name:<14} pid {status.pid}  ports {status.ports}  {status.health}")
    # on the way out stop only what this run started: a stack that was already running
    # (scripts/test's, an operator's) is left as it was found
    started_here = [s.name for s in statuses if s.started]
    procs = children(worker, gateway, stack_settings.stack_dir / "app")
    # Ctrl-C and SIGTERM both stop everything cleanly, at any step, even when SIGINT
    # was ignored by whoever started us (a background job of a script)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        print("2/4 starting workers and gateway (loading the model) …")
        try:
            for group, n in asyncio.run(adopt_offsets(worker)).items():
                print(f"    {group:<14} takes over the pipeline group's offsets ({n} partitions)")
        except (KafkaError, RuntimeError, OSError, TimeoutError) as exc:  # not fatal: a replay instead
            print(f"    could not hand the pipeline group's offsets over ({exc}); the new groups "
                  "start from the beginning of their topics", file=sys.stderr)
        for child in procs:
            child.start(env={**os.environ, **auth_env} if child.name == "gateway" else None)
        for child in procs:
            wait_ready(child)
            print(f"    {child.name:<14} ready  (log: {child.log_path})")
        if not args.no_sample:
            print("3/4 sample corpus …")
            n = asyncio.run(ingest_sample_if_empty(worker))
            print(f"    ingested {n} sample documents" if n else "    index not empty: nothing to ingest")
        base = f"{gateway.gateway_host}:{gateway.gateway_port}"
        http, ws = ("https", "wss") if gateway.tls else ("http", "ws")
        token = chat_token(gateway, auth_env)
        page = f"{http}://{base}/" + (f"?token={token}" if token else "")
        auth_note = (
            "    auth:       JWT on; `aichat ask` mints its own token, `aichat token` prints one\n"
            if gateway.gateway_auth == "jwt"
            else "    auth:       DISABLED (AICHAT_GATEWAY_AUTH=disabled)\n"
        )
        # /metrics and the detailed readiness: the gateway's operator listener (plain HTTP)
        ops = f"http://{gateway.gateway_ops_host}:{gateway.ops_port}"
        ingest = next(c for c in procs if c.name == "ingest")
        print(
            f"4/4 ready.\n    chat page:  {page}\n    websocket:  {ws}://{base}/ws\n{auth_note}"
            f"    operator:   {ops}/metrics, {ops}/health/ready\n"
            f"    backlog:    {ingest.health_url} (documents, chunks, embeddings still to index)\n"
            f"    try:        aichat ask \"How many vacation days do employees get?\"\n"
            "    Ctrl-C stops everything."
        )
        while True:
            for child in procs:
                if not child.alive:
                    print(f"{child.name} exited; last log lines:", file=sys.stderr)
                    print("\n".join(tail(child.log_path, 20)), file=sys.stderr)
                    return 1
            time.sleep(1)
    except KeyboardInterrupt:
        return 0
    except RuntimeError as exc:
        print(f"aichat up: {exc}", file=sys.stderr)
        for child in procs:
            if child.log_path.exists():
                print(f"--- {child.name} ---\n" + "\n".join(tail(child.log_path, 15)), file=sys.stderr)
        return 1
    finally:
        # a second Ctrl-C must not abandon the children half-stopped: stopping has deadlines
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("stopping workers and gateway …")
        for child in reversed(procs):
            child.stop()
        if started_here and not args.keep_stack:
            print(f"stopping the stack ({', '.join(started_here)}) …")
            stack.down(stack_settings, services=started_here)
