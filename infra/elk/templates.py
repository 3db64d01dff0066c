"""The index template of the events indices (``index-template.json``), applied idempotently."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import httpx

from infra.errors import StackError
from streams.config import ElasticSettings

log = logging.getLogger(__name__)

TEMPLATE_FILE = Path(__file__).with_name("index-template.json")


def template_name(settings: ElasticSettings) -> str:
    return settings.elastic_index_prefix


def render_index_template(settings: ElasticSettings, text: str | None = None) -> dict[str, Any]:
    """The template body with ``{{prefix}}`` replaced by the configured index prefix (pure)."""
    raw = TEMPLATE_FILE.read_text(encoding="utf-8") if text is None else text
    body: dict[str, Any] = json.loads(raw.replace("{{prefix}}", settings.elastic_index_prefix))
    return body


def elastic_headers(settings: ElasticSettings) -> dict[str, str]:
    if settings.elastic_api_key is None:
        return {}
    return {"Authorization": f"ApiKey {settings.elastic_api_key.get_secret_value()}"}


def apply_index_template(settings: ElasticSettings, *, timeout_s: float = 30.0) -> None:
    """``PUT /_index_template/<prefix>-events``; raises :class:`StackError` unless acknowledged."""
    name = template_name(settings)
    url = f"{settings.elastic_url.rstrip('/')}/_index_template/{name}"
    try:
        response = httpx.put(
            url,
            json=render_index_template(settings),
            headers=elastic_headers(settings),
            timeout=timeout_s,
        )
    except httpx.HTTPError as exc:
        raise StackError(f"cannot apply index template {name}: {exc}") from exc
    if response.status_code != 200 or not response.json().get("acknowledged"):
        raise StackError(
            f"index template {name} not acknowledged: HTTP {response.status_code} {response.text[:500]}"
        )
    log.info("applied index template %s", name)
