"""The Helm chart (infra/k8s/aichat) passes `helm lint`, renders, and every object it renders is
valid against the pinned Kubernetes schemas (kubeconform, strict: an unknown field is an error)
of the oldest and newest Kubernetes it is checked for, and its KEDA objects against KEDA's CRD
schemas; with its default values, with the values files for Strimzi, ECK and the Weaviate
chart, and with non-default values (3 gateways, autoscaling off, an existing Secret).
A broken template, a misspelt field or a value of the wrong type fails here.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from tests.deploy.tools import (
    CHART,
    KUBERNETES_VERSIONS,
    RENDER_KUBE_VERSION,
    by_kind,
    helm_template,
    node_modules,
    render,
    run,
    schema_location,
    tool,
)

EXTERNAL = ["-f", str(CHART / "values-strimzi.yaml"), "-f", str(CHART / "values-eck.yaml"),
            "-f", str(CHART / "values-weaviate.yaml")]
#: non-default values: three gateways without autoscaling, no KEDA, a Secret managed elsewhere
#: (RS256 public key, Redis, an LLM key), the pipeline worker instead of ingest + answer
NON_DEFAULT = [
    "--set", "gateway.replicas=3", "--set", "gateway.autoscaling.enabled=false",
    "--set", "keda.enabled=false", "--set", "kafka.topicPartitions=6",
    "--set", "secrets.existingSecret=aichat-external",
    "--set", "gateway.jwt.algorithm=RS256", "--set", "secrets.keys.jwt_secret=",
    "--set", "secrets.keys.jwt_public_key=jwt-public-key.pem",
    "--set", "secrets.keys.redis_url=redis-url",
    "--set", "secrets.keys.generator_api_key=generator-api-key",
    "--set", "config.AICHAT_GENERATOR=openai",
    "--set", "workers.ingest.enabled=false", "--set", "workers.answer.enabled=false",
    "--set", "workers.pipeline.enabled=true",
]
VARIANTS = {"default": [], "external-services": EXTERNAL, "non-default": NON_DEFAULT,
            "no-policies": ["--set", "networkPolicy.enabled=false",
                            "--set", "podDisruptionBudget.enabled=false"]}


@pytest.mark.parametrize("values", [None, "values-strimzi.yaml", "values-eck.yaml",
                                    "values-weaviate.yaml"])
def test_helm_lint_strict(values: str | None) -> None:
    args = ["-f", str(CHART / values)] if values else []
    result = run([tool("helm"), "lint", CHART, "--strict", "--kube-version", RENDER_KUBE_VERSION,
                  *args])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("kube_version", KUBERNETES_VERSIONS)
def test_rendered_objects_are_valid_kubernetes(variant: str, kube_version: str) -> None:
    rendered = helm_template(*VARIANTS[variant])
    assert rendered.returncode == 0, rendered.stderr
    result = run([tool("kubeconform"), "-strict", "-summary", "-output", "json",
                  "-kubernetes-version", kube_version, "-schema-location", schema_location(),
                  "-skip", "ScaledObject", "-"], stdin=rendered.stdout)
    report = json.loads(result.stdout)
    problems = [r for r in report["resources"] if r["status"] != "statusValid"
                and not (r["status"] == "statusSkipped" and r["kind"] == "ScaledObject")]
    assert result.returncode == 0 and not problems, json.dumps(problems, indent=1)
    summary = report["summary"]
    assert summary["valid"] >= 10 and summary["invalid"] == 0 and summary["errors"] == 0


def keda_check(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    modules = node_modules()
    result = run(["node", CHART.parents[2] / "tests" / "deploy" / "keda" / "validate.mjs", modules],
                 stdin=json.dumps(objects))
    assert result.stdout, result.stderr
    checked: list[dict[str, Any]] = json.loads(result.stdout)
    return checked


@pytest.mark.parametrize("variant", ["default", "external-services"])
def test_scaled_objects_are_valid_keda(variant: str) -> None:
    objects = render(*VARIANTS[variant])
    checked = keda_check(objects)
    assert [c for c in checked if c["errors"]] == []
    assert {c["name"] for c in checked} == set(by_kind(objects, "ScaledObject"))
    assert len(checked) == 3  # ingest, answer, shipper


def test_keda_schema_check_catches_a_broken_scaled_object() -> None:
    # the check itself can fail: a lag threshold as a number (KEDA wants strings) and a
    # missing target name are reported
    scaled = next(iter(by_kind(render(), "ScaledObject").values()))
    scaled["spec"]["triggers"][0]["metadata"]["lagThreshold"] = 10
    del scaled["spec"]["scaleTargetRef"]["name"]
    errors = keda_check([scaled])[0]["errors"]
    assert any("lagThreshold" in e for e in errors) and any("name" in e for e in errors)


def test_kubeconform_catches_an_unknown_field() -> None:
    deployment = next(iter(by_kind(render(), "Deployment").values()))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbes"] = {}
    result = run([tool("kubeconform"), "-strict", "-kubernetes-version", KUBERNETES_VERSIONS[0],
                  "-schema-location", schema_location(), "-"], stdin=yaml.safe_dump(deployment))
    assert result.returncode == 1 and "livenessProbes" in result.stdout


def test_non_default_values_render_what_they_say() -> None:
    objects = render(*NON_DEFAULT)
    gateway = by_kind(objects, "StatefulSet")["aichat-gateway"]
    assert gateway["spec"]["replicas"] == 3
    assert not by_kind(objects, "HorizontalPodAutoscaler")
    assert not by_kind(objects, "ScaledObject")
    assert not by_kind(objects, "Secret")  # the existing one is mounted, none is created
    deployments = by_kind(objects, "Deployment")
    assert set(deployments) == {"aichat-pipeline", "aichat-shipper"}
    assert all(d["spec"]["replicas"] == 1 for d in deployments.values())
    volumes = gateway["spec"]["template"]["spec"]["volumes"]
    secret = next(v["secret"] for v in volumes if v["name"] == "secrets")
    assert secret["secretName"] == "aichat-external"
    assert {i["key"] for i in secret["items"]} == {"weaviate-api-key", "jwt-public-key.pem",
                                                     "redis-url"}
    pipeline = deployments["aichat-pipeline"]["spec"]["template"]["spec"]
    items = next(v["secret"]["items"] for v in pipeline["volumes"] if v["name"] == "secrets")
    assert {i["key"] for i in items} == {"weaviate-api-key", "generator-api-key"}


@pytest.mark.parametrize(("args", "message"), [
    (["--set", "gateway.autoscaling.maxReplicas=5"], "answers topic has 4 partitions"),
    (["--set", "gateway.autoscaling.enabled=false", "--set", "gateway.replicas=6"],
     "answers topic has 4 partitions"),
    (["--set", "workers.answer.autoscaling.maxReplicas=9"], "at most 4 partitions"),
    (["--set", "workers.pipeline.enabled=true"], "disable workers.ingest and workers.answer"),
    (["--set", "gateway.jwt.algorithm=RS256"], "needs secrets.keys.jwt_public_key"),
    (["--set", "secrets.keys.redis_url=redis-url"], "give its value in secrets.values"),
    (["--set", "workers.answer.replica=2"], "replica"),  # values.schema.json: unknown key
    (["--set", "kafka.topicPartitions=0"], "topicPartitions"),
])
def test_impossible_values_are_refused(args: list[str], message: str) -> None:
    result = helm_template(*args)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
