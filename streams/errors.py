"""Errors of the streaming side.

    StreamsError                 root; ``retriable`` says whether trying again may help
    ├── ConfigError              bad or missing setting (names the key); never retriable
    ├── DependencyUnavailable    Kafka / Weaviate / Elasticsearch unreachable or overloaded: retriable
    └── EffectFailed             a write was refused for this item (e.g. one object of a batch): not retriable
        └── ModelMismatch        vectors of another embedding model than the index holds

An agent catches per event: retriable errors are retried with bounded backoff,
anything else goes to the dead-letter topic with the error class and message.
"""

from __future__ import annotations


class StreamsError(Exception):
    retriable: bool = False


class ConfigError(StreamsError):
    """A setting is missing or invalid; the message names the key."""


class DependencyUnavailable(StreamsError):
    retriable = True


class EffectFailed(StreamsError):
    """The effect of one event was refused by the sink; retrying the same input will not help."""


class ModelMismatch(EffectFailed):
    """A collection holds vectors of one embedding model; this one is another (re-index)."""


def is_retriable(exc: BaseException) -> bool:
    """Our errors say so themselves (as aiokafka's do); timeouts and connection errors are."""
    if getattr(exc, "retriable", False):
        return True
    return isinstance(exc, TimeoutError | ConnectionError)
