"""Elasticsearch from the Maven Central ``integ-test-zip``: unzip once into the cache, config per stack."""

from __future__ import annotations

import logging
import shutil
import stat
import zipfile
from pathlib import Path

import httpx

from infra.config import ES_VERSION, StackSettings, elastic_ports
from infra.elk.templates import apply_index_template, template_name
from infra.errors import ProvisionError
from infra.service import LaunchSpec, ServicePaths, base_env
from infra.system import (
    chown_tree,
    file_lock,
    find_java_home,
    grant_traverse,
    run_step,
    service_user,
)
from streams.endpoints import elastic_http_options

log = logging.getLogger(__name__)

ARTIFACT = f"org.elasticsearch.distribution.integ-test-zip:elasticsearch:{ES_VERSION}:zip"
CENTRAL_URL = (
    "https://repo1.maven.org/maven2/org/elasticsearch/distribution/integ-test-zip/"
    f"elasticsearch/{ES_VERSION}/elasticsearch-{ES_VERSION}.zip"
)


def es_home(settings: StackSettings) -> Path:
    return settings.cache_dir / f"elasticsearch-{ES_VERSION}"


def snapshots_dir(stack_dir: Path) -> Path:
    """The local node's ``path.repo``: where ``aichat backup`` keeps its ``fs`` snapshot
    repository (beside ``data/``, so a lost data directory leaves the snapshots)."""
    return stack_dir / "elasticsearch" / "snapshots"


def render_elasticsearch_yml(
    settings: StackSettings, data_dir: Path, logs_dir: Path, repo_dir: Path | None = None
) -> str:
    """``elasticsearch.yml`` of a single local node, security off (pure)."""
    ports = elastic_ports(settings)
    lines = {
        "cluster.name": "aichat-local",
        "node.name": "aichat-node-1",
        "network.host": "127.0.0.1",
        "http.port": ports.http,
        "transport.port": ports.transport,
        "discovery.type": "single-node",
        "path.data": str(data_dir),
        "path.logs": str(logs_dir),
        "path.repo": str(repo_dir or snapshots_dir(settings.stack_dir)),
        "xpack.security.enabled": "false",
        "xpack.ml.enabled": "false",
        "action.destructive_requires_name": "false",
        "cluster.routing.allocation.disk.threshold_enabled": "false",
    }
    body = "\n".join(f"{key}: {value}" for key, value in lines.items())
    return (
        "# rendered by infra/elk/launcher.py from StackSettings; edits are overwritten\n"
        + body
        + "\n"
    )


def _extract(archive: Path, dest_parent: Path) -> None:
    """Unzip keeping the Unix permission bits (``zipfile`` alone drops them)."""
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            target = dest_parent / info.filename
            if not target.resolve().is_relative_to(dest_parent.resolve()):
                raise ProvisionError(f"{archive}: unsafe path {info.filename}")
            zf.extract(info, dest_parent)
            mode = (info.external_attr >> 16) & 0o777
            if mode:
                target.chmod(mode)
            elif info.filename.startswith(f"elasticsearch-{ES_VERSION}/bin/"):
                target.chmod(target.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def _download(settings: StackSettings, archive: Path) -> None:
    archive.parent.mkdir(parents=True, exist_ok=True)
    if shutil.which("mvn"):
        log.info("elasticsearch: fetching %s with mvn into %s", ARTIFACT, archive.parent)
        run_step(
            [
                "mvn",
                "-B",
                "-q",
                "dependency:copy",
                f"-Dartifact={ARTIFACT}",
                f"-DoutputDirectory={archive.parent}",
            ],
            what="elasticsearch: mvn dependency:copy",
            cwd=archive.parent,
        )
        return
    log.info("elasticsearch: downloading %s", CENTRAL_URL)
    partial = archive.with_suffix(".partial")
    try:
        with httpx.stream("GET", CENTRAL_URL, follow_redirects=True, timeout=60) as response:
            response.raise_for_status()
            with open(partial, "wb") as out:
                for chunk in response.iter_bytes(1 << 20):
                    out.write(chunk)
    except httpx.HTTPError as exc:
        raise ProvisionError(f"elasticsearch: download of {CENTRAL_URL} failed: {exc}") from exc
    partial.rename(archive)


class ElasticLauncher:
    name = "elasticsearch"

    def marker(self, settings: StackSettings) -> str:
        return "elasticsearch"

    def provision(self, settings: StackSettings) -> None:
        home = es_home(settings)
        if (home / "bin" / "elasticsearch").exists():
            return
        with file_lock(settings.cache_dir / "locks" / "elasticsearch.lock"):
            if (home / "bin" / "elasticsearch").exists():
                return
            archive = settings.cache_dir / "downloads" / f"elasticsearch-{ES_VERSION}.zip"
            if not archive.exists():
                _download(settings, archive)
            log.info("elasticsearch: unpacking %s into %s", archive.name, home)
            partial = settings.cache_dir / "elasticsearch.partial"
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
            _extract(archive, partial)
            (partial / home.name).rename(home)
            shutil.rmtree(partial)

    def prepare(self, settings: StackSettings, paths: ServicePaths) -> LaunchSpec:
        home = es_home(settings)
        for src in (home / "config").rglob("*"):
            dest = paths.config / src.relative_to(home / "config")
            if src.is_dir():
                dest.mkdir(parents=True, exist_ok=True)
            elif not dest.exists():
                shutil.copy2(src, dest)
        repo = snapshots_dir(settings.stack_dir)
        repo.mkdir(parents=True, exist_ok=True)  # under paths.root: chowned below with the rest
        yml = render_elasticsearch_yml(settings, paths.data, paths.logs, repo)
        (paths.config / "elasticsearch.yml").write_text(yml, encoding="utf-8")
        run_as = service_user(settings.service_user)
        if run_as is not None:
            grant_traverse(home, run_as)
            grant_traverse(paths.root, run_as)
            chown_tree(paths.root, run_as)
        env = base_env(paths.root) | {
            "ES_JAVA_HOME": str(find_java_home(settings.java_home)),
            "ES_PATH_CONF": str(paths.config),
            "ES_JAVA_OPTS": f"-Xms{settings.es_heap} -Xmx{settings.es_heap}",
        }
        return LaunchSpec((str(home / "bin" / "elasticsearch"),), env, paths.root, run_as)

    def probe(self, settings: StackSettings) -> tuple[bool, str]:
        try:
            with httpx.Client(**elastic_http_options(settings), timeout=3.0) as http:
                response = http.get(
                    "/_cluster/health", params={"wait_for_status": "yellow", "timeout": "1s"}
                )
        except httpx.HTTPError as exc:
            return False, f"not reachable ({type(exc).__name__})"
        if response.status_code != 200:
            return False, f"HTTP {response.status_code}"
        return True, f"cluster {response.json().get('status', '?')}"

    def initialise(self, settings: StackSettings) -> str:
        apply_index_template(settings)
        return f"template {template_name(settings)}"
