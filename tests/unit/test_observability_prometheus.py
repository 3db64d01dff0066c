"""Alert rules and the Grafana dashboard: promtool checks and unit tests, and every metric they
use is one the processes register (the e2e test checks a real scrape of each process too)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
from prometheus_client import REGISTRY

import query_gateway.experiments
import query_gateway.feedback
import query_gateway.metrics
import streams.feedback
import streams.lag
import streams.log_producer
import streams.metrics
from infra.grafana import DASHBOARD_FILE, build_dashboard
from infra.prometheus import (
    CONFIG_FILE,
    RULE_TESTS,
    RULES_FILE,
    SCRAPE_SYNTHETIC,
    exposed_names,
    load_rules,
    metric_names,
    recorded_names,
    rule_expressions,
)

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
# the processes' metric modules, imported so their metrics are registered
_REGISTERED_BY = (streams.metrics, streams.lag, streams.log_producer, query_gateway.metrics,
                  query_gateway.feedback, query_gateway.experiments, streams.feedback)


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        message = "promtool not found (Debian: apt-get install prometheus)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_promtool(), *args], capture_output=True, text=True, timeout=60, check=False)


def test_promtool_checks_the_rules_and_the_scrape_config() -> None:
    rules = _run("check", "rules", str(RULES_FILE))
    assert rules.returncode == 0, rules.stdout + rules.stderr
    config = _run("check", "config", str(CONFIG_FILE))
    assert config.returncode == 0, config.stdout + config.stderr


def test_promtool_unit_tests_of_the_alerts_pass() -> None:
    assert RULE_TESTS, "no infra/prometheus/tests/*.test.yml"
    result = _run("test", "rules", *map(str, RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_asked_for_exists_and_is_unit_tested() -> None:
    alerts = {r["alert"] for g in load_rules()["groups"] for r in g["rules"] if "alert" in r}
    for wanted in ("AichatConsumerLagGrowing", "AichatDeadLetters", "AichatAgentErrorRate",
                   "AichatAnswerErrorRate", "AichatAnswerLatencyHigh", "AichatFreshnessHigh",
                   "AichatReadinessFailing", "AichatWorkerNotReady", "AichatProcessDown"):
        assert wanted in alerts
    tested = "".join(path.read_text() for path in RULE_TESTS)
    untested = sorted(a for a in alerts if f"alertname: {a}\n" not in tested)
    assert not untested, f"alerts without a promtool unit test: {untested}"


def test_every_metric_of_the_rules_and_the_dashboard_is_registered() -> None:
    exposed = exposed_names(REGISTRY.collect())
    recorded = recorded_names()
    used = metric_names(rule_expressions()) | metric_names(_dashboard_expressions())
    assert len(used) > 20
    missing = sorted(n for n in used - SCRAPE_SYNTHETIC - recorded if n not in exposed)
    assert not missing, f"used by rules/dashboard but registered by no process: {missing}"


def test_the_metrics_the_issue_names_are_exposed() -> None:
    exposed = exposed_names(REGISTRY.collect())
    for name in ("aichat_agent_events_total", "aichat_agent_emitted_total", "aichat_dead_letters_total",
                 "aichat_agent_batch_size_bucket", "aichat_embed_seconds_bucket",
                 "aichat_weaviate_upsert_seconds_bucket", "aichat_consumer_lag_messages",
                 "aichat_freshness_seconds_bucket", "aichat_gateway_open_connections",
                 "aichat_gateway_time_to_first_token_seconds_bucket",
                 "aichat_gateway_time_to_done_seconds_bucket",
                 "aichat_gateway_rate_limited_total", "aichat_gateway_auth_refused_total"):
        assert name in exposed, name


def test_labels_stay_low_cardinality() -> None:
    # ids, users and free text would create a series per query/document/user
    unbounded = {"query_id", "doc_id", "chunk_id", "trace_id", "event_id", "session_id", "user",
                 "message", "text", "url", "path", "key", "error"}
    checked = 0
    for family in REGISTRY.collect():
        if not family.name.startswith("aichat_"):
            continue
        for sample in family.samples:
            checked += 1
            assert not set(sample.labels) & unbounded, (family.name, sample.labels)
    assert checked


def _dashboard_expressions() -> list[str]:
    return [t["expr"] for p in build_dashboard()["panels"] for t in p.get("targets", [])]


def test_the_committed_dashboard_is_what_the_code_builds() -> None:
    assert json.loads(DASHBOARD_FILE.read_text(encoding="utf-8")) == build_dashboard(), \
        "run `python -m infra.grafana` and commit infra/grafana/aichat-dashboard.json"
    dashboard = build_dashboard()
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["targets"] and panel["datasource"]["uid"] == "${datasource}"
            assert 0 <= panel["gridPos"]["x"] and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
