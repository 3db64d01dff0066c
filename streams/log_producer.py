"""Process logs → the ``logs`` topic, so the shipper puts them into Elasticsearch.

Every long-running process (workers, gateway) keeps its ECS JSON lines on stderr
and, through :class:`KafkaLogHandler`, also produces each record to the ``logs``
topic (keyed by service name). Kafka, not Elasticsearch, is the hop: logs written
while Elasticsearch is down wait in the topic and arrive when it is back.

Logging must never slow the process down or take it with Kafka:

* ``emit`` only formats the record and puts the bytes in a bounded queue; when
  the queue is full the record is dropped and ``aichat_log_records_dropped_total``
  counts it — the caller never blocks, whatever Kafka does;
* a daemon thread with its own event loop and ``AIOKafkaProducer`` drains the
  queue (so an asyncio program's loop is never involved), reconnecting with
  capped backoff while Kafka is unreachable;
* records logged by that thread itself (aiokafka complaining about Kafka) are
  not shipped, so a Kafka outage cannot feed on itself;
* ``close`` (``logging.shutdown`` at exit) flushes what is queued, within a deadline.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time

from aiokafka import AIOKafkaProducer
from prometheus_client import Counter
from pydantic import Field

from streams.backoff import Backoff
from streams.config import KafkaSettings, ObservabilitySettings
from streams.ecs_logging import EcsJsonFormatter

log = logging.getLogger(__name__)
RECONNECT = Backoff(first_s=0.5, max_s=10.0)

SHIPPED = Counter("aichat_log_records_shipped_total", "Log records delivered to the logs topic")
DROPPED = Counter(
    "aichat_log_records_dropped_total",
    "Log records not shipped to Kafka (they are still on stderr), by reason",
    ["reason"],  # buffer_full | kafka_error | shutdown
)


class LogShipSettings(KafkaSettings, ObservabilitySettings):
    """``AICHAT_LOG_SHIP`` (on by default), its buffer and flush deadline."""

    log_ship: bool = Field(True, description="also produce every log record to the logs topic")
    log_ship_buffer: int = Field(10_000, ge=10, le=1_000_000, description="records queued at most")
    log_ship_flush_s: float = Field(3.0, ge=0, le=60, description="flush deadline at exit")


class KafkaLogHandler(logging.Handler):
    def __init__(self, settings: LogShipSettings, service_name: str) -> None:
        super().__init__()
        self.settings = settings
        self.topic = settings.topic("logs")
        self.key = service_name.encode()
        self.setFormatter(EcsJsonFormatter(service_name, settings.environment))
        self._queue: queue.Queue[bytes] = queue.Queue(maxsize=settings.log_ship_buffer)
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name="aichat-logship", daemon=True)
        self._thread.start()

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self._thread.ident or self._closing.is_set():
            return
        try:
            line = self.format(record).encode()
        except Exception:
            self.handleError(record)
            return
        try:
            self._queue.put_nowait(line)
        except queue.Full:
            DROPPED.labels("buffer_full").inc()

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    def close(self) -> None:
        if not self._closing.is_set():
            self._closing.set()
            self._thread.join(self.settings.log_ship_flush_s + 2)
        super().close()

    # -- the shipping thread ---------------------------------------------------------------------

    def _run(self) -> None:
        asyncio.run(self._pump())

    async def _pump(self) -> None:
        producer: AIOKafkaProducer | None = None
        attempt = 0
        flush_until: float | None = None
        while True:
            if self._closing.is_set() and flush_until is None:
                flush_until = time.monotonic() + self.settings.log_ship_flush_s
            if flush_until is not None and (self._queue.empty() or time.monotonic() > flush_until):
                break
            if producer is None:
                if flush_until is not None and attempt:
                    break  # closing, and Kafka is not there: do not wait for it
                producer = await self._connect(attempt)
                if producer is None:
                    attempt += 1  # any count is safe: the backoff caps its exponent
                    continue
                attempt = 0
            batch = self._take(500)
            if not batch:
                await asyncio.sleep(0.05)
                continue
            try:
                futures = [await producer.send(self.topic, value, key=self.key) for value in batch]
                await asyncio.gather(*futures)
                SHIPPED.inc(len(batch))
            except Exception as exc:  # Kafka trouble: these records are lost to Kafka, not to stderr
                DROPPED.labels("kafka_error").inc(len(batch))
                log.debug("log shipping failed: %s", exc)
                await _stop(producer)
                producer = None
        if producer is not None:
            await _stop(producer)
        left = self._queue.qsize()
        if left:
            DROPPED.labels("shutdown").inc(left)

    def _take(self, n: int) -> list[bytes]:
        batch: list[bytes] = []
        while len(batch) < n:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    async def _connect(self, attempt: int) -> AIOKafkaProducer | None:
        if attempt:
            await self._sleep(RECONNECT.delay(attempt))
            if self._closing.is_set():
                return None
        producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            client_id=f"aichat-logship-{self.key.decode()}",
            acks=1,  # logs: one broker's ack is enough; records are also on stderr
            linger_ms=100,
            request_timeout_ms=10_000,
        )
        try:
            await asyncio.wait_for(producer.start(), 15)
            return producer
        except Exception as exc:
            log.debug("log shipping: Kafka not available (%s)", exc)
            await _stop(producer)
            return None

    async def _sleep(self, seconds: float) -> None:
        """Sleep in steps, so closing does not wait for a reconnect backoff."""
        for _ in range(max(1, int(seconds * 10))):
            if self._closing.is_set():
                return
            await asyncio.sleep(0.1)


async def _stop(producer: AIOKafkaProducer) -> None:
    try:
        await asyncio.wait_for(producer.stop(), 5)
    except Exception as exc:
        log.debug("log shipping: producer stop failed: %s", exc)


def ship_logs(settings: LogShipSettings, service_name: str) -> KafkaLogHandler | None:
    """Add a :class:`KafkaLogHandler` to the root logger (entry points only); None when off."""
    if not settings.log_ship:
        return None
    handler = KafkaLogHandler(settings, service_name)
    logging.getLogger().addHandler(handler)
    return handler
