"""Bring the local stack up, down, and report its state.

``up`` is idempotent: a service whose pid file names a live process that answers its
health check is left alone; a stale pid file is removed; otherwise the service is
provisioned (cache), configured (stack dir), started detached and waited for. The
three services start in parallel; the first failure is raised after all finished.

Redis (gateway rate limits shared across replicas) and the alerting services (Prometheus,
Alertmanager and its webhook: ``infra/prometheus/launcher.py``) are optional: ``up`` starts
them only when named in ``services``; ``status`` lists them once started; ``down`` stops them.

Kafka is one service, ``kafka``, or with ``AICHAT_KAFKA_BROKERS=3`` the nodes ``kafka-1`` …
``kafka-3`` (``infra/kafka/launcher.py``). The name ``kafka`` in ``services`` means all of
them; a node's own name means that node alone (restarting one broker). ``status`` and
``down`` also find the nodes of a stack started with another node count (by their pid
files), so a cluster is never left running unseen.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from infra.config import (
    LOOPBACK_HOSTS,
    MAX_KAFKA_NODES,
    SERVICES,
    StackSettings,
    kafka_bootstrap_problem,
    kafka_node_id,
    kafka_node_names,
    port_conflicts,
    service_hosts,
    service_ports,
)
from infra.elk.launcher import ElasticLauncher
from infra.errors import PortInUse, ServiceFailedToStart, StackError
from infra.kafka.launcher import KafkaLauncher
from infra.proc import (
    group_members,
    is_alive,
    port_is_free,
    read_pid,
    spawn,
    tail,
    terminate_group,
    write_pid,
)
from infra.prometheus.launcher import ALERTING_LAUNCHERS
from infra.prometheus.settings import alerting_ports
from infra.redis.launcher import RedisLauncher
from infra.service import Launcher, ServicePaths, ServiceStatus, service_paths
from infra.weaviate.launcher import WeaviateLauncher

log = logging.getLogger(__name__)

_REDIS = RedisLauncher()
LAUNCHERS: dict[str, Launcher] = {
    "kafka": KafkaLauncher(),
    "elasticsearch": ElasticLauncher(),
    "weaviate": WeaviateLauncher(),
    "redis": _REDIS,
    **ALERTING_LAUNCHERS,  # prometheus, alertmanager, alert-webhook (infra/prometheus/)
}
#: started only when asked for by name
OPTIONAL_SERVICES: tuple[str, ...] = ("redis", *ALERTING_LAUNCHERS)
KNOWN_SERVICES: tuple[str, ...] = (*SERVICES, *OPTIONAL_SERVICES)
#: the names of the nodes of a multi-node Kafka, valid in ``services`` besides KNOWN_SERVICES
KAFKA_NODE_NAMES: tuple[str, ...] = tuple(f"kafka-{i}" for i in range(1, MAX_KAFKA_NODES + 1))
__all__ = [
    "KAFKA_NODE_NAMES",
    "KNOWN_SERVICES",
    "OPTIONAL_SERVICES",
    "ServiceStatus",
    "down",
    "init",
    "status",
    "up",
]
_NODE_LAUNCHERS: dict[str, Launcher] = {
    name: KafkaLauncher(i, clustered=True) for i, name in enumerate(KAFKA_NODE_NAMES, start=1)
}


def _launcher(name: str) -> Launcher:
    return LAUNCHERS.get(name) or _NODE_LAUNCHERS[name]


def _ports(settings: StackSettings) -> dict[str, tuple[int, ...]]:
    return {**service_ports(settings), "redis": _REDIS.ports(settings), **alerting_ports(settings)}


def _running_pid(settings: StackSettings, paths: ServicePaths) -> int | None:
    """The pid (= process group) recorded for the service if any process of that group still runs it."""
    pid = read_pid(paths.pid_file)
    if pid is None:
        return None
    marker = _launcher(paths.name).marker(settings)
    if is_alive(pid, marker) or any(is_alive(m, marker) for m in group_members(pid)):
        return pid
    return None


def _found_kafka(settings: StackSettings, *, with_data: bool = False) -> list[str]:
    """Kafka services of this stack dir outside the configured ones that have a pid file
    (or, ``with_data``, any directory): a stack started with another node count."""
    configured = set(kafka_node_names(settings))
    found = []
    for name in ("kafka", *KAFKA_NODE_NAMES):
        paths = service_paths(settings, name)
        if name not in configured and (
            paths.pid_file.exists() or (with_data and paths.data.exists())
        ):
            found.append(name)
    return found


def _settings_for(settings: StackSettings, name: str, found: Sequence[str]) -> StackSettings:
    """The settings a found node was started with: as many nodes as the highest one found."""
    if name not in found:
        return settings
    if name == "kafka":
        return settings.model_copy(update={"kafka_brokers": 1})
    nodes = max(kafka_node_id(n) or 1 for n in found if n != "kafka")
    return settings.model_copy(update={"kafka_brokers": max(nodes, settings.kafka_brokers)})


def _status_of(settings: StackSettings, name: str) -> ServiceStatus:
    ports = _ports(settings)[name]
    pid = _running_pid(settings, service_paths(settings, name))
    healthy, detail = _launcher(name).probe(settings)
    if healthy and pid is None:
        detail += " (not started by this stack)"
    return ServiceStatus(name, pid, ports, healthy, detail)


def status(settings: StackSettings) -> list[ServiceStatus]:
    """The core services (each Kafka node), plus an optional one or a Kafka node of another
    node count that this stack started (it has a pid file)."""
    found = _found_kafka(settings)
    kafka = list(kafka_node_names(settings))
    if found and kafka == ["kafka"] and not service_paths(settings, "kafka").pid_file.exists():
        kafka = []  # started as a cluster (`up --brokers 3`): its nodes stand in for it
    names = [*kafka, *found, *SERVICES[1:]] + [
        n for n in OPTIONAL_SERVICES if service_paths(settings, n).pid_file.exists()
    ]
    with ThreadPoolExecutor(len(names)) as pool:
        return list(pool.map(lambda n: _status_of(_settings_for(settings, n, found), n), names))


def _expand(settings: StackSettings, services: Sequence[str]) -> list[str]:
    """``kafka`` → the configured nodes; other names as given (each once, in order)."""
    names: list[str] = []
    for name in services:
        for one in kafka_node_names(settings) if name == "kafka" else (name,):
            if one not in names:
                names.append(one)
    return names


def _stop(settings: StackSettings, name: str, *, wipe: bool) -> None:
    paths = service_paths(settings, name)
    pid = _running_pid(settings, paths)
    if pid is not None:
        log.info("%s: stopping (pid %s)", name, pid)
        killed = terminate_group(pid, settings.down_timeout_s)
        log.info("%s: %s", name, "killed (SIGKILL)" if killed else "stopped")
    paths.pid_file.unlink(missing_ok=True)
    if wipe and paths.data.exists():
        log.info("%s: wiping %s", name, paths.data)
        shutil.rmtree(paths.data)


def down(
    settings: StackSettings, *, wipe: bool = False, services: Sequence[str] = KNOWN_SERVICES
) -> None:
    """SIGTERM each service's process group, SIGKILL after ``down_timeout_s``; idempotent.

    ``kafka`` stops every Kafka node this stack dir has, whatever the configured count."""
    _check_names(services)
    names = _expand(settings, services)
    if "kafka" in services:
        names += [n for n in _found_kafka(settings, with_data=wipe) if n not in names]
    with ThreadPoolExecutor(len(names) or 1) as pool:
        list(pool.map(lambda n: _stop(settings, n, wipe=wipe), names))


def _check_names(services: Sequence[str]) -> None:
    unknown = sorted(set(services) - set(KNOWN_SERVICES) - set(KAFKA_NODE_NAMES))
    if unknown:
        raise StackError(f"unknown service(s) {unknown}; choose from {list(KNOWN_SERVICES)}")


def _check_nodes(settings: StackSettings, names: Sequence[str]) -> None:
    nodes = kafka_node_names(settings)
    strangers = [n for n in names if kafka_node_id(n) is not None and n not in nodes]
    if strangers:
        raise StackError(
            f"{', '.join(strangers)}: not a node of this stack, whose Kafka is "
            f"{', '.join(nodes)} (AICHAT_KAFKA_BROKERS={settings.kafka_brokers})"
        )


def _check_settings(settings: StackSettings, services: Sequence[str]) -> None:
    for name, host in service_hosts(settings).items():
        if name in services and host not in LOOPBACK_HOSTS:
            raise StackError(
                f"{name}: host {host!r} is not local; the stack only runs on 127.0.0.1"
            )
    problems = port_conflicts(_ports(settings))
    if problems:
        raise StackError("port clash: " + "; ".join(problems))
    problem = kafka_bootstrap_problem(settings)
    if problem and any(kafka_node_id(n) is not None for n in services):
        raise StackError(problem)


def _fail(name: str, reason: str, paths: ServicePaths) -> ServiceFailedToStart:
    lines = tail(paths.out_log, 20)
    log.error("%s: %s (log %s)", name, reason, paths.out_log)
    return ServiceFailedToStart(name, reason, paths.out_log, lines)


def _wait_ready(
    settings: StackSettings, name: str, paths: ServicePaths, pid: int, *, ours: bool = True
) -> str:
    """Poll the health check until ``up_timeout_s``; a process we just started is stopped on timeout."""
    launcher = _launcher(name)
    deadline = time.monotonic() + settings.up_timeout_s
    detail = "no answer yet"
    while time.monotonic() < deadline:
        if not is_alive(pid) and not group_members(pid):
            paths.pid_file.unlink(missing_ok=True)
            raise _fail(name, "the process exited during startup", paths)
        healthy, detail = launcher.probe(settings)
        if healthy:
            return detail
        time.sleep(1.0)
    reason = f"not healthy after {settings.up_timeout_s:.0f}s ({detail})"
    if ours:
        terminate_group(pid, settings.down_timeout_s)
        paths.pid_file.unlink(missing_ok=True)
        reason += "; stopped it"
    raise _fail(name, reason, paths)


def _bring_up(settings: StackSettings, name: str) -> ServiceStatus:
    launcher = _launcher(name)
    paths = service_paths(settings, name)
    ports = _ports(settings)[name]
    paths.create()
    pid = _running_pid(settings, paths)
    spawned = False
    if pid is not None:
        log.info("%s: already running (pid %s), checking health", name, pid)
        detail = _wait_ready(settings, name, paths, pid, ours=False)
    else:
        if paths.pid_file.exists():
            log.info("%s: removing stale pid file %s", name, paths.pid_file)
            paths.pid_file.unlink()
        healthy, detail = launcher.probe(settings)
        if healthy:
            log.info("%s: already answering on port %s (not started by this stack)", name, ports[0])
        else:
            for port in ports:
                if not port_is_free("127.0.0.1", port):
                    raise PortInUse(name, port)
            launcher.provision(settings)
            spec = launcher.prepare(settings, paths)
            log.info("%s: starting (log %s)", name, paths.out_log)
            pid = spawn(
                spec.argv, env=spec.env, cwd=spec.cwd, log_path=paths.out_log, run_as=spec.run_as
            )
            spawned = True
            write_pid(paths.pid_file, pid)
            started = time.monotonic()
            detail = _wait_ready(settings, name, paths, pid)
            log.info("%s: ready in %.1fs (%s)", name, time.monotonic() - started, detail)
    try:
        summary = launcher.initialise(settings)
    except StackError as exc:
        raise _fail(name, f"setup after start failed: {exc}", paths) from exc
    log.info("%s: %s", name, summary)
    return ServiceStatus(name, pid, ports, True, f"{detail}; {summary}", started=spawned)


def up(
    settings: StackSettings,
    *,
    wipe: bool = False,
    services: Sequence[str] = SERVICES,
) -> list[ServiceStatus]:
    """Start the services that are not running (in parallel); raise the first failure.

    ``kafka`` is every configured node (all at once: a quorum forms only with most of them)."""
    _check_names(services)
    names = _expand(settings, services)
    _check_nodes(settings, names)
    _check_settings(settings, names)
    if wipe:
        down(settings, wipe=True, services=services)
    with ThreadPoolExecutor(len(names) or 1) as pool:
        futures = [pool.submit(_bring_up, settings, name) for name in names]
    results, errors = [], []
    for future in futures:
        try:
            results.append(future.result())
        except StackError as exc:
            errors.append(exc)
    if errors:
        raise errors[0]
    return results


def init(settings: StackSettings, services: Sequence[str] = SERVICES) -> list[str]:
    """Only the idempotent setup steps, against services already running (e.g. docker compose)."""
    _check_names(services)
    names = _expand(settings, services)
    _check_nodes(settings, names)
    return [f"{name}: {_launcher(name).initialise(settings)}" for name in names]
