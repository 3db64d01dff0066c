"""Prometheus, Alertmanager and the alert webhook as optional services of the local stack.

Debian's packages (``apt-get install prometheus prometheus-alertmanager``; the Alertmanager
binary is ``prometheus-alertmanager`` there, ``alertmanager`` upstream), each on 127.0.0.1
with its own directory under the stack dir like every service (``infra/service.py``):

    prometheus/config/prometheus.yml, rules/, targets/<job>.json   data/ = the TSDB
    alertmanager/config/alertmanager.yml                            data/ = silences, log
    alert-webhook/data/notifications.jsonl                          (infra/prometheus/webhook.py)

``aichat stack up --alerting`` starts the three (``stack.up(settings, services=[...])``
with :data:`ALERTING_SERVICES`); ``down`` stops them with the rest. Prometheus loads the
rules of ``AICHAT_ALERT_RULES_FILE`` (default: the project's) and sends alerts to this
Alertmanager, which delivers each alert, and its resolution, to the webhook. Alertmanager's
own cluster port is off (``--cluster.listen-address=``): one local instance, nothing else
listening.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import httpx

from infra.config import StackSettings
from infra.errors import ProvisionError
from infra.prometheus import RULES_FILE
from infra.prometheus import webhook as webhook_server
from infra.prometheus.render import (
    alertmanager_config,
    local_targets,
    prometheus_config,
    write_targets,
)
from infra.prometheus.settings import ALERTING_SERVICES, AlertingSettings, alerting
from infra.service import Launcher, LaunchSpec, ServicePaths, base_env

__all__ = ["ALERTING_LAUNCHERS", "ALERTING_SERVICES"]


def _binary(*names: str, package: str) -> str:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    raise ProvisionError(f"{names[0]} not found on PATH: install it (Debian/Ubuntu: "
                         f"apt-get install -y {package})")


class _PackagedServer:
    """A server from a Debian package: its config in ``config/<name>.yml``, ready at ``/-/ready``."""

    name: str
    binaries: tuple[str, ...]
    package: str

    def port(self, settings: AlertingSettings) -> int:
        raise NotImplementedError

    def config_file(self, settings: StackSettings) -> Path:
        return settings.service_dir(self.name) / "config" / f"{self.name}.yml"

    def marker(self, settings: StackSettings) -> str:
        return str(self.config_file(settings))  # one per stack dir

    def url(self, settings: StackSettings) -> str:
        return f"http://127.0.0.1:{self.port(alerting(settings))}"

    def provision(self, settings: StackSettings) -> None:
        _binary(*self.binaries, package=self.package)

    def command(self, settings: AlertingSettings, paths: ServicePaths, config: dict[str, Any],
                *flags: str) -> LaunchSpec:
        """Write ``config`` (JSON is YAML) and return the server with its common flags."""
        self.config_file(settings).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        argv = (_binary(*self.binaries, package=self.package),
                f"--config.file={self.config_file(settings)}",
                f"--web.listen-address=127.0.0.1:{self.port(settings)}",
                f"--web.external-url={self.url(settings)}/", *flags)
        return LaunchSpec(argv=argv, env=base_env(paths.root), cwd=paths.root)

    def probe(self, settings: StackSettings) -> tuple[bool, str]:
        return webhook_server.answers_200(f"{self.url(settings)}/-/ready")


class PrometheusLauncher(_PackagedServer):
    name = "prometheus"
    binaries = ("prometheus",)
    package = "prometheus"

    def port(self, settings: AlertingSettings) -> int:
        return settings.prometheus_port

    def prepare(self, settings: StackSettings, paths: ServicePaths) -> LaunchSpec:
        a = alerting(settings)
        rules = paths.config / "rules" / "aichat.rules.yml"
        rules.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(a.alert_rules_file or RULES_FILE, rules)
        write_targets(paths.config, local_targets(a))
        config = prometheus_config(a.model_copy(update={"alert_rules_file": rules}), paths.config)
        return self.command(a, paths, config, f"--storage.tsdb.path={paths.data}",
                            f"--storage.tsdb.retention.time={a.prometheus_retention}")

    def initialise(self, settings: StackSettings) -> str:
        try:
            rules = httpx.get(f"{self.url(settings)}/api/v1/rules", timeout=5).json()
            targets = httpx.get(f"{self.url(settings)}/api/v1/targets", timeout=5).json()
        except (httpx.HTTPError, ValueError) as exc:
            return f"rules and targets not readable yet ({type(exc).__name__})"
        kinds = [r["type"] for g in rules["data"]["groups"] for r in g["rules"]]
        active = targets["data"]["activeTargets"]
        return (f"{kinds.count('alerting')} alert rules, {kinds.count('recording')} recording "
                f"rules, {len(active)} scrape targets")


class AlertmanagerLauncher(_PackagedServer):
    name = "alertmanager"
    binaries = ("prometheus-alertmanager", "alertmanager")
    package = "prometheus-alertmanager"

    def port(self, settings: AlertingSettings) -> int:
        return settings.alertmanager_port

    def prepare(self, settings: StackSettings, paths: ServicePaths) -> LaunchSpec:
        a = alerting(settings)
        return self.command(a, paths, alertmanager_config(a), f"--storage.path={paths.data}",
                            "--cluster.listen-address=")  # no HA peers: nothing else listens

    def initialise(self, settings: StackSettings) -> str:
        return f"delivers to http://127.0.0.1:{alerting(settings).alert_webhook_port}/alerts"


class WebhookLauncher:
    name = "alert-webhook"

    def out(self, settings: StackSettings) -> str:
        return str(settings.service_dir(self.name) / "data" / "notifications.jsonl")

    def marker(self, settings: StackSettings) -> str:
        return self.out(settings)

    def url(self, settings: StackSettings) -> str:
        return f"http://127.0.0.1:{alerting(settings).alert_webhook_port}"

    def provision(self, settings: StackSettings) -> None:
        return None  # this project's own module

    def prepare(self, settings: StackSettings, paths: ServicePaths) -> LaunchSpec:
        argv = (sys.executable, "-m", webhook_server.__name__,
                "--port", str(alerting(settings).alert_webhook_port), "--out", self.out(settings))
        return LaunchSpec(argv=argv, env=base_env(paths.root), cwd=paths.root)

    def probe(self, settings: StackSettings) -> tuple[bool, str]:
        return webhook_server.healthy(self.url(settings))

    def initialise(self, settings: StackSettings) -> str:
        return f"notifications in {self.out(settings)}"


ALERTING_LAUNCHERS: dict[str, Launcher] = {
    launcher.name: launcher
    for launcher in (WebhookLauncher(), AlertmanagerLauncher(), PrometheusLauncher())
}
if tuple(ALERTING_LAUNCHERS) != ALERTING_SERVICES:  # the order infra/prometheus/settings.py names
    raise RuntimeError("ALERTING_SERVICES and ALERTING_LAUNCHERS disagree")
