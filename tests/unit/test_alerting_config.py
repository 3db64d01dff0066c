"""The local alerting services' configuration (infra/prometheus/render.py, settings.py) and the
alert webhook (webhook.py): what Prometheus and Alertmanager are given passes their own
checkers, the targets follow ``aichat up``'s layout, a drill's rules differ from production in
``for:`` only, and the webhook keeps what Alertmanager posts."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
import yaml

from infra import catalogue
from infra.config import StackSettings
from infra.prometheus import RULES_FILE, load_rules
from infra.prometheus import webhook as hook
from infra.prometheus.render import (
    alertmanager_config,
    local_targets,
    prometheus_config,
    seconds,
    shorten_rules,
    write_targets,
)
from infra.prometheus.settings import ALERTING_SERVICES, AlertingSettings, ScrapeTarget, alerting
from infra.up import WORKER_ROLES
from tests.support import free_port

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        message = f"{name} not found (Debian: apt-get install {package})"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


def test_the_default_targets_are_the_processes_aichat_up_starts() -> None:
    targets = local_targets(AlertingSettings(worker_web_port=7000, gateway_port=7100))
    workers = {t.role: t.address for t in targets if t.job == "aichat-worker"}
    assert workers == {role: f"127.0.0.1:{7000 + offset}" for role, offset in WORKER_ROLES}
    assert [t.address for t in targets if t.job == "aichat-gateway"] == ["127.0.0.1:7101"]
    explicit = [ScrapeTarget(job="aichat-worker", address="127.0.0.1:1234", role="shipper")]
    assert local_targets(AlertingSettings(scrape_targets=explicit)) == explicit


def test_targets_come_from_the_environment_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AICHAT_SCRAPE_TARGETS",
                       '[{"job": "aichat-gateway", "address": "127.0.0.1:8101", "role": "gateway"}]')
    monkeypatch.setenv("AICHAT_PROMETHEUS_PORT", "19090")
    settings = AlertingSettings()
    assert settings.prometheus_port == 19090
    assert [t.address for t in local_targets(settings)] == ["127.0.0.1:8101"]


def test_plain_stack_settings_get_the_default_ports(tmp_path: Path) -> None:
    settings = alerting(StackSettings(stack_dir=tmp_path))
    assert (settings.prometheus_port, settings.alertmanager_port, settings.alert_webhook_port) == \
        (9090, 9190, 9191)
    assert settings.stack_dir == tmp_path
    assert set(ALERTING_SERVICES) <= set(catalogue.OPTIONAL_SERVICES)


def test_promtool_accepts_the_rendered_config(tmp_path: Path) -> None:
    settings = AlertingSettings(stack_dir=tmp_path, prometheus_scrape_interval="1s")
    write_targets(tmp_path, local_targets(settings))
    config = prometheus_config(settings, tmp_path)
    assert config["global"]["scrape_timeout"] == "1s"  # never longer than the interval
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["127.0.0.1:9190"]
    path = tmp_path / "prometheus.yml"
    path.write_text(json.dumps(config), encoding="utf-8")
    result = subprocess.run([_tool("promtool", "prometheus"), "check", "config", str(path)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    groups = json.loads((tmp_path / "targets" / "aichat-worker.json").read_text())
    assert {g["labels"]["role"] for g in groups} == {role for role, _ in WORKER_ROLES}


def test_amtool_accepts_the_rendered_alertmanager_config(tmp_path: Path) -> None:
    config = alertmanager_config(AlertingSettings(alert_webhook_port=19191))
    assert config["receivers"][0]["webhook_configs"][0] == {
        "url": "http://127.0.0.1:19191/alerts", "send_resolved": True}
    path = tmp_path / "alertmanager.yml"
    path.write_text(json.dumps(config), encoding="utf-8")
    result = subprocess.run([_tool("amtool", "prometheus-alertmanager"), "check-config", str(path)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_drill_copy_of_the_rules_shortens_for_and_nothing_else() -> None:
    production = load_rules()["groups"][0]["rules"]
    drill = yaml.safe_load(shorten_rules(RULES_FILE.read_text(encoding="utf-8"), 60))["groups"][0]["rules"]
    assert [{k: v for k, v in r.items() if k != "for"} for r in drill] == \
        [{k: v for k, v in r.items() if k != "for"} for r in production]
    fors = {r["alert"]: (r.get("for"), p.get("for")) for r, p in zip(drill, production, strict=True)
            if "alert" in r}
    assert fors["AichatConsumerLagGrowing"] == ("10s", "10m")
    assert fors["AichatProcessDown"] == ("1s", "1m")
    assert fors["AichatDeadLetters"] == (None, None)
    for short, long in fors.values():
        if long is not None:
            assert seconds(short) == max(1.0, seconds(long) / 60)
    with pytest.raises(ValueError):
        shorten_rules("x", 0.5)


def test_the_webhook_keeps_every_notification(tmp_path: Path) -> None:
    port, out = free_port(), tmp_path / "notifications.jsonl"
    server = hook.serve(port, out)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        assert hook.healthy(url) == (True, "ok")
        alert = {"status": "firing", "labels": {"alertname": "AichatProcessDown", "instance": "w1"},
                 "startsAt": "2026-12-01T00:00:00Z", "endsAt": "0001-01-01T00:00:00Z"}
        before = time.time()
        for status in ("firing", "resolved"):
            payload = {"version": "4", "status": status, "alerts": [{**alert, "status": status}]}
            assert httpx.post(f"{url}/alerts", json=payload).json() == {"stored": 1}
        assert httpx.post(f"{url}/alerts", content=b"not json").status_code == 400
        events = hook.alert_events(hook.fetch(url))
        assert [(e.name, e.status) for e in events] == [("AichatProcessDown", "firing"),
                                                        ("AichatProcessDown", "resolved")]
        assert events[0].matches("AichatProcessDown", "firing", instance="w1")
        assert not events[0].matches("AichatProcessDown", "firing", instance="w2")
        assert all(e.received_at >= before for e in events)
        assert hook.fetch(url, since=time.time() + 60) == []
    finally:
        server.shutdown()
        server.server_close()
    assert len(out.read_text().splitlines()) == 2  # the file outlives the process
