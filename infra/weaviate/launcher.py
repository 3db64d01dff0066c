"""Weaviate server: a binary built with ``go install`` from the Go module proxy (or given).

Security of the local server: anonymous access is off; clients send an API key
(``AICHAT_WEAVIATE_API_KEY``, or the random key created once, 0600, in
``<stack_dir>/weaviate/api-key.secret``; see ``streams/endpoints.py``). REST, gossip and
Raft listen on 127.0.0.1. Weaviate 1.35 has no bind address for its gRPC API or its
internal data API (both ``:port``, every interface): gRPC needs the API key like REST, and
the data API requires a random basic-auth password (``cluster-password.secret``) that only
the node itself knows.

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
from infra.weaviate.schema import ensure_collection
from query_gateway.dev_jwt import ensure_secret
from streams.config import WeaviateSettings
from streams.endpoints import LOOPBACK_HOSTS, local_weaviate_key_path, weaviate_http_options

log = logging.getLogger(__name__)

MODULE = "github.com/weaviate/weaviate/cmd/weaviate-server"
RELEASE_URL = (
    "https://github.com/weaviate/weaviate/releases/download/"
    "v{version}/weaviate-v{version}-linux-{arch}.tar.gz"
)
#: the user name Weaviate gives the principal of the API key
API_KEY_USER = "aichat"
CLUSTER_USER = "node"
CLUSTER_PASSWORD_NAME = "cluster-password.secret"


def weaviate_binary(settings: StackSettings) -> Path:
    if settings.weaviate_bin is not None:
        return settings.weaviate_bin
    return settings.cache_dir / "bin" / f"weaviate-v{WEAVIATE_VERSION}" / "weaviate-server"


def server_api_key(settings: StackSettings) -> str:
    """The key the local server accepts: the configured one, else the stack's own (made once)."""
    if settings.weaviate_api_key is not None:
        key = settings.weaviate_api_key.get_secret_value()
        if not key or "," in key:
            raise ProvisionError("AICHAT_WEAVIATE_API_KEY: must be non-empty and without ','")
        return key
    return ensure_secret(local_weaviate_key_path(settings.stack_dir))


def weaviate_env(
    settings: StackSettings,
    data_dir: Path,
    backups_dir: Path,
    *,
    api_key: str,
    cluster_password: str,
) -> dict[str, str]:
    """The server's configuration, all through environment variables (pure)."""
    ports = weaviate_ports(settings)
    return {
        "PERSISTENCE_DATA_PATH": str(data_dir),
        "AUTHENTICATION_ANONYMOUS_ACCESS_ENABLED": "false",
        "AUTHENTICATION_APIKEY_ENABLED": "true",
        "AUTHENTICATION_APIKEY_ALLOWED_KEYS": api_key,
        "AUTHENTICATION_APIKEY_USERS": API_KEY_USER,
        # the internal data API listens on every interface: only the node knows this password
        "CLUSTER_BASIC_AUTH_USERNAME": CLUSTER_USER,
        "CLUSTER_BASIC_AUTH_PASSWORD": cluster_password,
        "DEFAULT_VECTORIZER_MODULE": "none",
        "ENABLE_MODULES": "backup-filesystem",
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
        if settings.weaviate_scheme != "http":
            raise ProvisionError(
                "AICHAT_WEAVIATE_SCHEME: the local stack serves Weaviate over http on 127.0.0.1"
            )
        backups = paths.root / "backups"
        backups.mkdir(parents=True, exist_ok=True)
        binary = weaviate_binary(settings)
        env = base_env(paths.root) | weaviate_env(
            settings,
            paths.data,
            backups,
            api_key=server_api_key(settings),
            cluster_password=ensure_secret(paths.root / CLUSTER_PASSWORD_NAME),
        )
        return LaunchSpec(weaviate_argv(settings, binary), env, paths.root)

    def probe(self, settings: StackSettings) -> tuple[bool, str]:
        return probe_weaviate(settings)

    def initialise(self, settings: StackSettings) -> str:
        created = ensure_collection(settings)
        return f"collection {settings.weaviate_collection} {'created' if created else 'present'}"


def _key_source(settings: WeaviateSettings, *, sent: bool) -> str:
    """Where the key sent (or looked for) came from, for an operator to check."""
    if settings.weaviate_api_key is not None:
        return "AICHAT_WEAVIATE_API_KEY(_FILE)"
    path = local_weaviate_key_path(settings.stack_dir)
    if sent:
        return str(path)
    if settings.weaviate_host in LOOPBACK_HOSTS:
        return f"AICHAT_WEAVIATE_API_KEY unset, no {path}"
    return "AICHAT_WEAVIATE_API_KEY unset"


def probe_weaviate(
    settings: WeaviateSettings, *, transport: httpx.BaseTransport | None = None
) -> tuple[bool, str]:
    """Ready, and our API key accepted: ``/.well-known/ready`` answers without a key, so
    ``/v1/meta`` (which needs one) tells a refused key from a server that is down, and the
    same request without the key tells whether the server still lets anyone in."""
    options = weaviate_http_options(settings)
    try:
        with httpx.Client(**options, timeout=3.0, transport=transport) as http:
            ready = http.get("/v1/.well-known/ready")
            if ready.status_code != 200:
                return False, f"ready HTTP {ready.status_code}"
            meta = http.get("/v1/meta").status_code
        anonymous = meta == 200
        if anonymous and options["headers"]:
            with httpx.Client(base_url=options["base_url"], verify=options["verify"],
                              timeout=3.0, transport=transport) as bare:
                anonymous = bare.get("/v1/meta").status_code == 200
    except httpx.HTTPError as exc:
        if "CERTIFICATE_VERIFY_FAILED" in str(exc):
            return False, "TLS certificate not trusted (AICHAT_WEAVIATE_CA_FILE)"
        return False, f"not reachable ({type(exc).__name__})"
    if anonymous:
        return True, "ready, but anonymous access is on (started without API-key auth?)"
    if meta == 200:
        return True, "ready, API key accepted"
    sent = bool(options["headers"])
    if meta == 401:
        verdict = "API key refused" if sent else "API key required"
        return False, f"401: {verdict} ({_key_source(settings, sent=sent)})"
    if meta == 403:
        return False, f"403: API key lacks permission ({_key_source(settings, sent=sent)})"
    return False, f"ready, but /v1/meta HTTP {meta}"
