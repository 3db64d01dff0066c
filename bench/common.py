"""Shared pieces of the benchmarks: worker processes, clean-up, machine facts, tables."""

from __future__ import annotations

import math
import os
import platform
import socket
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from infra.cleanup import drop_isolated_state
from infra.up import Child, wait_ready

RESULTS = Path(__file__).resolve().parent / "results"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_mb(pid: int) -> float:
    """Resident memory of one process (MiB), 0 when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class WorkerGroup:
    """N ``aichat worker --role ROLE`` processes in one consumer group, with peak RSS sampling."""

    def __init__(self, role: str, n: int, env: dict[str, str], logs: Path) -> None:
        self.env = {**os.environ, **env}
        self.children = []
        for i in range(n):
            port = free_port()
            argv = [sys.executable, "-m", "streams.cli", "worker", "--role", role, "--web-port", str(port)]
            self.children.append(Child(f"{role}-{i}", argv, f"http://127.0.0.1:{port}/health/ready",
                                       logs / f"{role}-{i}.log"))
        self._peaks = [0.0] * n
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)

    def start(self) -> None:
        for child in self.children:
            child.start(env=self.env)
        for child in self.children:
            wait_ready(child, timeout_s=300)
        self._sampler.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.5):
            for i, child in enumerate(self.children):
                if child.proc is not None:
                    self._peaks[i] = max(self._peaks[i], rss_mb(child.proc.pid))

    def peak_rss_mb(self) -> list[float]:
        return [round(p, 1) for p in self._peaks]

    def stop(self) -> None:
        self._stop.set()
        for child in self.children:
            child.stop()


drop_state = drop_isolated_state  # a benchmark's run is isolated like a test's


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(mem_gib, 1),
            "gpu": None, "os": platform.platform()}


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of sorted or unsorted values (nan when empty)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return float(ordered[rank - 1])


def percentiles(values: Sequence[float]) -> dict[str, float]:
    """p50, p95 and p99 of ``values`` (ms, rounded to 0.1), as the benchmarks report latencies."""
    return {f"p{p}": round(percentile(values, p), 1) for p in (50, 95, 99)}


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for n, row in enumerate(cells):
        print("  ".join(c.rjust(w) if n and i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))))
        if n == 0:
            print("  ".join("-" * w for w in widths))


def save_result(path: Path, result: Mapping[str, Any]) -> None:
    """Write a benchmark's JSON (indented, newline-terminated) and say where."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
    print(f"wrote {path}")
