"""The project's async Weaviate client: REST and gRPC, API key, TLS with a CA file.

Kept apart from the store (streams/vectorstore.py) because it works around the
client library: see :func:`_trust_for_rest`.
"""

from __future__ import annotations

import ssl
from typing import Any

import grpc
import httpx
import weaviate
from weaviate.classes.init import AdditionalConfig, Auth, GrpcConfig

from streams.config import WeaviateSettings
from streams.endpoints import weaviate_api_key


def weaviate_client(settings: WeaviateSettings) -> weaviate.WeaviateAsyncClient:
    """An async client (not yet connected): REST and gRPC on ``weaviate_host``, TLS for both
    when ``weaviate_scheme`` is https, trusting ``weaviate_ca_file`` when set, and the API
    key of :func:`~streams.endpoints.weaviate_api_key`."""
    secure = settings.weaviate_scheme == "https"
    ca_file = settings.weaviate_ca_file if secure else None
    key = weaviate_api_key(settings)
    grpc_config = None
    if ca_file is not None:
        roots = ca_file.read_bytes()
        grpc_config = GrpcConfig(credentials=grpc.ssl_channel_credentials(root_certificates=roots))
    client = weaviate.use_async_with_custom(
        http_host=settings.weaviate_host,
        http_port=settings.weaviate_http_port,
        http_secure=secure,
        grpc_host=settings.weaviate_host,
        grpc_port=settings.weaviate_grpc_port,
        grpc_secure=secure,
        auth_credentials=Auth.api_key(key) if key else None,
        additional_config=AdditionalConfig(grpc_config=grpc_config),
        skip_init_checks=False,
    )
    if ca_file is not None:
        _trust_for_rest(client, ssl.create_default_context(cafile=str(ca_file)))
    return client


def _trust_for_rest(client: weaviate.WeaviateAsyncClient, verify: ssl.SSLContext) -> None:
    """Make the client's REST half trust ``verify``'s CA.

    weaviate-client 4.24 (pinned) takes gRPC roots (``GrpcConfig``) but builds its REST
    httpx client with certifi's roots and no option to change them, short of
    ``SSL_CERT_FILE`` for the whole process. Its connection makes that client in
    ``_make_client``; ours is the same client with ``verify`` (no proxies are configured,
    so the mounts are empty). tests/unit/test_service_clients.py checks this against a real
    TLS server, so an upgrade that changes the internals fails there.
    """
    connection: Any = client._connection

    def make_client(colour: str) -> httpx.AsyncClient | httpx.Client:
        cls = httpx.AsyncClient if colour == "async" else httpx.Client
        return cls(headers=connection._headers, mounts=connection._make_mounts(colour),
                   verify=verify, trust_env=False)

    vars(connection)["_make_client"] = make_client
