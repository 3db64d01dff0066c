"""The worker's health and metrics listener binds where the settings say."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.app import create_app
from streams.config import WorkerSettings, load_settings
from streams.worker import serve_health


def bound_to(settings: WorkerSettings) -> tuple[str, int]:
    app = create_app(settings, "pipeline")
    service = serve_health(app, object(), "pipeline", settings)  # type: ignore[arg-type]
    config = service()._create_server().config  # the uvicorn server the worker starts
    return config.host, config.port


def test_the_health_listener_binds_the_configured_host(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AICHAT_WORKER_DATA_DIR", str(tmp_path))
    assert bound_to(load_settings(WorkerSettings)) == ("127.0.0.1", 6066)  # loopback by default
    # the production template's AICHAT_WORKER_HEALTH_URLS reach the worker over the network
    monkeypatch.setenv("AICHAT_WORKER_WEB_HOST", "0.0.0.0")
    monkeypatch.setenv("AICHAT_WORKER_WEB_PORT", "6070")
    assert bound_to(load_settings(WorkerSettings)) == ("0.0.0.0", 6070)
