"""The deployment checks' tools, and what the chart and the compose file may set.

``scripts/install-chart-tools`` puts helm, kubeconform, hadolint, docker-compose, the pinned
Kubernetes JSON schemas and KEDA's schemas into ``<cache>/chart-tools``; :func:`tool` finds
them there. A missing tool skips its test on a developer's machine, with the command that
installs it, and fails it under ``CI=true``: CI never skips a check.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr

from infra.config import StackSettings
from query_gateway.config import GatewaySettings
from streams.config import ENV_PREFIX, WorkerSettings
from streams.log_producer import LogShipSettings

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "infra" / "k8s" / "aichat"
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
#: the Kubernetes versions scripts/install-chart-tools fetches schemas of (oldest, newest)
KUBERNETES_VERSIONS = ("1.29.0", "1.35.0")
#: what `helm template` renders for (the chart needs 1.28+: the pod-index label)
RENDER_KUBE_VERSION = "1.33.0"
#: variables of the image, not of the application's settings
IMAGE_VARIABLES = {"HEALTHCHECK_URL"}
SETTINGS = (WorkerSettings, GatewaySettings, LogShipSettings, StackSettings)


def tools_dir() -> Path:
    explicit = os.environ.get("AICHAT_CHART_TOOLS_DIR")
    if explicit:
        return Path(explicit)
    cache = os.environ.get("AICHAT_CACHE_DIR")
    return (Path(cache) if cache else Path.home() / ".cache" / "aichat") / "chart-tools"


def missing(what: str) -> None:
    message = f"{what} is not installed: run scripts/install-chart-tools"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def tool(name: str) -> Path:
    path = tools_dir() / "bin" / name
    if not os.access(path, os.X_OK):
        missing(f"{name} ({path})")
    return path


def node_modules() -> Path:
    path = tools_dir() / "keda" / "node_modules"
    if not (path / "@kubernetes-models" / "keda").is_dir():
        missing(f"KEDA's schemas ({path})")
    if shutil.which("node") is None:
        missing("node (Node.js, for KEDA's schemas)")
    return path


def schema_location() -> str:
    root = tools_dir() / "schemas"
    for version in KUBERNETES_VERSIONS:
        if not (root / f"v{version}-local-strict" / "_definitions.json").is_file():
            missing(f"the Kubernetes {version} schemas ({root})")
    return str(root) + "/{{ .NormalizedKubernetesVersion }}-local{{ .StrictSuffix }}/" \
        "{{ .ResourceKind }}{{ .KindSuffix }}.json"


def run(cmd: list[str | Path], *, stdin: str | None = None,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], input=stdin, capture_output=True, text=True,
                          timeout=120, cwd=ROOT, env=env, check=False)


def helm_template(*args: str, release: str = "aichat") -> subprocess.CompletedProcess[str]:
    return run([tool("helm"), "template", release, CHART, "--namespace", "aichat",
                "--kube-version", RENDER_KUBE_VERSION, *args])


def render(*args: str, release: str = "aichat") -> list[dict[str, Any]]:
    """The chart's objects for these ``helm template`` arguments (a failed render fails)."""
    result = helm_template(*args, release=release)
    assert result.returncode == 0, f"helm template {' '.join(args)} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def containers(objects: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(workload, container) of every Deployment and StatefulSet."""
    return [(o, c) for o in objects if o["kind"] in ("Deployment", "StatefulSet")
            for c in o["spec"]["template"]["spec"]["containers"]]


def known_variables() -> set[str]:
    """Every ``AICHAT_*`` variable the processes read, ``*_FILE`` of each secret included."""
    names: set[str] = set()
    for cls in SETTINGS:
        for field, info in cls.model_fields.items():
            names.add(f"{ENV_PREFIX}{field.upper()}")
            if info.annotation in (SecretStr, SecretStr | None):
                names.add(f"{ENV_PREFIX}{field.upper()}_FILE")
    return names


def secret_file_variables() -> set[str]:
    """``AICHAT_<SECRET>_FILE`` of every ``SecretStr`` setting (streams/config.py)."""
    return {f"{ENV_PREFIX}{field.upper()}_FILE" for cls in SETTINGS
            for field, info in cls.model_fields.items()
            if info.annotation in (SecretStr, SecretStr | None)}
