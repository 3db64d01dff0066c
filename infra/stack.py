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

from infra import catalogue
from infra.config import SERVICES, StackSettings, kafka_node_names
from infra.errors import PortInUse, ServiceFailedToStart, StackError
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
from infra.service import ServicePaths, ServiceStatus, service_paths

log = logging.getLogger(__name__)


def _running_pid(settings: StackSettings, paths: ServicePaths) -> int | None:
    """The pid (= process group) recorded for the service if any process of that group still runs it."""
    pid = read_pid(paths.pid_file)
    if pid is None:
        return None
    marker = catalogue.launcher(paths.name).marker(settings)
    if is_alive(pid, marker) or any(is_alive(m, marker) for m in group_members(pid)):
        return pid
    return None


def _status_of(settings: StackSettings, name: str) -> ServiceStatus:
    ports = catalogue.ports(settings)[name]
    pid = _running_pid(settings, service_paths(settings, name))
    healthy, detail = catalogue.launcher(name).probe(settings)
    if healthy and pid is None:
        detail += " (not started by this stack)"
    return ServiceStatus(name, pid, ports, healthy, detail)


def status(settings: StackSettings) -> list[ServiceStatus]:
    """The core services (each Kafka node), plus an optional one or a Kafka node of another
    node count that this stack started (it has a pid file)."""
    found = catalogue.found_kafka(settings)
    kafka = list(kafka_node_names(settings))
    if found and kafka == ["kafka"] and not service_paths(settings, "kafka").pid_file.exists():
        kafka = []  # started as a cluster (`up --brokers 3`): its nodes stand in for it
    names = [*kafka, *found, *SERVICES[1:]] + [
        n for n in catalogue.OPTIONAL_SERVICES if service_paths(settings, n).pid_file.exists()
    ]
    with ThreadPoolExecutor(len(names)) as pool:
        return list(pool.map(
            lambda n: _status_of(catalogue.settings_for(settings, n, found), n), names))


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
    settings: StackSettings,
    *,
    wipe: bool = False,
    services: Sequence[str] = catalogue.KNOWN_SERVICES,
) -> None:
    """SIGTERM each service's process group, SIGKILL after ``down_timeout_s``; idempotent.

    ``kafka`` stops every Kafka node this stack dir has, whatever the configured count."""
    catalogue.check_names(services)
    names = catalogue.expand(settings, services)
    if "kafka" in services:
        names += [n for n in catalogue.found_kafka(settings, with_data=wipe) if n not in names]
    with ThreadPoolExecutor(len(names) or 1) as pool:
        list(pool.map(lambda n: _stop(settings, n, wipe=wipe), names))


def _fail(name: str, reason: str, paths: ServicePaths) -> ServiceFailedToStart:
    lines = tail(paths.out_log, 20)
    log.error("%s: %s (log %s)", name, reason, paths.out_log)
    return ServiceFailedToStart(name, reason, paths.out_log, lines)


def _wait_ready(
    settings: StackSettings, name: str, paths: ServicePaths, pid: int, *, ours: bool = True
) -> str:
    """Poll the health check until ``up_timeout_s``; a process we just started is stopped on timeout."""
    launcher = catalogue.launcher(name)
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
    launcher = catalogue.launcher(name)
    paths = service_paths(settings, name)
    ports = catalogue.ports(settings)[name]
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
    catalogue.check_names(services)
    names = catalogue.expand(settings, services)
    catalogue.check_nodes(settings, names)
    catalogue.check_settings(settings, names)
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
    catalogue.check_names(services)
    names = catalogue.expand(settings, services)
    catalogue.check_nodes(settings, names)
    return [f"{name}: {catalogue.launcher(name).initialise(settings)}" for name in names]
