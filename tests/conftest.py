"""Shared fixtures. Integration and e2e tests need the real services
(``aichat stack up``). When one is unreachable they are skipped on a developer's
machine with the reason, and *fail* under ``CI=true``: CI never skips them."""

from __future__ import annotations

import os
import socket
import uuid
import warnings
from collections.abc import Iterator

# authlib puts an `always` filter for its warnings in front of every other filter on this
# first import; imported here, before any test imports weaviate-client (which imports
# authlib's httpx integration), pyproject's filter for its httpx deprecation comes first
# (see streams/cli.py: quiet_authlib_httpx_warning)
import authlib.deprecate  # noqa: F401
import httpx
import pytest

from streams.config import WorkerSettings, load_settings
from streams.endpoints import HttpOptions, elastic_http_options, weaviate_http_options

# starlette>=1.x prefers httpx2 for its TestClient and warns (a UserWarning) when it falls back
# to httpx. Imported once here, so test modules import it plainly: pyproject's filters cannot
# catch it there, since weaviate-client's import puts a `default` filter for every warning
# in front of them
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    import starlette.testclient  # noqa: F401

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _kafka_reachable(bootstrap: str) -> str | None:
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return None
    except OSError as exc:
        return f"Kafka at {bootstrap}: {exc}"


def _http_ok(name: str, options: HttpOptions, path: str) -> str | None:
    """None when ``path`` answers 2xx with the service's credentials and CA."""
    url = options["base_url"] + path
    try:
        with httpx.Client(**options, timeout=3) as http:
            response = http.get(path)
    except httpx.HTTPError as exc:
        return f"{name} at {url}: {exc}"
    return None if response.status_code < 300 else f"{name} at {url}: HTTP {response.status_code}"


@pytest.fixture(scope="session")
def settings() -> WorkerSettings:
    return load_settings(WorkerSettings)


@pytest.fixture(scope="session")
def services(settings: WorkerSettings) -> WorkerSettings:
    """The stack's settings, after checking Kafka, Weaviate and Elasticsearch answer."""
    problems = [
        p
        for p in (
            _kafka_reachable(settings.kafka_bootstrap),
            # /v1/meta needs the API key (the ready endpoint answers anyone)
            _http_ok("Weaviate", weaviate_http_options(settings), "/v1/meta"),
            _http_ok("Elasticsearch", elastic_http_options(settings), "/_cluster/health"),
        )
        if p
    ]
    if problems:
        message = "services unreachable (run `aichat stack up`): " + "; ".join(problems)
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return settings


@pytest.fixture
def unique() -> Iterator[str]:
    """A short unique token for topic prefixes, collection and index names."""
    yield uuid.uuid4().hex[:10]
