"""How every client reaches Weaviate and Elasticsearch: base URL, credentials, TLS trust.

One place, so the worker, ``aichat stack`` (probes, collection, templates), ``aichat
rebuild``, the clean-up of test runs, the benchmarks and the tests send the same key and
trust the same CA::

    weaviate_url(s)            http(s)://host:http_port
    weaviate_api_key(s)        AICHAT_WEAVIATE_API_KEY (or _FILE), else the local stack's key
    weaviate_headers(s)        {"Authorization": "Bearer <key>"} or {}
    weaviate_http_options(s)   base_url, headers and verify for an httpx client
    elastic_url(s), elastic_headers(s), elastic_http_options(s)   the same for Elasticsearch
    api_key_headers(key)       {"Authorization": "ApiKey <key>"} or {}: an Elastic API key
                               (Elasticsearch's, and Kibana's in ``aichat elk``)
    tls_verify(ca_file)        what httpx's ``verify`` gets: a context trusting ca_file, or True

The local stack's key: ``aichat stack up`` creates a random key once in
:func:`local_weaviate_key_path` (0600, like the gateway's JWT secret) and starts Weaviate
with it. A client without a configured key uses that file while Weaviate is on this
machine (``weaviate_host`` 127.0.0.1 or localhost), read when the client is built, so a
process started before the stack's first start still finds it. A configured key always
wins, and a remote Weaviate never gets the local one.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import TypedDict

from pydantic import SecretStr

from streams.config import ElasticSettings, WeaviateSettings
from streams.errors import ConfigError

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost"})
LOCAL_WEAVIATE_KEY_NAME = "api-key.secret"


class HttpOptions(TypedDict):
    """Keyword arguments of ``httpx.Client`` / ``httpx.AsyncClient`` for one service."""

    base_url: str
    headers: dict[str, str]
    verify: ssl.SSLContext | bool


def local_weaviate_key_path(stack_dir: Path) -> Path:
    return stack_dir / "weaviate" / LOCAL_WEAVIATE_KEY_NAME


def tls_verify(ca_file: Path | None) -> ssl.SSLContext | bool:
    """An SSL context trusting exactly ``ca_file``; True (httpx's default roots) without one."""
    if ca_file is None:
        return True
    return ssl.create_default_context(cafile=str(ca_file))


def weaviate_url(settings: WeaviateSettings) -> str:
    host = settings.weaviate_host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 literal
    return f"{settings.weaviate_scheme}://{host}:{settings.weaviate_http_port}"


def weaviate_api_key(settings: WeaviateSettings) -> str | None:
    """The configured key; else the local stack's key while Weaviate is local; else None."""
    if settings.weaviate_api_key is not None:
        return settings.weaviate_api_key.get_secret_value()
    if settings.weaviate_host not in LOOPBACK_HOSTS:
        return None
    path = local_weaviate_key_path(settings.stack_dir)
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(
            f"AICHAT_WEAVIATE_API_KEY is unset and the local stack's key {path} cannot be "
            f"read: {exc.strerror}"
        ) from exc


def weaviate_headers(settings: WeaviateSettings) -> dict[str, str]:
    key = weaviate_api_key(settings)
    return {"Authorization": f"Bearer {key}"} if key else {}


def weaviate_http_options(settings: WeaviateSettings) -> HttpOptions:
    return HttpOptions(
        base_url=weaviate_url(settings),
        headers=weaviate_headers(settings),
        verify=tls_verify(settings.weaviate_ca_file),
    )


def api_key_headers(key: SecretStr | None) -> dict[str, str]:
    value = key.get_secret_value() if key is not None else ""
    return {"Authorization": f"ApiKey {value}"} if value else {}


def elastic_url(settings: ElasticSettings) -> str:
    return settings.elastic_url.rstrip("/")


def elastic_headers(settings: ElasticSettings) -> dict[str, str]:
    return api_key_headers(settings.elastic_api_key)


def elastic_http_options(settings: ElasticSettings) -> HttpOptions:
    return HttpOptions(
        base_url=elastic_url(settings),
        headers=elastic_headers(settings),
        verify=tls_verify(settings.elastic_ca_file),
    )
