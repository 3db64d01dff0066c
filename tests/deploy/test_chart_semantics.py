"""What the chart renders agrees with the code it deploys: the consumer groups and topics KEDA
measures are the workers' own, the autoscaling bounds follow the partitions, the gateway's
reply partition is its ordinal, the probes hit the ports and paths the processes serve, every
``AICHAT_*`` variable is a setting the processes read, and secrets arrive only as files.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from query_gateway.config import GatewaySettings
from query_gateway.metrics import OPEN_CONNECTIONS
from streams.agents import ROLES
from streams.agents.shipper import SHIPPED_TOPICS
from streams.app import create_app
from streams.config import WorkerSettings
from tests.deploy.tools import (
    IMAGE_VARIABLES,
    ROOT,
    by_kind,
    containers,
    known_variables,
    render,
    secret_file_variables,
)

_AGENT_TOPIC = re.compile(r"app\.agent\(\s*ctx\.topics\.(\w+)")


def consumed_topics(role: str) -> set[str]:
    """The topics a role's agents consume, read from the agents' own code."""
    topics: set[str] = set()
    for agent in ROLES[role]:
        if agent == "shipper":
            topics |= set(SHIPPED_TOPICS)
            continue
        source = (ROOT / "streams" / "agents" / f"{agent}.py").read_text(encoding="utf-8")
        found = _AGENT_TOPIC.findall(source)
        assert found, f"no app.agent(ctx.topics.…) in streams/agents/{agent}.py"
        topics |= set(found)
    return topics


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


@pytest.fixture(scope="module")
def objects() -> list[dict[str, Any]]:
    return render("--set", "kafka.topicPrefix=prod.")


def test_scaled_objects_measure_each_workers_own_group_and_topics(
    objects: list[dict[str, Any]], tmp_path: Path
) -> None:
    scaled = by_kind(objects, "ScaledObject")
    deployments = by_kind(objects, "Deployment")
    assert set(scaled) == set(deployments) == {"aichat-ingest", "aichat-answer", "aichat-shipper"}
    for name, obj in scaled.items():
        role = deployments[name]["spec"]["template"]["spec"]["containers"][0]["args"][2]
        settings = WorkerSettings(topic_prefix="prod.", worker_data_dir=tmp_path)
        group = create_app(settings, role).conf.id  # the app id is the consumer group
        triggers = obj["spec"]["triggers"]
        assert {t["type"] for t in triggers} == {"kafka"}
        assert {t["metadata"]["consumerGroup"] for t in triggers} == {group}
        assert {t["metadata"]["topic"] for t in triggers} == {
            settings.topic(t) for t in consumed_topics(role)}
        assert obj["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                                 "name": name}
        assert "replicas" not in deployments[name]["spec"]  # KEDA owns the count
        # a replica beyond the topics' partitions would get none (4 by default)
        assert obj["spec"]["maxReplicaCount"] == WorkerSettings().topic_partitions == 4


def test_an_index_generation_scales_on_its_own_ingest_group(tmp_path: Path) -> None:
    scaled = by_kind(render("--set", "config.AICHAT_INDEX_GENERATION=G2"), "ScaledObject")
    settings = WorkerSettings(index_generation="G2", worker_data_dir=tmp_path)
    for role in ("ingest", "answer", "shipper"):
        triggers = scaled[f"aichat-{role}"]["spec"]["triggers"]
        assert {t["metadata"]["consumerGroup"] for t in triggers} == {create_app(settings, role).conf.id}
        assert {t["metadata"]["topic"] for t in triggers} == {
            settings.topic(t) for t in consumed_topics(role)}


def test_bounds_follow_the_partitions() -> None:
    objects = render("--set", "kafka.topicPartitions=2", "--set", "kafka.partitions.queries=12",
                     "--set", "kafka.partitions.answers=8")
    scaled = by_kind(objects, "ScaledObject")
    assert scaled["aichat-answer"]["spec"]["maxReplicaCount"] == 12
    assert scaled["aichat-ingest"]["spec"]["maxReplicaCount"] == 2
    assert scaled["aichat-shipper"]["spec"]["maxReplicaCount"] == 12  # it reads queries too
    hpa = by_kind(objects, "HorizontalPodAutoscaler")["aichat-gateway"]["spec"]
    assert hpa["maxReplicas"] == 8  # one answers partition per gateway


def test_gateway_is_a_statefulset_whose_ordinal_is_its_reply_partition(
    objects: list[dict[str, Any]]
) -> None:
    gateway = by_kind(objects, "StatefulSet")["aichat-gateway"]
    container = gateway["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["gateway"]
    partition = env_of(container)["AICHAT_GATEWAY_REPLY_PARTITION"]
    assert partition["valueFrom"]["fieldRef"]["fieldPath"] == \
        "metadata.labels['apps.kubernetes.io/pod-index']"
    hpa = by_kind(objects, "HorizontalPodAutoscaler")["aichat-gateway"]["spec"]
    assert hpa["scaleTargetRef"]["kind"] == "StatefulSet"
    metric = hpa["metrics"][0]["pods"]["metric"]["name"]
    assert metric == OPEN_CONNECTIONS._name == "aichat_gateway_open_connections"
    adapter = (ROOT / "infra" / "k8s" / "external" / "prometheus-adapter-values.yaml").read_text()
    assert metric in adapter


def test_probes_hit_the_ports_and_paths_the_processes_serve(objects: list[dict[str, Any]]) -> None:
    worker_port = WorkerSettings.model_fields["worker_web_port"].default
    gateway_port = GatewaySettings.model_fields["gateway_port"].default
    for workload, container in containers(objects):
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        env = env_of(container)
        if workload["kind"] == "StatefulSet":
            assert ports == {"http": gateway_port, "ops": gateway_port + 1}
            assert env["AICHAT_GATEWAY_HOST"]["value"] == "0.0.0.0"
        else:
            assert ports == {"web": worker_port}
            assert env["AICHAT_WORKER_WEB_PORT"]["value"] == str(worker_port)
            assert env["AICHAT_WORKER_WEB_HOST"]["value"] == "0.0.0.0"
        for probe in ("startupProbe", "livenessProbe"):
            assert container[probe]["httpGet"]["path"] == "/health/live"
        assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
        assert container["resources"]["requests"]["memory"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
    answer_url = f"http://aichat-answer:{worker_port}/health/ready"
    gateway = by_kind(objects, "StatefulSet")["aichat-gateway"]["spec"]["template"]["spec"]
    assert env_of(gateway["containers"][0])["AICHAT_WORKER_HEALTH_URLS"]["value"] == \
        f'["{answer_url}"]'
    assert by_kind(objects, "Service")["aichat-answer"]["spec"]["ports"][0]["port"] == worker_port


def test_every_variable_is_a_setting_and_secrets_are_only_files(
    objects: list[dict[str, Any]]
) -> None:
    known, secret_files = known_variables(), secret_file_variables()
    secretish = re.compile(r"KEY|SECRET|PASSWORD|TOKEN|REDIS_URL")
    for workload, container in containers(objects):
        spec = workload["spec"]["template"]["spec"]
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        items = {i["path"] for v in spec["volumes"] if v["name"] == "secrets"
                 for i in v["secret"]["items"]}
        for name, entry in env_of(container).items():
            assert name in known | IMAGE_VARIABLES, f"{name}: no such setting"
            if name in secret_files:
                path = Path(entry["value"])
                assert str(path.parent) == mounts["secrets"] and path.name in items
            else:
                assert not secretish.search(name.removeprefix("AICHAT_").replace("_FILE", "")) \
                    or name.endswith("_FILE"), f"{name} carries a secret as a value"
    secret = by_kind(objects, "Secret")["aichat"]
    assert set(secret["data"]) == {"weaviate-api-key", "jwt-secret"}


def test_every_component_has_a_disruption_budget_and_a_network_policy(
    objects: list[dict[str, Any]]
) -> None:
    components = {"ingest", "answer", "shipper", "gateway"}
    budgets = by_kind(objects, "PodDisruptionBudget")
    policies = by_kind(objects, "NetworkPolicy")
    assert set(budgets) == set(policies) == {f"aichat-{c}" for c in components}
    for name, budget in budgets.items():
        component = name.removeprefix("aichat-")
        assert budget["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == component
        policy = policies[name]["spec"]
        assert policy["policyTypes"] == ["Ingress", "Egress"]
        assert policy["podSelector"] == budget["spec"]["selector"]
    gateway = policies["aichat-gateway"]["spec"]
    public, ops = gateway["ingress"]
    assert public["ports"] == [{"protocol": "TCP", "port": 8000}] and "from" not in public
    assert ops["ports"] == [{"protocol": "TCP", "port": 8001}] and ops["from"]
    # only the gateways (and Prometheus) reach the answer worker's health port
    answer_from = policies["aichat-answer"]["spec"]["ingress"][0]["from"]
    assert any(p.get("podSelector", {}).get("matchLabels", {}).get(
        "app.kubernetes.io/component") == "gateway" for p in answer_from)
    shipper_from = policies["aichat-shipper"]["spec"]["ingress"][0]["from"]
    assert not any("podSelector" in p for p in shipper_from)
