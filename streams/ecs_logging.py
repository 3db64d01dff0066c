"""ECS JSON logging, configured once by each entry point (never at import).

Records carry ``@timestamp``, ``log.level``, ``log.logger``, ``message``,
``service.name``, ``host.hostname``, ``process.pid`` and, when the caller passes
them in ``extra``, ``trace.id`` and our correlation ids under ``aichat.*``::

    log.info("indexed %d chunks", n, extra={"trace_id": ev.trace_id, "doc_id": ev.doc_id})
"""

from __future__ import annotations

import logging
import logging.config
import socket
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

#: ``extra`` keys copied into the record, and where they go in the ECS document
CORRELATION_FIELDS = {
    "trace_id": ("trace", "id"),
    "doc_id": ("aichat", "doc_id"),
    "tenant": ("aichat", "tenant"),
    "query_id": ("aichat", "query_id"),
    "chunk_id": ("aichat", "chunk_id"),
    "topic": ("aichat", "topic"),
    "agent": ("aichat", "agent"),
    "error_id": ("error", "id"),
}


class EcsJsonFormatter(logging.Formatter):
    """One JSON object per line, Elastic Common Schema field names."""

    def __init__(self, service_name: str = "aichat", environment: str = "local") -> None:
        super().__init__()
        self.service_name = service_name
        self.environment = environment
        self.hostname = socket.gethostname()

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "@timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"
            ),
            "log": {"level": record.levelname.lower(), "logger": record.name},
            "message": record.getMessage(),
            "ecs": {"version": "8.11.0"},
            "service": {"name": self.service_name, "environment": self.environment},
            "host": {"hostname": self.hostname},
            "process": {"pid": record.process, "thread": {"name": record.threadName}},
        }
        for key, (group, field) in CORRELATION_FIELDS.items():
            value = record.__dict__.get(key)
            if value is not None:
                doc.setdefault(group, {})[field] = value
        if record.exc_info:
            exc_type, exc, _ = record.exc_info
            doc.setdefault("error", {}).update(
                {
                    "type": exc_type.__name__ if exc_type else "",
                    "message": str(exc),
                    "stack_trace": self.formatException(record.exc_info),
                }
            )
        return orjson.dumps(doc, default=str).decode()


def configure_logging(
    level: str = "INFO",
    *,
    service_name: str = "aichat",
    environment: str = "local",
    json: bool | None = None,
) -> None:
    """Configure the root logger through one ``dictConfig`` (called by entry points only).

    ``json=None`` picks ECS JSON unless stderr is a terminal (humans get plain lines).
    """
    if json is None:
        json = not sys.stderr.isatty()
    formatter: dict[str, Any] = (
        {
            "()": EcsJsonFormatter,
            "service_name": service_name,
            "environment": environment,
        }
        if json
        else {"format": "%(asctime)s %(levelname)-7s %(name)s: %(message)s"}
    )
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {"default": formatter},
            "handlers": {
                "stderr": {
                    "class": "logging.StreamHandler",
                    "stream": "ext://sys.stderr",
                    "formatter": "default",
                }
            },
            "root": {"level": level, "handlers": ["stderr"]},
            "loggers": {
                # chatty third-party loggers
                "aiokafka": {"level": "WARNING"},
                "kafka": {"level": "WARNING"},
                "httpx": {"level": "WARNING"},
                "elastic_transport": {"level": "WARNING"},
                "urllib3": {"level": "WARNING"},
                "sentence_transformers": {"level": "WARNING"},
            },
        }
    )
