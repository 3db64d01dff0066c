"""What the alerting services read, rendered from the settings (pure, except :func:`write_targets`).

* ``prometheus.yml``: the scrape jobs ``aichat-worker`` and ``aichat-gateway`` (their targets
  in file-based discovery files, ``targets/<job>.json``, which Prometheus re-reads whenever
  they change), Prometheus and Alertmanager themselves, the rule file, and the local
  Alertmanager. Written as JSON, which is YAML too: no YAML library at run time.
* ``alertmanager.yml``: one route, every alert its own group (``group_by: ['...']``), to the
  local webhook, resolved alerts included.
* :func:`shorten_rules`: a copy of the rules whose ``for:`` durations are divided (for a
  drill that cannot wait ten minutes); nothing else of the text changes, so the expressions,
  thresholds, labels and annotations are the production ones.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from infra.prometheus import RULES_FILE
from infra.prometheus.settings import JOBS, AlertingSettings, ScrapeTarget

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"^([0-9]+)(ms|s|m|h|d|w)$")
_FOR = re.compile(r"^(?P<lead>\s+for:\s*)(?P<value>[0-9]+(?:ms|s|m|h|d|w))(?P<rest>\s*(?:#.*)?)$",
                  re.MULTILINE)


def seconds(duration: str) -> float:
    """``"5m"`` → 300.0 (a single-unit Prometheus duration)."""
    match = _DURATION.match(duration)
    if match is None:
        raise ValueError(f"not a Prometheus duration: {duration!r}")
    return int(match.group(1)) * _UNITS[match.group(2)]


def duration(value_s: float) -> str:
    """300 → ``"300s"``; below a second in milliseconds."""
    return f"{round(value_s)}s" if value_s >= 1 else f"{max(1, round(value_s * 1000))}ms"


def local_targets(settings: AlertingSettings) -> list[ScrapeTarget]:
    """``AICHAT_SCRAPE_TARGETS``, else the processes ``aichat up`` starts on this machine."""
    if settings.scrape_targets is not None:
        return list(settings.scrape_targets)
    from infra.up import WORKER_ROLES  # imported late: infra.up starts the stack itself

    base = settings.worker_web_port
    targets = [ScrapeTarget(job="aichat-worker", address=f"127.0.0.1:{base + offset}", role=role)
               for role, offset in WORKER_ROLES]
    if settings.gateway_ops_port:
        targets.append(ScrapeTarget(job="aichat-gateway",
                                    address=f"127.0.0.1:{settings.gateway_ops_port}",
                                    role="gateway"))
    return targets


def file_sd(targets: Iterable[ScrapeTarget], job: str) -> list[dict[str, Any]]:
    """The file-based discovery groups of one job: one group per role."""
    groups: dict[str | None, list[str]] = {}
    for target in targets:
        if target.job == job:
            groups.setdefault(target.role, []).append(target.address)
    return [{"targets": sorted(addresses), "labels": {"role": role} if role else {}}
            for role, addresses in groups.items()]


def write_targets(config_dir: Path, targets: Iterable[ScrapeTarget]) -> dict[str, Path]:
    """Write ``targets/<job>.json`` under ``config_dir`` (each whole, by rename: Prometheus
    never reads half a file); returns the file of each job."""
    folder = config_dir / "targets"
    folder.mkdir(parents=True, exist_ok=True)
    chosen = list(targets)
    written = {}
    for job in JOBS:
        path = folder / f"{job}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(file_sd(chosen, job), indent=2) + "\n", encoding="utf-8")
        tmp.replace(path)
        written[job] = path
    return written


def prometheus_config(settings: AlertingSettings, config_dir: Path) -> dict[str, Any]:
    interval = settings.prometheus_scrape_interval
    timeout = duration(min(seconds(interval), 10.0))
    rules = settings.alert_rules_file or RULES_FILE

    def static(job: str, port: int) -> dict[str, Any]:
        return {"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}

    return {
        "global": {
            "scrape_interval": interval,
            "scrape_timeout": timeout,
            "evaluation_interval": settings.prometheus_evaluation_interval,
        },
        "rule_files": [str(Path(rules).resolve())],
        "alerting": {"alertmanagers": [
            {"static_configs": [{"targets": [f"127.0.0.1:{settings.alertmanager_port}"]}]}]},
        "scrape_configs": [
            *({"job_name": job,
               "file_sd_configs": [{"files": [str(config_dir / "targets" / f"{job}.json")]}]}
              for job in JOBS),
            static("prometheus", settings.prometheus_port),
            static("alertmanager", settings.alertmanager_port),
        ],
    }


def alertmanager_config(settings: AlertingSettings) -> dict[str, Any]:
    return {
        "route": {
            "receiver": "webhook",
            "group_by": ["..."],  # every alert (label set) its own notification
            "group_wait": settings.alert_group_wait,
            "group_interval": settings.alert_group_interval,
            "repeat_interval": settings.alert_repeat_interval,
        },
        "receivers": [{
            "name": "webhook",
            "webhook_configs": [{
                "url": f"http://127.0.0.1:{settings.alert_webhook_port}/alerts",
                "send_resolved": True,
            }],
        }],
    }


def shorten_rules(text: str, divisor: float) -> str:
    """The rule file ``text`` with every ``for:`` divided by ``divisor`` (at least 1 s)."""
    if divisor < 1:
        raise ValueError("divisor must be at least 1")

    def shorter(match: re.Match[str]) -> str:
        value = duration(max(1.0, seconds(match["value"]) / divisor))
        return f"{match['lead']}{value}{match['rest']}"

    return _FOR.sub(shorter, text)
