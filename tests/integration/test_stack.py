"""The local stack as ``aichat stack up`` leaves it (the test runner brings it up first)."""

from __future__ import annotations

import uuid

import httpx
import pytest
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from infra.config import StackSettings
from infra.elk.templates import apply_index_template, template_name
from infra.kafka.topics import admin_client, ensure_topics, load_topic_specs
from infra.stack import status, up
from infra.weaviate.schema import ensure_collection
from streams.config import load_settings
from streams.endpoints import elastic_http_options, weaviate_http_options

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack_settings() -> StackSettings:
    return load_settings(StackSettings)


def test_status_reports_every_service_healthy(stack_settings: StackSettings) -> None:
    rows = status(stack_settings)
    # the core services, in order; optional ones (redis) follow once something started them
    assert [r.name for r in rows][:3] == ["kafka", "elasticsearch", "weaviate"]
    assert {r.name for r in rows[3:]} <= {"redis"}
    assert [(r.name, r.health) for r in rows] == [(r.name, "up") for r in rows], rows


def test_up_on_a_running_stack_starts_nothing(stack_settings: StackSettings) -> None:
    # what `aichat up` relies on to leave a stack it found running as it was
    rows = up(stack_settings)
    assert [(r.name, r.healthy, r.started) for r in rows] == [
        (name, True, False) for name in ("kafka", "elasticsearch", "weaviate")
    ], rows


async def _cleanup_policies(settings: StackSettings, names: list[str]) -> dict[str, str]:
    admin = admin_client(settings)
    await admin.start()
    try:
        resources = [
            ConfigResource(ConfigResourceType.TOPIC, n, {"cleanup.policy": None}) for n in names
        ]
        responses = await admin.describe_configs(resources)
    finally:
        await admin.close()
    policies = {}
    for response in responses:
        for resource in response.to_object()["resources"]:
            assert resource["error_code"] == 0, resource
            entries = {e["config_names"]: e["config_value"] for e in resource["config_entries"]}
            policies[resource["resource_name"]] = entries["cleanup.policy"]
    return policies


async def _topic_partitions(settings: StackSettings, names: list[str]) -> dict[str, int]:
    admin = admin_client(settings)
    await admin.start()
    try:
        topics = await admin.describe_topics(names)
    finally:
        await admin.close()
    return {t["topic"]: len(t["partitions"]) for t in topics if t["error_code"] == 0}


async def test_ensure_topics_creates_with_policies_then_is_a_noop(
    stack_settings: StackSettings,
) -> None:
    prefix = f"test-{uuid.uuid4().hex[:12]}."
    names = await ensure_topics(stack_settings, extra_prefix=prefix)
    try:
        expected = {prefix + stack_settings.topic(spec.name): spec for spec in load_topic_specs()}
        assert sorted(names) == sorted(expected)
        policies = await _cleanup_policies(stack_settings, names)
        assert policies == {n: spec.config["cleanup.policy"] for n, spec in expected.items()}
        assert policies[prefix + stack_settings.topic("documents")] == "compact"
        before = await _topic_partitions(stack_settings, names)
        assert set(before.values()) == {stack_settings.topic_partitions}

        again = await ensure_topics(stack_settings, extra_prefix=prefix)
        assert again == names
        assert await _topic_partitions(stack_settings, names) == before
    finally:
        admin = admin_client(stack_settings)
        await admin.start()
        try:
            await admin.delete_topics(names)
        finally:
            await admin.close()


def test_index_template_is_installed(stack_settings: StackSettings) -> None:
    name = template_name(stack_settings)
    with httpx.Client(**elastic_http_options(stack_settings), timeout=10) as http:
        response = http.get(f"/_index_template/{name}")
    assert response.status_code == 200, response.text
    template = response.json()["index_templates"][0]["index_template"]
    assert template["index_patterns"] == [f"{stack_settings.elastic_index_prefix}-*"]
    assert template["template"]["mappings"]["properties"]["aichat"]["properties"]["doc_id"] == {
        "type": "keyword"
    }


def test_apply_index_template_with_own_prefix(stack_settings: StackSettings) -> None:
    own = stack_settings.model_copy(
        update={"elastic_index_prefix": f"test-{uuid.uuid4().hex[:12]}"}
    )
    path = f"/_index_template/{template_name(own)}"
    apply_index_template(own)
    with httpx.Client(**elastic_http_options(own), timeout=10) as http:
        try:
            apply_index_template(own)  # idempotent
            assert http.get(path).status_code == 200
        finally:
            http.delete(path)


def test_collection_exists(stack_settings: StackSettings) -> None:
    with httpx.Client(**weaviate_http_options(stack_settings), timeout=10) as http:
        response = http.get(f"/v1/schema/{stack_settings.weaviate_collection}")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["vectorizer"] == "none"
    assert {"doc_id", "text", "version"} <= {p["name"] for p in body["properties"]}
    assert ensure_collection(stack_settings) is False


def test_ensure_collection_creates_once(stack_settings: StackSettings) -> None:
    own = stack_settings.model_copy(
        update={"weaviate_collection": f"TestChunk{uuid.uuid4().hex[:10]}"}
    )
    try:
        assert ensure_collection(own) is True
        assert ensure_collection(own) is False
    finally:
        with httpx.Client(**weaviate_http_options(own), timeout=10) as http:
            http.delete(f"/v1/schema/{own.weaviate_collection}")
