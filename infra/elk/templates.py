"""Elasticsearch definitions of the events, summaries and logs indices, applied idempotently.

One mapping (``index-template.json``, ECS field names, our own fields under ``aichat.*``,
``dynamic: false`` and field/depth limits so event metadata can never explode it) serves
every index the shipper writes, so one Kibana data view over ``<prefix>-*`` sees them all:

================================  ==============================  ================================
index                             template (priority)             written as
================================  ==============================  ================================
``<prefix>-YYYY.MM.DD``           ``<prefix>`` (200)              one document per Kafka record
``<prefix>-summaries``            ``<prefix>-summaries`` (205)    one document per query (upsert)
``<prefix>-logs-YYYY.MM.DD``      ``<prefix>-logs`` (210)         one document per log record
================================  ==============================  ================================

A worker that ships puts the three templates of its prefix before its sink starts
(:func:`ensure_index_templates`, from ``aichat worker``); ``aichat stack`` puts them
with :func:`apply_index_template`.

Production clusters add lifecycle policies (``production/ilm-*.json``) to the same
templates and, for the Logstash alternative, a data-stream template for
``logs-aichat.*-*`` (:func:`production_requests`; ``aichat elk put-production``).
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

import httpx
from elastic_transport import ConnectionError as EsConnectionError
from elastic_transport import ConnectionTimeout

from infra.errors import StackError
from streams.config import ElasticSettings
from streams.elastic_sink import elastic_client
from streams.endpoints import elastic_http_options
from streams.errors import DependencyUnavailable
from streams.es_documents import summary_index

log = logging.getLogger(__name__)

TEMPLATE_FILE = Path(__file__).with_name("index-template.json")
PRODUCTION_DIR = Path(__file__).with_name("production")
#: data streams written by Logstash (``infra/elk/logstash/aichat.conf``)
STREAM_PATTERN = "logs-aichat.*-*"
STREAM_TEMPLATE = "aichat-streams"


def template_name(settings: ElasticSettings) -> str:
    return settings.elastic_index_prefix


def logs_template_name(settings: ElasticSettings) -> str:
    return f"{settings.elastic_index_prefix}-logs"


def summaries_template_name(settings: ElasticSettings) -> str:
    return f"{settings.elastic_index_prefix}-summaries"


def ilm_policy_names(settings: ElasticSettings) -> dict[str, str]:
    """Policy name → file in ``production/``."""
    prefix = settings.elastic_index_prefix
    return {
        f"{prefix}-events": "ilm-events.json",
        f"{prefix}-logs": "ilm-logs.json",
        "aichat-stream": "ilm-stream.json",
    }


def render_index_template(settings: ElasticSettings, text: str | None = None) -> dict[str, Any]:
    """The events template body with ``{{prefix}}`` replaced by the configured index prefix (pure)."""
    raw = TEMPLATE_FILE.read_text(encoding="utf-8") if text is None else text
    body: dict[str, Any] = json.loads(raw.replace("{{prefix}}", settings.elastic_index_prefix))
    return body


def render_index_templates(
    settings: ElasticSettings, *, lifecycle: bool = False
) -> dict[str, dict[str, Any]]:
    """Template name → body: events, summaries, logs — one mapping, three patterns (pure).

    ``lifecycle=True`` is the production variant: events and logs name their ILM policy
    (summaries keep no policy: one index, pruned by ``@timestamp``) and keep the
    cluster's default replica count.
    """
    prefix = settings.elastic_index_prefix
    events = render_index_template(settings)

    def variant(pattern: str, bump: int, description: str) -> dict[str, Any]:
        body = copy.deepcopy(events)
        body["index_patterns"] = [pattern]
        body["priority"] = events["priority"] + bump
        body["_meta"] = {"description": description, "managed_by": "aichat"}
        return body

    templates = {
        template_name(settings): events,
        summaries_template_name(settings): variant(
            f"{summary_index(prefix)}*", 5, "AI-Chat: one summary document per query"),
        logs_template_name(settings): variant(
            f"{prefix}-logs-*", 10, "AI-Chat process logs (ECS) shipped through the logs topic"),
    }
    if lifecycle:
        policies = {template_name(settings): f"{prefix}-events",
                    logs_template_name(settings): f"{prefix}-logs"}
        for name, body in templates.items():
            idx = body["template"]["settings"]
            idx.pop("number_of_replicas", None)
            if name in policies:
                idx["index.lifecycle.name"] = policies[name]
    return templates


def render_stream_template(settings: ElasticSettings) -> dict[str, Any]:
    """Data-stream template for Logstash's ``logs-aichat.events-*`` / ``logs-aichat.logs-*`` (pure)."""
    body = render_index_template(settings)
    body["index_patterns"] = [STREAM_PATTERN]
    body["priority"] = 250  # above Elastic's built-in logs-*-* (100)
    body["data_stream"] = {}
    body["_meta"] = {"description": "AI-Chat events and logs written by Logstash as data streams",
                     "managed_by": "aichat"}
    idx = body["template"]["settings"]
    idx.pop("number_of_replicas", None)
    idx["index.lifecycle.name"] = "aichat-stream"
    body["template"]["mappings"]["properties"]["data_stream"] = {"properties": {
        name: {"type": "constant_keyword"} for name in ("type", "dataset", "namespace")}}
    return body


