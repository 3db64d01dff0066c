"""The container image's Dockerfile and the compose file, checked without a Docker engine.

hadolint lints the Dockerfile; the Dockerfile is parsed to check what an engine would only
show at build or run time: two stages, the model exported in the build exactly as
scripts/install does, every COPY source present and not excluded by .dockerignore, a
non-root USER, a HEALTHCHECK on /health/live, an entry point that is the project's console
script. `docker-compose config` (Compose v2, no engine needed) parses the compose file with
AICHAT_WEAVIATE_API_KEY unset, and every command it and the chart give the image is one the
`aichat` parser accepts. Not exercised here: building the image and running its containers.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import tomllib
from typing import Any

import pytest

from query_gateway.config import GatewaySettings
from streams.cli import build_parser
from tests.deploy.tools import IMAGE_VARIABLES, ROOT, containers, known_variables, render, run, tool

DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "infra" / "docker-compose.yml"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        text = (pending + line).strip()
        pending = ""
        word, _, rest = text.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


def dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    return [p.strip() for p in lines if p.strip() and not p.startswith("#")]


def ignored(path: str) -> bool:
    return any(fnmatch.fnmatch(path, p) or fnmatch.fnmatch(path, p.removeprefix("**/"))
               or path.startswith(p.rstrip("/") + "/") for p in dockerignore())


def test_hadolint_passes() -> None:
    result = run([tool("hadolint"), "--failure-threshold", "warning", DOCKERFILE])
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_is_multi_stage_and_exports_the_model_in_the_build() -> None:
    steps = instructions()
    stages = [rest for word, rest in steps if word == "FROM"]
    assert len(stages) == 2 and stages[0].endswith("AS build") and stages[1].endswith("AS runtime")
    build_runs = " ".join(rest for word, rest in steps[: steps.index(("FROM", stages[1]))]
                          if word == "RUN")
    install = (ROOT / "scripts" / "install").read_text(encoding="utf-8")
    export = re.search(r"python -m streams\.models\.export --onnx", install)
    assert export, "scripts/install no longer exports the model as the Dockerfile does"
    assert f"{export.group(0)} --cache-dir /opt/aichat-models" in build_runs
    final = final_stage()
    copied = [rest for word, rest in final if word == "COPY"]
    assert all(c.startswith("--from=build ") for c in copied)  # nothing but the build's output
    assert any("/opt/aichat-models" in c for c in copied)
    env = " ".join(rest for word, rest in final if word == "ENV")
    assert "AICHAT_MODEL_CACHE_DIR=/opt/aichat-models" in env and "HF_HUB_OFFLINE=1" in env


def test_every_copy_source_exists_and_reaches_the_build_context() -> None:
    for word, rest in instructions():
        if word != "COPY" or rest.startswith("--from="):
            continue
        *sources, _target = shlex.split(rest)
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
            assert not ignored(source), f"COPY {source}: excluded by .dockerignore"
    for secret in (".env", ".git", ".venv", "tests", "infra/k8s"):
        assert ignored(secret), f"{secret} would be sent to the build context"


def test_runs_as_a_non_root_user_with_a_health_check() -> None:
    final = final_stage()
    users = [rest for word, rest in final if word == "USER"]
    assert users, "no USER in the final stage: the container would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("0", "root") and (not user.isdigit() or int(user) >= 1000)
    health = [rest for word, rest in final if word == "HEALTHCHECK"]
    assert len(health) == 1 and "HEALTHCHECK_URL" in health[0]
    env = " ".join(rest for word, rest in final if word == "ENV")
    port = GatewaySettings.model_fields["gateway_port"].default
    assert f"HEALTHCHECK_URL=http://127.0.0.1:{port}/health/live" in env


def test_entry_point_is_the_aichat_console_script() -> None:
    final = dict((word, rest) for word, rest in final_stage() if word in ("ENTRYPOINT", "CMD"))
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert json.loads(final["ENTRYPOINT"]) == ["aichat"]
    assert pyproject["project"]["scripts"]["aichat"] == "streams.cli:main"
    build_parser().parse_args(json.loads(final["CMD"]))  # a sub-command the parser knows


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k != "AICHAT_WEAVIATE_API_KEY"}
    result = run([tool("docker-compose"), "-f", COMPOSE, "config", "--format", "json"], env=env)
    assert result.returncode == 0, result.stderr  # no key needed to parse, start or stop it
    config: dict[str, Any] = json.loads(result.stdout)
    return config


def test_compose_runs_the_processes_from_the_image(compose: dict[str, Any]) -> None:
    services = compose["services"]
    apps = {name: s for name, s in services.items() if s.get("image", "").startswith("aichat:")}
    assert set(apps) == {"secrets", "answer", "ingest", "shipper", "gateway"}
    roles = {name: s["command"] for name, s in apps.items() if name != "secrets"}
    assert roles["gateway"] == ["gateway"]
    for name in ("answer", "ingest", "shipper"):
        assert roles[name] == ["worker", "--role", name]
    for name, command in roles.items():
        build_parser().parse_args(command)
        service = apps[name]
        assert service["build"]["dockerfile"] == "Dockerfile"
        env = service["environment"]
        assert set(env) <= known_variables() | IMAGE_VARIABLES, name
        assert env["AICHAT_KAFKA_BOOTSTRAP"] == "kafka:19092"
        assert env["AICHAT_WEAVIATE_API_KEY_FILE"].startswith("/run/aichat-secrets/")
        assert "AICHAT_WEAVIATE_API_KEY" not in env
    weaviate = services["weaviate"]
    assert "AUTHENTICATION_APIKEY_ALLOWED_KEYS" not in weaviate["environment"]
    assert "/run/aichat-secrets/weaviate-api-key" in " ".join(weaviate["command"])
    assert "INTERNAL://kafka:19092" in services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    published = [p for s in services.values() for p in s.get("ports", [])]
    assert published and all(p["host_ip"] == "127.0.0.1" for p in published)


def test_chart_commands_are_ones_the_image_runs() -> None:
    objects = render("--set", "workers.pipeline.enabled=true", "--set", "workers.ingest.enabled=false",
                     "--set", "workers.answer.enabled=false")
    commands = [c["args"] for _, c in containers(objects)]
    assert ["worker", "--role", "pipeline"] in commands and ["gateway"] in commands
    for command in commands:
        build_parser().parse_args(command)
