"""Kafka probes and readiness waits against a broker that is not there (yet): aiokafka's
"Unable connect" lines are demoted to DEBUG inside them, and stay errors everywhere else."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Iterator

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaConnectionError

from infra.kafka.probing import probing
from infra.kafka.topics import kafka_node_probe, kafka_probe, wait_for_brokers
from streams.config import KafkaSettings


def _closed_port() -> Iterator[int]:
    """A port on 127.0.0.1 bound by us and never listened on: every connect is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


closed_port = pytest.fixture(_closed_port)
other_closed_port = pytest.fixture(_closed_port)


def _aiokafka(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "aiokafka"]


def _unable_connect(records: list[logging.LogRecord], port: int) -> list[logging.LogRecord]:
    return [r for r in records if "Unable connect" in r.getMessage() and f":{port}" in r.getMessage()]


async def _plain_client_start(port: int) -> None:
    """What a worker's client does: no probe, so a refused connection is an error."""
    admin = AIOKafkaAdminClient(bootstrap_servers=f"127.0.0.1:{port}", request_timeout_ms=1000)
    try:
        with pytest.raises(KafkaConnectionError):
            await admin.start()
    finally:
        await admin.close()


async def test_probe_of_an_unreachable_broker_logs_no_error(
    closed_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="aiokafka")  # as configure_logging sets it
    healthy, detail = await kafka_probe(
        KafkaSettings(kafka_bootstrap=f"127.0.0.1:{closed_port}"), timeout_s=1.0
    )
    assert not healthy
    assert "KafkaConnectionError" in detail
    assert _aiokafka(caplog) == []


async def test_probe_keeps_the_refusals_at_debug(
    closed_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="aiokafka")
    healthy, _ = await kafka_probe(
        KafkaSettings(kafka_bootstrap=f"127.0.0.1:{closed_port}"), timeout_s=1.0
    )
    assert not healthy
    refusals = _unable_connect(_aiokafka(caplog), closed_port)
    assert refusals, "aiokafka logged no refusal: the probe did not try to connect"
    assert {r.levelno for r in refusals} == {logging.DEBUG}
    assert {r.levelname for r in refusals} == {"DEBUG"}


async def test_node_probe_of_an_unreachable_node_logs_no_error(
    closed_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="aiokafka")
    healthy, detail = await kafka_node_probe("127.0.0.1", closed_port, 1, timeout_s=1.0)
    assert not healthy
    assert detail
    assert _aiokafka(caplog) == []


async def test_readiness_wait_logs_no_error_and_still_fails(
    closed_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="aiokafka")
    with pytest.raises(KafkaConnectionError):
        await asyncio.wait_for(
            wait_for_brokers(KafkaSettings(kafka_bootstrap=f"127.0.0.1:{closed_port}"), 1, 0.5),
            10,
        )
    assert _aiokafka(caplog) == []


async def test_a_client_outside_a_probe_still_logs_the_error(
    closed_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="aiokafka")
    with probing():
        pass  # the filter is installed, the probe is over
    await _plain_client_start(closed_port)
    errors = _unable_connect(_aiokafka(caplog), closed_port)
    assert errors
    assert {r.levelno for r in errors} == {logging.ERROR}


async def test_a_concurrent_client_keeps_its_errors_while_a_probe_runs(
    closed_port: int, other_closed_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    """A Kafka outage seen by a real client during a probe is still an ERROR line."""
    caplog.set_level(logging.DEBUG, logger="aiokafka")
    probe = kafka_probe(KafkaSettings(kafka_bootstrap=f"127.0.0.1:{closed_port}"), timeout_s=1.0)
    (healthy, _), _ = await asyncio.gather(probe, _plain_client_start(other_closed_port))
    assert not healthy
    records = _aiokafka(caplog)
    probed, real = _unable_connect(records, closed_port), _unable_connect(records, other_closed_port)
    assert probed and real
    assert {r.levelno for r in probed} == {logging.DEBUG}
    assert {r.levelno for r in real} == {logging.ERROR}