def production_requests(settings: ElasticSettings) -> list[tuple[str, dict[str, Any]]]:
    """``(path, body)`` to ``PUT``, in order: policies first, then the templates naming them."""
    requests: list[tuple[str, dict[str, Any]]] = []
    for name, filename in ilm_policy_names(settings).items():
        policy = json.loads((PRODUCTION_DIR / filename).read_text(encoding="utf-8"))
        requests.append((f"/_ilm/policy/{name}", {"policy": policy}))
    for name, body in render_index_templates(settings, lifecycle=True).items():
        requests.append((f"/_index_template/{name}", body))
    requests.append((f"/_index_template/{STREAM_TEMPLATE}", render_stream_template(settings)))
    return requests


def put_all(
    settings: ElasticSettings,
    requests: list[tuple[str, dict[str, Any]]],
    *,
    timeout_s: float = 30.0,
    transport: httpx.BaseTransport | None = None,
) -> list[str]:
    """``PUT`` each body; raise :class:`StackError` naming the first one not acknowledged."""
    done = []
    with httpx.Client(
        **elastic_http_options(settings), timeout=timeout_s, transport=transport
    ) as http:
        for path, body in requests:
            try:
                response = http.put(path, json=body)
            except httpx.HTTPError as exc:
                raise StackError(f"PUT {path} failed: {exc}") from exc
            if response.status_code != 200 or not response.json().get("acknowledged"):
                raise StackError(
                    f"PUT {path} not acknowledged: HTTP {response.status_code} {response.text[:500]}"
                )
            done.append(path)
    return done


def apply_index_template(settings: ElasticSettings, *, timeout_s: float = 30.0) -> None:
    """``PUT /_index_template/<prefix>`` and ``<prefix>-logs``; raises :class:`StackError` unless acknowledged."""
    templates = render_index_templates(settings)
    put_all(settings, [(f"/_index_template/{name}", body) for name, body in templates.items()],
            timeout_s=timeout_s)
    log.info("applied index templates %s", ", ".join(templates))


async def ensure_index_templates(settings: ElasticSettings) -> list[str]:
    """Put the project's index templates for this prefix (idempotent) before the first write;
    return their names. Unreachable: :class:`DependencyUnavailable` (retriable), so a worker
    started before Elasticsearch waits for it (streams/resources.py)."""
    client = elastic_client(settings)
    try:
        templates = render_index_templates(settings)
        for name, body in templates.items():
            body["meta"] = body.pop("_meta", None)
            await client.indices.put_index_template(name=name, **body)
        # the one summaries index is never rolled over: give it the fields added since it
        # was created (additive, idempotent; e.g. aichat.experiment, aichat.feedback)
        summaries = templates[summaries_template_name(settings)]["template"]["mappings"]
        await client.indices.put_mapping(
            index=summary_index(settings.elastic_index_prefix), properties=summaries["properties"],
            ignore_unavailable=True, allow_no_indices=True)
    except (EsConnectionError, ConnectionTimeout) as exc:
        raise DependencyUnavailable(f"Elasticsearch unreachable: {exc}") from exc
    finally:
        await client.close()
    return list(templates)
