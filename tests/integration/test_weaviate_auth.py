"""The local Weaviate as ``aichat stack up`` starts it: nothing without the API key, on REST,
on gRPC (which listens on every interface) and on the internal data API (likewise)."""

from __future__ import annotations

import grpc
import httpx
import pytest
from pydantic import SecretStr
from weaviate.proto.v1 import search_get_pb2, weaviate_pb2_grpc

from infra.config import StackSettings, weaviate_ports
from infra.weaviate.launcher import probe_weaviate
from streams.config import WorkerSettings, load_settings
from streams.endpoints import weaviate_api_key, weaviate_url
from streams.weaviate_connect import weaviate_client

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack_settings() -> StackSettings:
    return load_settings(StackSettings)


def test_rest_answers_only_the_api_key(services: WorkerSettings) -> None:
    meta = f"{weaviate_url(services)}/v1/meta"
    assert httpx.get(meta, timeout=10).status_code == 401
    assert httpx.get(meta, headers={"Authorization": "Bearer wrong"}, timeout=10).status_code == 401
    assert probe_weaviate(services) == (True, "ready, API key accepted")


def test_a_wrong_key_shows_in_the_probe_not_as_down(services: WorkerSettings) -> None:
    wrong = services.model_copy(update={"weaviate_api_key": SecretStr("wrong")})
    assert probe_weaviate(wrong) == (False, "401: API key refused (AICHAT_WEAVIATE_API_KEY(_FILE))")


async def test_grpc_refuses_a_search_without_the_key(services: WorkerSettings) -> None:
    """gRPC listens on every interface (Weaviate has no bind address for it): the key guards it."""
    request = search_get_pb2.SearchRequest(collection=services.weaviate_collection, limit=1,
                                           uses_123_api=True, uses_125_api=True, uses_127_api=True)
    key = weaviate_api_key(services)
    assert key
    async with grpc.aio.insecure_channel(
        f"{services.weaviate_host}:{services.weaviate_grpc_port}"
    ) as channel:
        stub = weaviate_pb2_grpc.WeaviateStub(channel)
        for metadata in ((), (("authorization", "Bearer wrong"),)):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.Search(request, metadata=metadata, timeout=10)
            # Weaviate 1.35 answers UNKNOWN "extract auth: unauthorized: invalid api key"
            assert "unauthorized" in (refused.value.details() or "").lower() or (
                refused.value.code() == grpc.StatusCode.UNAUTHENTICATED), refused.value
        await stub.Search(request, metadata=(("authorization", f"Bearer {key}"),), timeout=10)
    keyed = weaviate_client(services)  # and the project's own client sends it on gRPC too
    await keyed.connect()
    try:
        await keyed.collections.use(services.weaviate_collection).query.fetch_objects(limit=1)
    finally:
        await keyed.close()


def test_the_internal_data_api_wants_the_node_password(stack_settings: StackSettings) -> None:
    data = weaviate_ports(stack_settings).data
    assert httpx.get(f"http://127.0.0.1:{data}/nodes/", timeout=10).status_code == 401
