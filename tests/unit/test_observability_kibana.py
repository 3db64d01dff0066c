"""Kibana saved objects and Elasticsearch definitions, checked as files (Kibana cannot run here):
every JSON-in-string parses, every reference resolves, every field used is mapped."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from infra.elk.cli import KibanaSettings, import_saved_objects
from infra.elk.cli import run as elk_run
from infra.elk.kibana import (
    DOC_PLACEHOLDER,
    NDJSON_FILE,
    QUERY_PLACEHOLDER,
    SEARCHES,
    TENANT_PLACEHOLDER,
    build_objects,
    to_ndjson,
)
from infra.elk.kibana.queries import (
    JSON_STRING_ATTRIBUTES,
    fields_used,
    is_mapped,
    mapped_fields,
    search_request,
    vis_request,
)
from infra.elk.templates import (
    PRODUCTION_DIR,
    production_requests,
    render_index_templates,
    render_stream_template,
)
from infra.errors import StackError
from streams.config import ElasticSettings

SETTINGS = ElasticSettings(elastic_index_prefix="aichat-events")


def _objects() -> list[dict[str, Any]]:
    return [json.loads(line) for line in NDJSON_FILE.read_text(encoding="utf-8").splitlines()]


def test_the_committed_ndjson_is_what_the_code_builds() -> None:
    assert NDJSON_FILE.read_text(encoding="utf-8") == to_ndjson(build_objects()), \
        "run `python -m infra.elk.kibana` and commit infra/elk/kibana/aichat.ndjson"


def test_the_objects_asked_for_are_there() -> None:
    by_type: dict[str, list[str]] = {}
    for obj in _objects():
        by_type.setdefault(obj["type"], []).append(obj["attributes"]["title"])
    assert len(by_type["index-pattern"]) == 2
    titles = " | ".join(by_type["search"])
    for wanted in ("a document's journey", "a question's journey", "failures and dead letters",
                   "slow answers", "answers rated down"):
        assert wanted in titles
    assert len(by_type["dashboard"]) == 1
    assert len(by_type["visualization"]) == 7


def test_every_json_in_a_string_parses() -> None:
    checked = 0
    for obj in _objects():
        attrs = obj["attributes"]
        for key in JSON_STRING_ATTRIBUTES:
            if key in attrs:
                json.loads(attrs[key])
                checked += 1
        meta = attrs.get("kibanaSavedObjectMeta")
        if meta:
            json.loads(meta["searchSourceJSON"])
            checked += 1
    assert checked >= 20


def test_every_reference_resolves() -> None:
    objects = _objects()
    ids = {(o["type"], o["id"]) for o in objects}
    assert len(ids) == len(objects), "duplicate ids"
    for obj in objects:
        names = {ref["name"] for ref in obj["references"]}
        for ref in obj["references"]:
            assert (ref["type"], ref["id"]) in ids, f"{obj['id']} → missing {ref}"
        meta = obj["attributes"].get("kibanaSavedObjectMeta")
        if meta:
            ref_name = json.loads(meta["searchSourceJSON"]).get("indexRefName")
            if obj["type"] in ("search", "visualization"):
                assert ref_name in names, f"{obj['id']}: indexRefName {ref_name} has no reference"
        if obj["type"] == "dashboard":
            panels = json.loads(obj["attributes"]["panelsJSON"])
            assert {p["panelRefName"] for p in panels} == names
            assert len({p["panelIndex"] for p in panels}) == len(panels)


def test_every_field_used_exists_in_the_index_template() -> None:
    templates = render_index_templates(SETTINGS)
    for name, template in templates.items():
        mapping = mapped_fields(template)
        for obj in _objects():
            for field in fields_used(obj):
                assert is_mapped(field, mapping), f"{obj['id']} uses {field}, not mapped in {name}"


def test_the_saved_searches_become_elasticsearch_queries() -> None:
    by_id = {o["id"]: o for o in _objects()}
    journey = search_request(by_id["aichat-document-journey"],
                             {DOC_PLACEHOLDER: "handbook/x", TENANT_PLACEHOLDER: "acme"})
    assert journey["query"]["query_string"]["query"] == (
        '(aichat.tenant:"acme" AND aichat.doc_id:"handbook/x") '
        'OR aichat.dead_letter.key:"acme/handbook/x"')
    assert journey["sort"][0]["@timestamp"]["order"] == "asc"
    question = search_request(by_id["aichat-question-journey"], {QUERY_PLACEHOLDER: "q1"})
    assert "q1" in question["query"]["query_string"]["query"]
    assert QUERY_PLACEHOLDER not in question["query"]["query_string"]["query"]
    latency = vis_request(by_id["aichat-vis-answer-latency"])
    histogram = latency["aggs"]["2"]
    assert histogram["date_histogram"]["field"] == "@timestamp"
    assert histogram["aggs"]["1"]["percentiles"]["field"] == "aichat.timings_ms.total"


def test_another_index_prefix_gets_its_own_data_views() -> None:
    views = [o for o in build_objects("staging-events") if o["type"] == "index-pattern"]
    assert sorted(v["attributes"]["title"] for v in views) == [
        "staging-events-*", "staging-events-summaries"]
    assert {s.id for s in SEARCHES} <= {o["id"] for o in build_objects("staging-events")}


# -- index templates, production definitions -------------------------------------------------------


def test_events_summaries_and_logs_share_one_bounded_mapping() -> None:
    templates = render_index_templates(SETTINGS)
    assert {n: t["index_patterns"] for n, t in templates.items()} == {
        "aichat-events": ["aichat-events-*"],
        "aichat-events-summaries": ["aichat-events-summaries*"],
        "aichat-events-logs": ["aichat-events-logs-*"],
    }
    priorities = [t["priority"] for t in templates.values()]
    assert len(set(priorities)) == 3  # overlapping patterns need distinct priorities
    mappings = [t["template"]["mappings"] for t in templates.values()]
    assert all(m == mappings[0] for m in mappings)
    settings = templates["aichat-events"]["template"]["settings"]
    assert settings["index.mapping.total_fields.limit"] == 500
    assert mappings[0]["dynamic"] is False
    fields = mapped_fields(templates["aichat-events"])
    assert len(fields) < 250  # room below the limit
    for free_form in ("aichat.metadata", "aichat.filters", "labels"):
        assert fields[free_form] == "flattened"


def test_production_adds_lifecycle_policies_and_a_data_stream_template() -> None:
    requests = production_requests(SETTINGS)
    paths = [path for path, _ in requests]
    assert paths[:3] == ["/_ilm/policy/aichat-events-events", "/_ilm/policy/aichat-events-logs",
                         "/_ilm/policy/aichat-stream"]
    bodies = dict(requests)
    events = bodies["/_index_template/aichat-events"]["template"]["settings"]
    assert events["index.lifecycle.name"] == "aichat-events-events"
    assert "number_of_replicas" not in events
    summaries = bodies["/_index_template/aichat-events-summaries"]["template"]["settings"]
    assert "index.lifecycle.name" not in summaries  # one index: a policy would delete it whole
    stream = render_stream_template(SETTINGS)
    assert stream["data_stream"] == {} and stream["index_patterns"] == ["logs-aichat.*-*"]
    for policy_file in PRODUCTION_DIR.glob("ilm-*.json"):
        policy = json.loads(policy_file.read_text())
        assert "delete" in policy["phases"]
        rollover = any("rollover" in phase["actions"] for phase in policy["phases"].values())
        assert rollover == (policy_file.name == "ilm-stream.json"), \
            f"{policy_file.name}: only data streams roll over (daily indices have no alias)"


def test_the_logstash_pipeline_uses_the_shippers_document_id() -> None:
    conf = (PRODUCTION_DIR.parent / "logstash" / "aichat.conf").read_text()
    assert '"%{[@metadata][kafka][topic]}-%{[@metadata][kafka][partition]}-%{[@metadata][kafka][offset]}"' in conf
    for topic in ("documents", "chunks", "embeddings", "indexed", "queries", "answers", "dlq", "logs"):
        assert topic in conf
    assert '"[aichat][vector]"' in conf  # vectors dropped


# -- aichat elk import-kibana ---------------------------------------------------------------------


def _kibana(status: int, body: dict[str, Any], seen: list[httpx.Request]) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, json=body)

    return httpx.MockTransport(handler)


def test_import_posts_the_objects_to_the_saved_objects_api() -> None:
    seen: list[httpx.Request] = []
    settings = KibanaSettings(elastic_index_prefix="staging-events", kibana_api_key="k3y")
    result = import_saved_objects(settings, url="http://kibana:5601/", space="ops",
                                  transport=_kibana(200, {"success": True, "successCount": 12}, seen))
    assert result.success and result.count == 12
    request = seen[0]
    assert request.method == "POST"
    assert str(request.url) == "http://kibana:5601/s/ops/api/saved_objects/_import?overwrite=true"
    assert request.headers["kbn-xsrf"]
    assert request.headers["authorization"] == "ApiKey k3y"
    body = request.read()
    assert b'filename="aichat.ndjson"' in body
    assert b"staging-events-summaries" in body


def test_import_reports_kibanas_errors() -> None:
    seen: list[httpx.Request] = []
    errors = [{"id": "aichat-overview", "type": "dashboard", "error": {"type": "missing_references"}}]
    result = import_saved_objects(KibanaSettings(), transport=_kibana(
        200, {"success": False, "successCount": 11, "errors": errors}, seen))
    assert not result.success and result.errors == errors
    with pytest.raises(StackError, match="HTTP 403"):
        import_saved_objects(KibanaSettings(), transport=_kibana(403, {"message": "no"}, seen))


def test_import_kibana_command_fails_cleanly_when_kibana_is_unreachable(
        capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    args = argparse.Namespace(elk_command="import-kibana", url="http://127.0.0.1:9", space=None)
    assert elk_run(args) == 1
    assert "unreachable" in capsys.readouterr().err
