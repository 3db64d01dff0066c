"""aiokafka's connection errors while we only ask "is Kafka up yet?".

aiokafka logs each failed connection at ERROR on its ``aiokafka`` logger (``Unable
connect to "127.0.0.1:9092"``, ``Unable connect to node with id 1``, ``Unable to update
metadata``). Inside a health probe or a readiness wait a refused connection is the
expected answer while the broker starts, and the probe reports it itself, as its
detail. Anywhere else (a worker's or the gateway's client, a topic creation after
start-up) it is a real error and must stay one.

So :func:`probing` marks the current context only: this thread's current asyncio task
and the tasks it creates (aiokafka's background tasks of the probe's own client). In
that context aiokafka's records are demoted to DEBUG (kept where aiokafka's logger is
enabled for DEBUG, dropped otherwise); every other thread and task logs as before, also
while a probe runs.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from contextvars import ContextVar

#: the logger of aiokafka's client, where its connection failures are logged
AIOKAFKA_LOGGER = "aiokafka"

_PROBING: ContextVar[bool] = ContextVar("aichat_kafka_probing", default=False)
_install_lock = threading.Lock()


class DemoteWhileProbing(logging.Filter):
    """Demote the records logged inside :func:`probing` to DEBUG; others pass untouched."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not _PROBING.get() or record.levelno <= logging.DEBUG:
            return True
        record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
        # the logger let the record through at its old level: decide again at DEBUG
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


def _install() -> None:
    """Add the filter to aiokafka's logger once (a no-op outside :func:`probing`)."""
    logger = logging.getLogger(AIOKAFKA_LOGGER)
    with _install_lock:
        if not any(isinstance(f, DemoteWhileProbing) for f in logger.filters):
            logger.addFilter(DemoteWhileProbing())


@contextlib.contextmanager
def probing() -> Iterator[None]:
    """Within this block (and the tasks started in it) a connection failure is an answer."""
    _install()
    token = _PROBING.set(True)
    try:
        yield
    finally:
        _PROBING.reset(token)
