from __future__ import annotations

import logging
from pathlib import Path

import orjson
import pytest

from streams.config import KafkaSettings, WorkerSettings, load_settings
from streams.ecs_logging import EcsJsonFormatter
from streams.errors import ConfigError


def test_defaults_and_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AICHAT_TOPIC_PREFIX", "staging.")
    s = load_settings(KafkaSettings)
    assert s.topic("documents") == "staging.documents"


def test_a_bad_value_names_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AICHAT_TOPIC_PARTITIONS", "zero")
    monkeypatch.setenv("AICHAT_HYBRID_ALPHA", "2")
    with pytest.raises(ConfigError) as err:
        load_settings(WorkerSettings)
    assert "AICHAT_TOPIC_PARTITIONS" in str(err.value)
    assert "AICHAT_HYBRID_ALPHA" in str(err.value)


def test_secrets_come_from_files_and_are_not_shown(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secret = tmp_path / "key"
    secret.write_text("s3cret\n")
    monkeypatch.setenv("AICHAT_WEAVIATE_API_KEY_FILE", str(secret))
    s = load_settings(WorkerSettings)
    assert s.weaviate_api_key is not None
    assert s.weaviate_api_key.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(s)


def test_an_unreadable_secret_file_names_the_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AICHAT_ELASTIC_API_KEY_FILE", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="AICHAT_ELASTIC_API_KEY_FILE"):
        load_settings(WorkerSettings)


def test_ecs_formatter_emits_json_with_correlation_ids() -> None:
    record = logging.LogRecord(
        "streams.x", logging.INFO, __file__, 1, "indexed %d chunks", (3,), None
    )
    record.trace_id = "t-1"
    record.doc_id = "doc-9"
    doc = orjson.loads(EcsJsonFormatter(service_name="svc").format(record))
    assert doc["message"] == "indexed 3 chunks"
    assert doc["log"]["level"] == "info"
    assert doc["trace"]["id"] == "t-1"
    assert doc["aichat"]["doc_id"] == "doc-9"
    assert doc["service"]["name"] == "svc"
    assert "@timestamp" in doc


def test_ecs_formatter_records_exceptions() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    doc = orjson.loads(EcsJsonFormatter().format(record))
    assert doc["error"]["type"] == "ValueError"
    assert "boom" in doc["error"]["stack_trace"]
