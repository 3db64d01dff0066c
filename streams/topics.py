"""Topic handles of the app. Values and keys are raw bytes: agents decode and
validate themselves, so an invalid payload is dead-lettered instead of being
acked and dropped by Faust's own deserialiser (TRAPS.md)."""

from __future__ import annotations

from dataclasses import dataclass

import faust
from faust.types import TopicT

from streams.config import KafkaSettings

TOPIC_NAMES = ("documents", "chunks", "embeddings", "indexed", "queries", "answers", "dlq", "logs",
               "feedback")


def raw_topic(app: faust.App, *names: str) -> TopicT:
    return app.topic(
        *names,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )


@dataclass(frozen=True)
class Topics:
    documents: TopicT
    chunks: TopicT
    embeddings: TopicT
    indexed: TopicT
    queries: TopicT
    answers: TopicT
    dlq: TopicT
    logs: TopicT
    feedback: TopicT
    names: dict[str, str]

    @classmethod
    def declare(cls, app: faust.App, settings: KafkaSettings) -> Topics:
        names = {base: settings.topic(base) for base in TOPIC_NAMES}
        return cls(**{base: raw_topic(app, name) for base, name in names.items()}, names=names)

    def base_name(self, full_name: str) -> str:
        for base, name in self.names.items():
            if name == full_name:
                return base
        return full_name
