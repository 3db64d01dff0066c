"""The ingest workers ``aichat reindex start`` runs for a generation on this machine.

Each is ``aichat worker --role ingest`` with the deployment's environment plus the
generation's (:meth:`infra.generations.Generation.env`), detached (it outlives the command,
like the stack's services), with its pid file and log under
``<worker data dir>/reindex/<generation>/``; ``drop`` stops them by those pid files.
Elsewhere (Kubernetes, another machine) the same workers are a Deployment with that
environment: ``aichat reindex start --workers 0`` only provisions and prints it.

They run at CPU niceness ``AICHAT_INGEST_NICE`` (10 by default here): re-embedding the
whole corpus yields the CPU to the answer workers that serve meanwhile.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from infra.errors import StackError
from infra.generations import Generation
from infra.proc import is_alive, read_pid, spawn, tail, terminate_group, write_pid
from streams.config import ENV_PREFIX, WorkerSettings

READY_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 30.0
DEFAULT_NICE = 10


@dataclass(frozen=True)
class Worker:
    pid: int
    port: int
    log_path: Path


def worker_dir(settings: WorkerSettings, name: str) -> Path:
    return settings.worker_data_dir.resolve() / "reindex" / name


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def running(settings: WorkerSettings, name: str) -> list[int]:
    """Pids of this machine's live workers of generation ``name``."""
    pids = (read_pid(path) for path in sorted(worker_dir(settings, name).glob("worker-*.pid")))
    return [pid for pid in pids if pid is not None and is_alive(pid)]


def start_workers(settings: WorkerSettings, spec: Generation, n: int, *, nice: int | None = None) -> list[Worker]:
    """Start ``n`` ingest workers of ``spec`` beside those already running; wait until each
    is ready (its model loaded, its collections checked). ``nice``: their CPU niceness
    (default: ``AICHAT_INGEST_NICE`` where the environment sets it, else :data:`DEFAULT_NICE`)."""
    home = worker_dir(settings, spec.collection)
    home.mkdir(parents=True, exist_ok=True)
    first = len(list(home.glob("worker-*.pid")))
    started = []
    for i in range(first, first + n):
        port = _free_port()
        env = {**os.environ, **spec.env(), f"{ENV_PREFIX}WORKER_WEB_PORT": str(port),
               f"{ENV_PREFIX}WORKER_DATA_DIR": str(home / f"data-{i}")}
        if nice is not None or f"{ENV_PREFIX}INGEST_NICE" not in env:
            env[f"{ENV_PREFIX}INGEST_NICE"] = str(DEFAULT_NICE if nice is None else nice)
        argv = [sys.executable, "-m", "streams.cli", "worker", "--role", "ingest", "--web-port", str(port)]
        log_path = home / f"worker-{i}.log"
        pid = spawn(argv, env=env, cwd=Path.cwd(), log_path=log_path)
        write_pid(home / f"worker-{i}.pid", pid)
        started.append(Worker(pid, port, log_path))
    for worker in started:
        _wait_ready(worker)
    return started


def _wait_ready(worker: Worker, timeout_s: float = READY_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    url = f"http://127.0.0.1:{worker.port}/health/ready"
    while time.monotonic() < deadline:
        if not is_alive(worker.pid):
            raise StackError(f"worker {worker.pid} exited during start-up; the end of {worker.log_path}:\n"
                             + "\n".join(tail(worker.log_path, 15)))
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise StackError(f"worker {worker.pid} not ready within {timeout_s:.0f}s; see {worker.log_path}")


def stop_workers(settings: WorkerSettings, name: str) -> int:
    """Stop this machine's workers of generation ``name`` (SIGTERM, then SIGKILL); how many ran."""
    stopped = 0
    for path in sorted(worker_dir(settings, name).glob("worker-*.pid")):
        pid = read_pid(path)
        if pid is not None and is_alive(pid):
            terminate_group(pid, STOP_TIMEOUT_S)
            stopped += 1
        path.unlink(missing_ok=True)
    return stopped
