"""``aichat up`` runs answering apart from ingesting, and the ingest worker yields the CPU."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from infra.groups import role_topics
from infra.up import children
from query_gateway.config import GatewaySettings
from streams.config import WorkerSettings, load_settings
from streams.errors import ConfigError


def test_up_starts_an_answer_and_an_ingest_worker_and_no_pipeline(tmp_path: Path) -> None:
    worker = WorkerSettings(worker_web_port=7000, worker_data_dir=tmp_path)
    procs = children(worker, GatewaySettings(gateway_auth="disabled"), tmp_path)
    roles = {c.name: c.argv[c.argv.index("--role") + 1] for c in procs if "--role" in c.argv}
    assert roles == {"answer": "answer", "ingest": "ingest", "shipper": "shipper"}
    ports = {c.name: c.health_url for c in procs}
    # the answer worker keeps the base port: the gateway's readiness checks it by default
    assert ports["answer"] == "http://127.0.0.1:7000/health/ready"
    assert GatewaySettings(gateway_auth="disabled").worker_health_urls == ["http://127.0.0.1:6066/health/ready"]
    assert len({ports["answer"], ports["ingest"], ports["shipper"]}) == 3
    assert [c.name for c in procs][-1] == "gateway"


def test_each_new_role_takes_over_exactly_the_topics_it_consumes() -> None:
    settings = WorkerSettings(topic_prefix="p.")
    assert role_topics(settings, "ingest") == {"p.documents", "p.chunks", "p.embeddings"}
    assert role_topics(settings, "answer") == {"p.queries"}
    assert role_topics(settings, "pipeline") == role_topics(settings, "ingest") | role_topics(settings, "answer")


def test_the_ingest_niceness_is_a_setting_with_a_checked_range(monkeypatch: pytest.MonkeyPatch) -> None:
    assert WorkerSettings().ingest_nice == 0
    monkeypatch.setenv("AICHAT_INGEST_NICE", "25")
    with pytest.raises(ConfigError, match="AICHAT_INGEST_NICE"):
        load_settings(WorkerSettings)


def test_lowering_the_priority_reaches_threads_started_before_and_after() -> None:
    # in a child process: a nice value cannot be lowered back without privilege
    script = """
import os, threading
from streams.niceness import lower_cpu_priority
seen = {}
ready, done = threading.Event(), threading.Event()
def early():
    seen["early_tid"] = threading.get_native_id(); ready.set(); done.wait()
t = threading.Thread(target=early); t.start(); ready.wait()
base = os.getpriority(os.PRIO_PROCESS, 0)
new = lower_cpu_priority(5)
late = []
t2 = threading.Thread(target=lambda: late.append(os.getpriority(os.PRIO_PROCESS, 0))); t2.start(); t2.join()
print(base, new, os.getpriority(os.PRIO_PROCESS, seen["early_tid"]), late[0])
done.set(); t.join()
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    base, new, early, late = map(int, out.stdout.split())
    expected = min(19, base + 5)
    assert (new, early, late) == (expected, expected, expected)
