"""Weaviate server: a binary built with ``go install`` from the Go module proxy (or given).

Order of preference for the binary:

1. ``AICHAT_WEAVIATE_BIN`` (any weaviate-server build);
2. ``<cache>/bin/weaviate-v<version>/weaviate-server``, built on first use with
   ``CGO_ENABLED=0 go install github.com/weaviate/weaviate/cmd/weaviate-server@v<version>``
   (Go caches in ``<cache>/go``; 10+ minutes on 2 cores);
3. without ``go``: the official release tarball
   ``https://github.com/weaviate/weaviate/releases/download/v<version>/weaviate-v<version>-linux-<amd64|arm64>.tar.gz``
   (untested path; needs internet).
"""

from __future__ import annotations

import io
import logging
import os
import platform
import shutil
import tarfile
from pathlib import Path

import httpx

from infra.config import WEAVIATE_VERSION, StackSettings, weaviate_ports
from infra.errors import ProvisionError
from infra.service import LaunchSpec, ServicePaths, base_env
from infra.system import file_lock, run_step
from infra.weaviate.schema import ensure_collection, weaviate_headers, weaviate_url

log = logging.getLogger(__name__)

MODULE = "github.com/weaviate/weaviate/cmd/weaviate-server"
RELEASE_URL = (
    "https://github.com/weaviate/weaviate/releases/download/"
    "v{version}/weaviate-v{version}-linux-{arch}.tar.gz"
)


def weaviate_binary(settings: StackSettings) -> Path:
    if settings.weaviate_bin is not None:
        return settings.weaviate_bin
    return settings.cache_dir / "bin" / f"weaviate-v{WEAVIATE_VERSION}" / "weaviate-server"


def weaviate_env(settings: StackSettings, data_dir: Path, backups_dir: Path) -> dict[str, str]:
    """The server's configuration, all through environment variables (pure)."""
    ports = weaviate_ports(settings)
    return {
        "PERSISTENCE_DATA_PATH": str(data_dir),
        "AUTHENTICATION_ANONYMOUS_ACCESS_ENABLED": "true",
        "DEFAULT_VECTORIZER_MODULE": "none",
        "ENABLE_MODULES": "backup-filesystem",
        # Korean morphological tokenizer for BM25 (tokenization "kagome_kr" in collection.json)
        "ENABLE_TOKENIZER_KAGOME_KR": "true",
        "BACKUP_FILESYSTEM_PATH": str(backups_dir),
        "QUERY_DEFAULTS_LIMIT": "25",
        "LIMIT_RESOURCES": "true",
        "DISABLE_TELEMETRY": "true",
        "GRPC_PORT": str(ports.grpc),
        "CLUSTER_HOSTNAME": "node1",
        "RAFT_BOOTSTRAP_EXPECT": "1",
        # without these it advertises the first non-loopback address (an IPv6 one here: crash)
        "CLUSTER_ADVERTISE_ADDR": "127.0.0.1",
        "CLUSTER_BIND_ADDR": "127.0.0.1",
        "CLUSTER_GOSSIP_BIND_PORT": str(ports.gossip),
        "CLUSTER_DATA_BIND_PORT": str(ports.data),
        "RAFT_PORT": str(ports.raft),
        "RAFT_INTERNAL_RPC_PORT": str(ports.raft_rpc),
        # pprof would listen on *:6060 and clash between two stacks
        "GO_PROFILING_DISABLE": "true",
        "LOG_LEVEL": "info",
    }


def weaviate_argv(settings: StackSettings, binary: Path) -> tuple[str, ...]:
    port = weaviate_ports(settings).http
    return (str(binary), "--host", "127.0.0.1", "--port", str(port), "--scheme", "http")


def _go_install(settings: StackSettings, target: Path) -> None:
    cache = settings.cache_dir
    log.info(
        "weaviate: building %s@v%s with go install (slow; log %s)",
        MODULE,
        WEAVIATE_VERSION,
        cache / "logs" / "weaviate-build.log",
    )
    env = dict(os.environ) | {
        "CGO_ENABLED": "0",
        "GOBIN": str(target.parent),
        "GOMODCACHE": str(cache / "go" / "mod"),
        "GOCACHE": str(cache / "go" / "build"),
        "GOFLAGS": "-mod=mod",
    }
    run_step(
        ["go", "install", f"{MODULE}@v{WEAVIATE_VERSION}"],
        what="weaviate: go install",
        env=env,
        log_path=cache / "logs" / "weaviate-build.log",
    )


def _download_release(target: Path) -> None:
    arch = {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(
        platform.machine(), "amd64"
    )
    url = RELEASE_URL.format(version=WEAVIATE_VERSION, arch=arch)
    log.info("weaviate: go not found, downloading %s", url)
    try:
        response = httpx.get(url, follow_redirects=True, timeout=300)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        raise ProvisionError(f"weaviate: download of {url} failed: {exc}") from exc
    with tarfile.open(fileobj=io.BytesIO(response.content), mode="r:gz") as tar:
        member = next(
            (m for m in tar.getmembers() if m.isfile() and Path(m.name).name == "weaviate"), None
        )
        if member is None:
            raise ProvisionError(f"weaviate: no 'weaviate' binary in {url}")
        source = tar.extractfile(member)
        assert source is not None
        target.write_bytes(source.read())
    target.chmod(0o755)


class WeaviateLauncher:
    name = "weaviate"

    def marker(self, settings: StackSettings) -> str:
        return weaviate_binary(settings).name

    def provision(self, settings: StackSettings) -> None:
        binary = weaviate_binary(settings)
        if binary.exists():
            return
        if settings.weaviate_bin is not None:
            raise ProvisionError(f"AICHAT_WEAVIATE_BIN: {binary} does not exist")
        with file_lock(settings.cache_dir / "locks" / "weaviate.lock"):
            if binary.exists():
                return
            binary.parent.mkdir(parents=True, exist_ok=True)
            if shutil.which("go"):
                _go_install(settings, binary)
            else:
                _download_release(binary)

    def prepare(self, settings: StackSettings, paths: ServicePaths) -> LaunchSpec:
        backups = paths.root / "backups"
        backups.mkdir(parents=True, exist_ok=True)
        binary = weaviate_binary(settings)
        env = base_env(paths.root) | weaviate_env(settings, paths.data, backups)
        return LaunchSpec(weaviate_argv(settings, binary), env, paths.root)

    def probe(self, settings: StackSettings) -> tuple[bool, str]:
        url = f"{weaviate_url(settings)}/v1/.well-known/ready"
        try:
            response = httpx.get(url, headers=weaviate_headers(settings), timeout=3.0)
        except httpx.HTTPError as exc:
            return False, f"not reachable ({type(exc).__name__})"
        return response.status_code == 200, f"ready HTTP {response.status_code}"

    def initialise(self, settings: StackSettings) -> str:
        created = ensure_collection(settings)
        return f"collection {settings.weaviate_collection} {'created' if created else 'present'}"
