"""Log shipping never blocks the process: with Kafka unreachable, records are dropped and counted
(they are still on stderr), the buffer stays bounded, and closing respects its deadline."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import pytest

from streams.log_producer import DROPPED, KafkaLogHandler, LogShipSettings, ship_logs
from tests.support import free_port


@pytest.fixture
def handler() -> Iterator[KafkaLogHandler]:
    # nothing listens on this port: Kafka is "down" for as long as the test runs
    settings = LogShipSettings(kafka_bootstrap=f"127.0.0.1:{free_port()}", log_ship_buffer=10,
                               log_ship_flush_s=0.5)
    h = KafkaLogHandler(settings, "aichat-test")
    yield h
    h.close()


def _logger(handler: logging.Handler) -> logging.Logger:
    logger = logging.getLogger(f"test.logship.{id(handler)}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    return logger


def test_logging_does_not_block_while_kafka_is_down(handler: KafkaLogHandler) -> None:
    before = DROPPED.labels("buffer_full")._value.get()
    logger = _logger(handler)
    started = time.perf_counter()
    for n in range(1000):
        logger.info("record %d", n, extra={"trace_id": "t-1"})
    elapsed = time.perf_counter() - started
    assert elapsed < 2.0, f"1000 log calls took {elapsed:.2f}s"
    assert handler.queued <= 10
    assert DROPPED.labels("buffer_full")._value.get() - before >= 990


def test_close_respects_the_flush_deadline(handler: KafkaLogHandler) -> None:
    _logger(handler).warning("last words")
    started = time.perf_counter()
    handler.close()
    assert time.perf_counter() - started < 3.0
    handler.close()  # idempotent


def test_shipping_can_be_switched_off() -> None:
    assert ship_logs(LogShipSettings(log_ship=False), "aichat-test") is None
