"""Redis from the system's ``redis-server`` (Debian: ``apt-get install redis-server``).

Only the gateway uses it, to share per-user rate limits between replicas, so it is
an optional service of the stack: ``stack.up(settings, services=["redis"])`` (``aichat
up`` does so when ``AICHAT_REDIS_URL`` points here). It holds no data worth keeping:
no snapshots, no append-only file, a memory cap with TTL-based eviction.
"""

from __future__ import annotations

import shutil
import socket
from pathlib import Path
from urllib.parse import urlsplit

from infra.config import StackSettings
from infra.errors import ProvisionError
from infra.service import LaunchSpec, ServicePaths, base_env

DEFAULT_PORT = 6379
BINARY = "redis-server"

CONFIG_TEMPLATE = """\
# rendered by infra/redis/launcher.py: local, ephemeral, loopback only
bind 127.0.0.1
port {port}
protected-mode yes
daemonize no
dir {data}
save ""
appendonly no
logfile ""
maxmemory {maxmemory}
maxmemory-policy volatile-ttl
"""


def redis_port(settings: StackSettings) -> int:
    """The port of ``AICHAT_REDIS_URL`` when the stack settings carry one, else 6379."""
    url = getattr(settings, "redis_url", None)
    if url is None:
        return DEFAULT_PORT
    text = url.get_secret_value() if hasattr(url, "get_secret_value") else str(url)
    return urlsplit(text).port or DEFAULT_PORT


def render_config(port: int, data_dir: Path, maxmemory: str = "64mb") -> str:
    return CONFIG_TEMPLATE.format(port=port, data=data_dir, maxmemory=maxmemory)


def ping(port: int, timeout_s: float = 2.0) -> tuple[bool, str]:
    """``PING`` in the inline protocol; (healthy, detail)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
            sock.sendall(b"PING\r\n")
            reply = sock.recv(64)
    except OSError as exc:
        return False, f"not reachable ({type(exc).__name__})"
    if reply.startswith(b"+PONG"):
        return True, "PONG"
    return False, f"unexpected reply {reply[:40]!r}"


class RedisLauncher:
    name = "redis"

    def marker(self, settings: StackSettings) -> str:
        return BINARY

    def ports(self, settings: StackSettings) -> tuple[int, ...]:
        return (redis_port(settings),)

    def provision(self, settings: StackSettings) -> None:
        if shutil.which(BINARY) is None:
            raise ProvisionError(
                f"{BINARY} not found on PATH: install it (Debian/Ubuntu: apt-get install -y redis-server)"
            )

    def prepare(self, settings: StackSettings, paths: ServicePaths) -> LaunchSpec:
        binary = shutil.which(BINARY)
        if binary is None:  # provision() ran first; the PATH changed in between
            raise ProvisionError(f"{BINARY} not found on PATH")
        conf = paths.config / "redis.conf"
        conf.write_text(render_config(redis_port(settings), paths.data), encoding="utf-8")
        return LaunchSpec(argv=(binary, str(conf)), env=base_env(paths.root), cwd=paths.root)

    def probe(self, settings: StackSettings) -> tuple[bool, str]:
        return ping(redis_port(settings))

    def initialise(self, settings: StackSettings) -> str:
        return "nothing to set up"
