"""What every service launcher provides, and the small value types the stack passes around."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from infra.config import StackSettings
from infra.proc import RunAs


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    pid: int | None
    ports: tuple[int, ...]
    healthy: bool
    detail: str
    started: bool = False  # this call spawned it (it was not running before)

    @property
    def health(self) -> str:
        """``up``, ``unhealthy`` (our process runs but does not answer) or ``down``."""
        if self.healthy:
            return "up"
        return "unhealthy" if self.pid is not None else "down"


@dataclass(frozen=True)
class ServicePaths:
    """``<stack_dir>/<service>/``: data/, logs/, config/, <service>.pid, logs/<service>.out."""

    name: str
    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def config(self) -> Path:
        return self.root / "config"

    @property
    def pid_file(self) -> Path:
        return self.root / f"{self.name}.pid"

    @property
    def out_log(self) -> Path:
        return self.logs / f"{self.name}.out"

    def create(self) -> None:
        for path in (self.data, self.logs, self.config):
            path.mkdir(parents=True, exist_ok=True)


def service_paths(settings: StackSettings, name: str) -> ServicePaths:
    return ServicePaths(name, settings.service_dir(name))


@dataclass(frozen=True)
class LaunchSpec:
    argv: tuple[str, ...]
    env: dict[str, str]
    cwd: Path
    run_as: RunAs | None = None


def base_env(home: Path) -> dict[str, str]:
    """A clean environment for a server: no stray JAVA_OPTS/ENABLE_MODULES from the caller's shell."""
    return {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "TZ": "UTC",
    }


class Launcher(Protocol):
    """One service: install it, render its config, start it, tell whether it is healthy."""

    name: str

    def marker(self, settings: StackSettings) -> str:
        """A substring of the server's command line (guards against a recycled pid)."""
        ...

    def provision(self, settings: StackSettings) -> None:
        """Download/build what is missing into ``settings.cache_dir`` (idempotent, locked)."""
        ...

    def prepare(self, settings: StackSettings, paths: ServicePaths) -> LaunchSpec:
        """Render config into ``paths`` (and format storage once); return how to start it."""
        ...

    def probe(self, settings: StackSettings) -> tuple[bool, str]:
        """(healthy, detail) within a few seconds."""
        ...

    def initialise(self, settings: StackSettings) -> str:
        """Idempotent setup once healthy (topics, template, collection); returns a summary."""
        ...
