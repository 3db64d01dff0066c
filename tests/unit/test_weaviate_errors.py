"""Weaviate's per-object refusals are dead-lettered; its outages are retried."""

from __future__ import annotations

import asyncio

import pytest
from weaviate.exceptions import WeaviateInsertManyAllFailedError, WeaviateQueryError

from streams.errors import DependencyUnavailable, is_retriable
from streams.weaviate_errors import insert_failed, refused_objects, within

WRONG_LENGTH = "new node has a vector with length 4. Existing nodes have vectors with length 384"


def test_every_object_refused_is_the_objects_fault_not_an_outage() -> None:
    """The client's "all failed" error used to be mapped to an outage: a lone bad
    object was then retried forever and its partition stalled."""
    exc = WeaviateInsertManyAllFailedError(f"Here is the set of all errors: {WRONG_LENGTH}")
    error = insert_failed(exc, 1, "chunk acme/1 v1 #0")
    assert not is_retriable(error)
    assert "length 4" in str(error) and "acme/1" in str(error)


@pytest.mark.parametrize("reason", [
    "store is read-only", "shard is shutting down", "context deadline exceeded",
    "resource exhausted: too many requests",
])
def test_reasons_about_the_server_are_retried(reason: str) -> None:
    assert is_retriable(insert_failed(WeaviateInsertManyAllFailedError(reason), 3, "3 chunks"))
    assert is_retriable(refused_objects([WRONG_LENGTH, reason], 3, "3 chunks"))


def test_some_objects_refused_is_not_retriable_and_names_the_reason() -> None:
    error = refused_objects([WRONG_LENGTH, WRONG_LENGTH], 16, "chunk acme/1 v1 #3")
    assert not is_retriable(error) and WRONG_LENGTH in str(error)
    assert "2 of 16 objects failed; first chunk acme/1 v1 #3" in str(error)


def test_any_other_client_error_is_an_outage() -> None:
    assert is_retriable(insert_failed(WeaviateQueryError("grpc unavailable", "gRPC"), 2, "2 chunks"))


async def test_a_call_past_its_deadline_is_a_retriable_outage() -> None:
    # what weaviate-client does while the server is down: sleep between its own retries
    never = asyncio.Event()
    with pytest.raises(DependencyUnavailable, match="a search gave no answer within 0.05s") as raised:
        await within(0.05, never.wait(), "a search")
    assert is_retriable(raised.value)


async def test_a_call_within_its_deadline_returns_its_result() -> None:
    async def answer() -> int:
        await asyncio.sleep(0)
        return 42

    assert await within(5.0, answer(), "a count") == 42
