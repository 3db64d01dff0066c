"""Prometheus alert rules (``rules/``), their promtool unit tests (``tests/``) and a scrape config.

The helpers here read the metric names the rules and the Grafana dashboard use, so a
test can check each against what the processes expose (their registries, or a real
``/metrics`` scrape): a renamed metric must not silently blind an alert.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
RULES_FILE = HERE / "rules" / "aichat.rules.yml"
RULE_TESTS = sorted((HERE / "tests").glob("*.test.yml"))
CONFIG_FILE = HERE / "prometheus.yml"

#: series Prometheus makes itself (``up``) or gets from the blackbox exporter (readiness probes)
SCRAPE_SYNTHETIC = frozenset({"up", "probe_success"})
_METRIC = re.compile(r"(?<![\w:\"'])(aichat[_:][A-Za-z0-9_:]*|up|probe_success)(?=\s*(?:\{|\[|\)|$|\s|==|>|<))")
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
    "unknown": ("",),
}


def load_rules() -> dict[str, Any]:
    import yaml  # PyYAML (test/dev dependency)

    data: dict[str, Any] = yaml.safe_load(RULES_FILE.read_text(encoding="utf-8"))
    return data


def rule_expressions() -> list[str]:
    return [rule["expr"] for group in load_rules()["groups"] for rule in group["rules"]]


def recorded_names() -> set[str]:
    return {rule["record"] for group in load_rules()["groups"] for rule in group["rules"]
            if "record" in rule}


def metric_names(expressions: Iterable[str]) -> set[str]:
    """Metric names in PromQL expressions (ours start with ``aichat``; plus up/probe_success)."""
    return {name for expr in expressions for name in _METRIC.findall(expr)}


def exposed_names(families: Iterable[Any]) -> set[str]:
    """Sample names a registry (or a parsed ``/metrics`` text) can expose, by family type."""
    names: set[str] = set()
    for family in families:
        for suffix in _SUFFIXES.get(family.type, ("",)):
            names.add(family.name + suffix)
    return names
