"""Settings of the local alerting services: Prometheus, Alertmanager and the alert webhook.

They are optional services of the local stack (``aichat stack up --alerting``), on loopback
only, each on its own port:

    prometheus      AICHAT_PROMETHEUS_PORT (9090): scrapes every process, evaluates the rules
    alertmanager    AICHAT_ALERTMANAGER_PORT (9190; Kafka's controller has 9093, the
                    upstream default): groups the alerts and delivers them to
    alert-webhook   AICHAT_ALERT_WEBHOOK_PORT (9191): a receiver that keeps every
                    notification in ``<stack_dir>/alert-webhook/data/notifications.jsonl``
                    and answers ``GET /alerts`` (``infra/prometheus/webhook.py``)

What Prometheus scrapes follows the processes' own settings, read under the same keys:
``aichat up``'s workers on ``AICHAT_WORKER_WEB_PORT`` and the offsets of ``infra/up.py``
(answer +0, shipper +1, ingest +2) and the gateway's operator listener
(``AICHAT_GATEWAY_OPS_PORT``, default ``AICHAT_GATEWAY_PORT`` + 1). Another layout (more
replicas, a test's own ports) names its targets in ``AICHAT_SCRAPE_TARGETS`` (JSON), or
rewrites the file-based discovery files (:func:`infra.prometheus.render.write_targets`),
which Prometheus re-reads by itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, ValidationInfo, field_validator

from infra.config import StackSettings

#: a Prometheus duration as the configs use it: 15s, 5m, 4h, 7d
DURATION = r"^[1-9][0-9]*(ms|s|m|h|d|w)$"
#: the names of the alerting services, in the order they are best started
ALERTING_SERVICES: tuple[str, ...] = ("alert-webhook", "alertmanager", "prometheus")
JOBS = ("aichat-worker", "aichat-gateway")


class ScrapeTarget(BaseModel):
    """One process Prometheus scrapes: its job, ``host:port`` of its ``/metrics``, its role."""

    model_config = {"frozen": True}

    job: Literal["aichat-worker", "aichat-gateway"]
    address: str = Field(pattern=r"^[A-Za-z0-9._-]+:[0-9]{1,5}$")
    role: str | None = Field(None, pattern=r"^[a-z][a-z0-9_-]*$")


class AlertingSettings(StackSettings):
    """The stack's settings plus Prometheus', Alertmanager's and the webhook's."""

    prometheus_port: int = Field(9090, ge=1, le=65535)
    alertmanager_port: int = Field(9190, ge=1, le=65535)
    alert_webhook_port: int = Field(9191, ge=1, le=65535)
    prometheus_scrape_interval: str = Field("15s", pattern=DURATION)
    prometheus_evaluation_interval: str = Field("15s", pattern=DURATION)
    prometheus_retention: str = Field("7d", pattern=DURATION, description="TSDB retention")
    alert_rules_file: Path | None = Field(
        None, description="rules Prometheus loads; default infra/prometheus/rules/aichat.rules.yml"
    )
    alert_group_wait: str = Field("30s", pattern=DURATION, description="Alertmanager group_wait")
    alert_group_interval: str = Field("5m", pattern=DURATION)
    alert_repeat_interval: str = Field("4h", pattern=DURATION)
    scrape_targets: list[ScrapeTarget] | None = Field(
        None, description="JSON list of {job, address, role}; default: aichat up's processes"
    )
    # the processes' own keys, so the default targets follow them
    worker_web_port: int = Field(6066, ge=1, le=65535)
    gateway_port: int = Field(8000, ge=0, le=65535)
    gateway_ops_port: int | None = Field(None, ge=0, le=65535, validate_default=True)

    @field_validator("gateway_ops_port")
    @classmethod
    def _ops_port(cls, value: int | None, info: ValidationInfo) -> int | None:
        gateway_port = info.data.get("gateway_port")
        if value is None and gateway_port:  # as the gateway resolves it
            return int(gateway_port) + 1
        return value


def alerting(settings: StackSettings) -> AlertingSettings:
    """``settings`` as :class:`AlertingSettings`; plain stack settings get the defaults
    (the environment is read by the entry point, ``aichat stack``, never here)."""
    if isinstance(settings, AlertingSettings):
        return settings
    defaults = AlertingSettings.model_construct()
    values = {**{k: getattr(defaults, k, None) for k in AlertingSettings.model_fields},
              **dict(settings)}
    values["gateway_ops_port"] = values.get("gateway_ops_port") or values["gateway_port"] + 1
    return AlertingSettings.model_construct(**values)


def alerting_ports(settings: StackSettings) -> dict[str, tuple[int, ...]]:
    a = alerting(settings)
    return {
        "prometheus": (a.prometheus_port,),
        "alertmanager": (a.alertmanager_port,),
        "alert-webhook": (a.alert_webhook_port,),
    }
