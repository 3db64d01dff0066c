"""What the clients of Weaviate and Elasticsearch are built with (API key, https, CA file),
and how the local Weaviate is secured: its API key made once, its probe's verdicts."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import streams.elastic_sink
import streams.weaviate_connect
from infra.config import StackSettings
from infra.errors import ProvisionError
from infra.service import ServicePaths
from infra.weaviate.launcher import WeaviateLauncher, probe_weaviate, weaviate_argv
from streams.config import ElasticSettings, WeaviateSettings, WorkerSettings, load_settings
from streams.elastic_sink import elastic_client
from streams.endpoints import (
    elastic_http_options,
    local_weaviate_key_path,
    tls_verify,
    weaviate_api_key,
    weaviate_headers,
    weaviate_http_options,
    weaviate_url,
)
from streams.errors import ConfigError
from streams.weaviate_connect import weaviate_client

#: every Weaviate setting a test relies on, so the environment of the machine cannot change it
LOCAL: dict[str, Any] = {"weaviate_scheme": "http", "weaviate_host": "127.0.0.1",
                         "weaviate_http_port": 8080, "weaviate_grpc_port": 50051,
                         "weaviate_api_key": None, "weaviate_ca_file": None}


def stack(tmp: Path, **overrides: Any) -> StackSettings:
    return StackSettings(**(LOCAL | {"stack_dir": tmp / "stack"} | overrides))


def weaviate(**values: Any) -> WeaviateSettings:
    return WeaviateSettings(**(LOCAL | values))


def prepared(settings: StackSettings) -> dict[str, str]:
    paths = ServicePaths("weaviate", settings.service_dir("weaviate"))
    return WeaviateLauncher().prepare(settings, paths).env


# ---- the local server: API key, no anonymous access, what it binds -------------------------


def test_the_local_server_requires_a_key_made_once_with_mode_0600(tmp_path: Path) -> None:
    s = stack(tmp_path)
    env = prepared(s)
    key_file = local_weaviate_key_path(s.stack_dir)
    key = key_file.read_text(encoding="utf-8").strip()
    assert len(key) >= 40
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert env["AUTHENTICATION_ANONYMOUS_ACCESS_ENABLED"] == "false"
    assert env["AUTHENTICATION_APIKEY_ENABLED"] == "true"
    assert env["AUTHENTICATION_APIKEY_ALLOWED_KEYS"] == key
    assert env["AUTHENTICATION_APIKEY_USERS"] == "aichat"
    # a restart keeps the key every client already has
    assert prepared(s)["AUTHENTICATION_APIKEY_ALLOWED_KEYS"] == key


def test_the_internal_data_api_needs_a_password_and_kagome_is_gone(tmp_path: Path) -> None:
    s = stack(tmp_path)
    env = prepared(s)
    password = (s.service_dir("weaviate") / "cluster-password.secret").read_text().strip()
    assert env["CLUSTER_BASIC_AUTH_USERNAME"] == "node"
    assert env["CLUSTER_BASIC_AUTH_PASSWORD"] == password != env["AUTHENTICATION_APIKEY_ALLOWED_KEYS"]
    assert not [k for k in env if "KAGOME" in k]  # keywords are analysed in the pipeline
    assert env["CLUSTER_BIND_ADDR"] == "127.0.0.1"
    assert weaviate_argv(s, Path("/bin/w"))[1:3] == ("--host", "127.0.0.1")


def test_a_configured_key_is_the_one_the_local_server_accepts(tmp_path: Path) -> None:
    s = stack(tmp_path, weaviate_api_key="configured-key")
    assert prepared(s)["AUTHENTICATION_APIKEY_ALLOWED_KEYS"] == "configured-key"
    assert not local_weaviate_key_path(s.stack_dir).exists()
    with pytest.raises(ProvisionError, match="AICHAT_WEAVIATE_API_KEY"):
        prepared(stack(tmp_path, weaviate_api_key="a,b"))  # Weaviate splits the list on ','


def test_the_local_stack_refuses_https(tmp_path: Path) -> None:
    with pytest.raises(ProvisionError, match="AICHAT_WEAVIATE_SCHEME"):
        prepared(stack(tmp_path, weaviate_scheme="https"))


# ---- which key a client sends ------------------------------------------------------------------


def test_a_client_finds_the_local_stack_key(tmp_path: Path) -> None:
    s = stack(tmp_path)
    worker = weaviate(stack_dir=s.stack_dir, weaviate_api_key=None)
    assert weaviate_api_key(worker) is None and weaviate_headers(worker) == {}  # not started yet
    key = prepared(s)["AUTHENTICATION_APIKEY_ALLOWED_KEYS"]
    assert weaviate_headers(worker) == {"Authorization": f"Bearer {key}"}


def test_a_configured_key_wins_and_a_remote_weaviate_never_gets_the_local_one(
    tmp_path: Path,
) -> None:
    s = stack(tmp_path)
    prepared(s)
    configured = weaviate(stack_dir=s.stack_dir, weaviate_api_key="mine")
    remote = weaviate(stack_dir=s.stack_dir, weaviate_host="weaviate.internal",
                              weaviate_api_key=None)
    assert weaviate_api_key(configured) == "mine"
    assert weaviate_api_key(remote) is None


def test_an_unreadable_local_key_names_the_setting(tmp_path: Path) -> None:
    s = weaviate(stack_dir=tmp_path, weaviate_api_key=None)
    local_weaviate_key_path(tmp_path).mkdir(parents=True)  # unreadable, even for root
    with pytest.raises(ConfigError, match="AICHAT_WEAVIATE_API_KEY"):
        weaviate_api_key(s)


# ---- https and CA files: settings ----------------------------------------------------------


@dataclass
class Pki:
    ca: Path
    cert: Path
    key: Path
    other_ca: Path


def _key_and_name(cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Name]:
    return ec.generate_private_key(ec.SECP256R1()), x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    )


def _ca(path: Path, cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Name]:
    key, name = _key_and_name(cn)
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, name


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    ca_key, ca_name = _ca(tmp_path / "ca.pem", "test CA")
    _ca(tmp_path / "other-ca.pem", "another CA")
    key, name = _key_and_name("127.0.0.1")
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(ca_name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    (tmp_path / "server.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "server.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return Pki(tmp_path / "ca.pem", tmp_path / "server.pem", tmp_path / "server.key",
               tmp_path / "other-ca.pem")


@pytest.mark.parametrize("model", [WeaviateSettings, ElasticSettings, StackSettings, WorkerSettings])
def test_ca_files_need_https_and_must_exist(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, pki: Pki, model: type[Any]
) -> None:
    # every process model checks both (the mixins' validators must not shadow each other)
    weaviate, elastic = issubclass(model, WeaviateSettings), issubclass(model, ElasticSettings)
    if weaviate:
        monkeypatch.setenv("AICHAT_WEAVIATE_CA_FILE", str(pki.ca))
        with pytest.raises(ConfigError, match="AICHAT_WEAVIATE_CA_FILE"):
            load_settings(model, weaviate_scheme="http")
        assert load_settings(model, weaviate_scheme="https").weaviate_ca_file == pki.ca
        monkeypatch.setenv("AICHAT_WEAVIATE_CA_FILE", str(tmp_path / "missing.pem"))
        with pytest.raises(ConfigError, match="AICHAT_WEAVIATE_CA_FILE"):
            load_settings(model, weaviate_scheme="https")
        monkeypatch.delenv("AICHAT_WEAVIATE_CA_FILE")
    if elastic:
        monkeypatch.setenv("AICHAT_ELASTIC_CA_FILE", str(pki.ca))
        with pytest.raises(ConfigError, match="AICHAT_ELASTIC_CA_FILE"):
            load_settings(model, elastic_url="http://es:9200")
        with pytest.raises(ConfigError, match="AICHAT_ELASTIC_URL"):
            load_settings(model, elastic_url="es:9200")
        loaded = load_settings(model, elastic_url="https://es:9200")
        assert isinstance(loaded, ElasticSettings) and loaded.elastic_ca_file == pki.ca


def test_http_options_carry_scheme_key_and_ca(tmp_path: Path, pki: Pki) -> None:
    s = weaviate(weaviate_scheme="https", weaviate_host="weaviate.internal",
                         weaviate_http_port=443, weaviate_api_key="k", weaviate_ca_file=pki.ca,
                         stack_dir=tmp_path)
    options = weaviate_http_options(s)
    assert options["base_url"] == weaviate_url(s) == "https://weaviate.internal:443"
    assert options["headers"] == {"Authorization": "Bearer k"}
    assert isinstance(options["verify"], ssl.SSLContext)
    assert [c["subject"] for c in options["verify"].get_ca_certs()] == [((("commonName", "test CA"),),)]
    assert tls_verify(None) is True
    es = ElasticSettings(elastic_url="https://es:9200/", elastic_api_key="e", elastic_ca_file=pki.ca)
    es_options = elastic_http_options(es)
    assert es_options["base_url"] == "https://es:9200"
    assert es_options["headers"] == {"Authorization": "ApiKey e"}
    assert isinstance(es_options["verify"], ssl.SSLContext)


# ---- client construction (what is passed) ----------------------------------------------------


def test_weaviate_client_over_https_with_a_ca(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, pki: Pki
) -> None:
    calls: dict[str, Any] = {}
    roots: list[bytes] = []
    real_credentials = streams.weaviate_connect.grpc.ssl_channel_credentials

    def credentials(*, root_certificates: bytes) -> Any:
        roots.append(root_certificates)
        return real_credentials(root_certificates=root_certificates)

    def custom(**kwargs: Any) -> Any:
        calls.update(kwargs)
        return real_custom(**kwargs)

    real_custom = streams.weaviate_connect.weaviate.use_async_with_custom
    monkeypatch.setattr(streams.weaviate_connect.weaviate, "use_async_with_custom", custom)
    monkeypatch.setattr(streams.weaviate_connect.grpc, "ssl_channel_credentials", credentials)
    s = weaviate(weaviate_scheme="https", weaviate_host="weaviate.internal",
                         weaviate_http_port=443, weaviate_grpc_port=50443, weaviate_api_key="k",
                         weaviate_ca_file=pki.ca, stack_dir=tmp_path)
    weaviate_client(s)
    assert {k: calls[k] for k in ("http_host", "http_port", "http_secure",
                                  "grpc_host", "grpc_port", "grpc_secure")} == {
        "http_host": "weaviate.internal", "http_port": 443, "http_secure": True,
        "grpc_host": "weaviate.internal", "grpc_port": 50443, "grpc_secure": True,
    }
    assert calls["auth_credentials"].api_key == "k"
    assert roots == [pki.ca.read_bytes()]
    assert calls["additional_config"].grpc_config.credentials is not None


def test_weaviate_client_locally_over_http_with_the_stack_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls: dict[str, Any] = {}
    real_custom = streams.weaviate_connect.weaviate.use_async_with_custom

    def custom(**kwargs: Any) -> Any:
        calls.update(kwargs)
        return real_custom(**kwargs)

    monkeypatch.setattr(streams.weaviate_connect.weaviate, "use_async_with_custom", custom)
    s = stack(tmp_path)
    key = prepared(s)["AUTHENTICATION_APIKEY_ALLOWED_KEYS"]
    weaviate_client(weaviate(stack_dir=s.stack_dir, weaviate_api_key=None))
    assert (calls["http_secure"], calls["grpc_secure"]) == (False, False)
    assert calls["auth_credentials"].api_key == key
    assert calls["additional_config"].grpc_config is None


def test_elastic_client_gets_the_ca_file_and_key(monkeypatch: pytest.MonkeyPatch, pki: Pki) -> None:
    seen: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
    monkeypatch.setattr(streams.elastic_sink, "AsyncElasticsearch",
                        lambda *args, **kwargs: seen.append((args, kwargs)))
    elastic_client(ElasticSettings(elastic_url="https://es:9200", elastic_api_key="e",
                                   elastic_ca_file=pki.ca))
    elastic_client(ElasticSettings(elastic_url="http://127.0.0.1:9200"))
    (tls_args, tls), (_, plain) = seen
    assert tls_args == ("https://es:9200",)
    assert (tls["api_key"], tls["ca_certs"]) == ("e", str(pki.ca))
    assert plain["api_key"] is None and "ca_certs" not in plain


# ---- against a real TLS server ----------------------------------------------------------------


@dataclass
class FakeWeaviate:
    url: str
    port: int
    authorizations: list[str | None]


@pytest.fixture
def tls_weaviate(pki: Pki) -> Iterator[FakeWeaviate]:
    """``/v1/.well-known/ready`` for anyone, ``/v1/meta`` for ``Bearer good`` only, over TLS."""
    seen: list[str | None] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            auth = self.headers.get("Authorization")
            seen.append(auth)
            ok = self.path == "/v1/.well-known/ready" or auth == "Bearer good"
            body = b'{"version": "1.35.2"}' if ok else b'{"error": []}'
            self.send_response(200 if ok else 401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.cert, pki.key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = int(server.server_address[1])
    try:
        yield FakeWeaviate(f"https://127.0.0.1:{port}", port, seen)
    finally:
        server.shutdown()
        server.server_close()


def _https(tmp_path: Path, port: int, ca: Path, key: str | None) -> WeaviateSettings:
    return weaviate(weaviate_scheme="https", weaviate_http_port=port, weaviate_api_key=key,
                            weaviate_ca_file=ca, stack_dir=tmp_path)


async def test_weaviate_client_rest_half_trusts_the_ca_file(
    tmp_path: Path, pki: Pki, tls_weaviate: FakeWeaviate
) -> None:
    # weaviate-client has no REST CA option: streams.weaviate_connect gives it one (its internals)
    client = weaviate_client(_https(tmp_path, tls_weaviate.port, pki.ca, "good"))
    async with client._connection._make_client("async") as http:
        response = await http.get(f"{tls_weaviate.url}/v1/meta")
    assert response.status_code == 200
    assert tls_weaviate.authorizations[-1] == "Bearer good"
    # the same client built the library's way does not trust our CA
    plain = streams.weaviate_connect.weaviate.use_async_with_custom(
        http_host="127.0.0.1", http_port=tls_weaviate.port, http_secure=True,
        grpc_host="127.0.0.1", grpc_port=50051, grpc_secure=True)
    async with plain._connection._make_client("async") as http:
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await http.get(f"{tls_weaviate.url}/v1/meta")


def test_probe_over_tls_tells_a_refused_key_from_an_untrusted_server(
    tmp_path: Path, pki: Pki, tls_weaviate: FakeWeaviate
) -> None:
    port = tls_weaviate.port
    assert probe_weaviate(_https(tmp_path, port, pki.ca, "good")) == (True, "ready, API key accepted")
    assert probe_weaviate(_https(tmp_path, port, pki.ca, "bad")) == (
        False, "401: API key refused (AICHAT_WEAVIATE_API_KEY(_FILE))")
    assert probe_weaviate(_https(tmp_path, port, pki.other_ca, "good")) == (
        False, "TLS certificate not trusted (AICHAT_WEAVIATE_CA_FILE)")


# ---- the probe's verdicts (aichat stack status, readiness during up) ------------------------


def _probe(tmp_path: Path, key: str | None, *, ready: int = 200, anonymous: bool = False,
           accepted: str = "good") -> tuple[bool, str]:
    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/.well-known/ready":
            return httpx.Response(ready)
        auth = request.headers.get("Authorization")
        return httpx.Response(200 if anonymous or auth == f"Bearer {accepted}" else 401)

    s = weaviate(stack_dir=tmp_path, weaviate_api_key=key)
    return probe_weaviate(s, transport=httpx.MockTransport(handle))


def test_probe_verdicts(tmp_path: Path) -> None:
    local_key = local_weaviate_key_path(tmp_path)
    assert _probe(tmp_path, "good") == (True, "ready, API key accepted")
    assert _probe(tmp_path, "bad") == (False, "401: API key refused (AICHAT_WEAVIATE_API_KEY(_FILE))")
    assert _probe(tmp_path, None) == (
        False, f"401: API key required (AICHAT_WEAVIATE_API_KEY unset, no {local_key})")
    assert _probe(tmp_path, None, ready=503) == (False, "ready HTTP 503")
    healthy, detail = _probe(tmp_path, "good", anonymous=True)
    assert healthy and "anonymous access is on" in detail
    local_key.parent.mkdir(parents=True)
    local_key.write_text("stale\n")
    assert _probe(tmp_path, None) == (False, f"401: API key refused ({local_key})")


def test_probe_of_a_server_that_is_down(tmp_path: Path) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    s = weaviate(stack_dir=tmp_path, weaviate_api_key="k")
    assert probe_weaviate(s, transport=httpx.MockTransport(refuse)) == (
        False, "not reachable (ConnectError)")
