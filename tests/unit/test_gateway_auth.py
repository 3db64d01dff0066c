"""Authentication of the websocket upgrade: the JWT matrix, Origin, claims → principal,
the key configuration, and expiry during a session. In-process transport, no Kafka."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from prometheus_client import REGISTRY
from starlette.testclient import TestClient, WebSocketDenialResponse
from websockets.exceptions import ConnectionClosed, InvalidStatus

from query_gateway.app import create_app
from query_gateway.auth import build_authenticator
from query_gateway.client import ask, connect_gateway, handshake_error
from query_gateway.config import GatewaySettings
from query_gateway.dev_jwt import ensure_secret, mint
from query_gateway.errors import OriginNotAllowed, Unauthorized
from streams.config import load_settings
from streams.errors import ConfigError
from tests.unit.test_gateway_app import (
    FakeTransport,
    query,
    receive_until_final,
    serving,
    settings,
    stop,
)

SECRET = "s3cret-for-tests-only-0123456789-abcdefghij"


def jwt_settings(**overrides: Any) -> GatewaySettings:
    values: dict[str, Any] = {"gateway_auth": "jwt", "jwt_secret": SECRET, "jwt_leeway_s": 0}
    values.update(overrides)
    return settings(**values)


def token(**claims: Any) -> str:
    body: dict[str, Any] = {
        "sub": "alice",
        "tenant": "acme",
        "aud": "aichat",
        "iss": "aichat",
        "exp": int(time.time()) + 600,
    }
    body.update(claims)
    return jwt.encode({k: v for k, v in body.items() if v is not None}, SECRET, algorithm="HS256")


def unsigned(**claims: Any) -> str:
    """An ``alg: none`` token (what an attacker sends hoping the server skips verification)."""

    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(orjson.dumps(data)).rstrip(b"=").decode()

    payload = {"sub": "mallory", "tenant": "acme", "aud": "aichat", "iss": "aichat",
               "exp": int(time.time()) + 600, **claims}
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(payload)}."


def handshake(client: TestClient, url: str, **kwargs: Any) -> None:
    with client.websocket_connect(url, **kwargs):
        pass


def refused(reason: str) -> float:
    value = REGISTRY.get_sample_value("aichat_gateway_auth_refused_total", {"reason": reason})
    return value or 0.0


@pytest.fixture
def transport() -> FakeTransport:
    return FakeTransport()


@pytest.fixture
def client(transport: FakeTransport) -> Any:
    app = create_app(jwt_settings(), transport=transport, checks={})
    with TestClient(app) as test_client:
        yield test_client


# minted when each test runs, not at collection: a long run must not expire them first
BAD_TOKENS: list[tuple[str, Callable[[], str], str, str]] = [
    ("expired", lambda: token(exp=int(time.time()) - 5), "token_expired", "expired"),
    ("alg none", lambda: unsigned(), "invalid_token", "bad_algorithm"),
    ("wrong audience", lambda: token(aud="someone-else"), "invalid_token", "wrong_audience"),
    ("wrong issuer", lambda: token(iss="https://evil.example"), "invalid_token", "wrong_issuer"),
    ("no exp", lambda: token(exp=None), "invalid_token", "missing_claim"),
    ("no aud", lambda: token(aud=None), "invalid_token", "missing_claim"),
    ("no sub", lambda: token(sub=None), "invalid_token", "missing_claim"),
    ("no tenant", lambda: token(tenant=None), "invalid_token", "missing_claim"),
    ("bad tenant", lambda: token(tenant="../other"), "invalid_token", "bad_claim"),
    # "$" matches before a final newline: such a tenant used to pass and fail every query later
    ("tenant ending in a newline", lambda: token(tenant="acme\n"), "invalid_token", "bad_claim"),
    ("user with a control character", lambda: token(sub="alice\n"), "invalid_token", "bad_claim"),
    ("valid for a year", lambda: token(iat=int(time.time()), exp=int(time.time()) + 365 * 86400),
     "invalid_token", "lifetime_too_long"),
    ("a year ahead without iat", lambda: token(exp=int(time.time()) + 365 * 86400),
     "invalid_token", "lifetime_too_long"),
    ("forged", lambda: jwt.encode({"sub": "a", "tenant": "acme", "aud": "aichat", "iss": "aichat",
                           "exp": int(time.time()) + 60}, "x" * 40, algorithm="HS256"),
     "invalid_token", "bad_signature"),
    ("HS512", lambda: jwt.encode({"sub": "a", "aud": "aichat", "iss": "aichat", "exp": int(time.time()) + 60},
                         SECRET + SECRET, algorithm="HS512"), "invalid_token", "bad_algorithm"),
    ("garbage", lambda: "not.a.jwt", "invalid_token", "malformed"),
]


@pytest.mark.parametrize(("case", "mint_bad", "code", "reason"), BAD_TOKENS, ids=[c[0] for c in BAD_TOKENS])
@pytest.mark.parametrize("via", ["header", "query"])
def test_bad_tokens_are_refused_at_the_handshake(
    client: TestClient, transport: FakeTransport, case: str, mint_bad: Callable[[], str], code: str,
    reason: str, via: str,
) -> None:
    bad = mint_bad()
    before = refused(reason)
    with pytest.raises(WebSocketDenialResponse) as denied:
        if via == "header":
            handshake(client, "/ws", headers={"Authorization": f"Bearer {bad}"})
        else:
            handshake(client, f"/ws?token={bad}")
    response = denied.value
    assert response.status_code == 401
    body = response.json()
    assert (body["error"], body["code"]) == ("unauthorized", code)
    assert body["message"] and body["error_id"]
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert refused(reason) == before + 1
    assert transport.published == []


def test_missing_token_and_a_bad_header_are_refused(client: TestClient) -> None:
    with pytest.raises(WebSocketDenialResponse) as denied:
        handshake(client, "/ws")
    assert denied.value.status_code == 401 and denied.value.json()["code"] == "missing_token"
    with pytest.raises(WebSocketDenialResponse) as denied:
        handshake(client, "/ws", headers={"Authorization": f"Basic {token()}"})
    assert denied.value.status_code == 401


def test_hs256_token_against_an_rs256_gateway_is_refused(transport: FakeTransport) -> None:
    """Algorithm confusion: an HS256 token 'signed' with the public key must not pass."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    s = jwt_settings(jwt_algorithm="RS256", jwt_secret=None, jwt_public_key=public_pem)
    good = jwt.encode({"sub": "bob", "tenant": "acme", "aud": "aichat", "iss": "aichat",
                       "exp": int(time.time()) + 60}, private, algorithm="RS256")
    with TestClient(create_app(s, transport=transport, checks={})) as client:
        with client.websocket_connect("/ws", headers={"Authorization": f"Bearer {good}"}) as ws:
            ws.send_json(query())
            assert receive_until_final(ws)[-1]["type"] == "done"
        # sign HS256 with the public key's PEM as the HMAC secret, by hand (PyJWT refuses to)
        header = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=")
        payload = base64.urlsafe_b64encode(orjson.dumps(
            {"sub": "eve", "tenant": "acme", "aud": "aichat", "iss": "aichat",
             "exp": int(time.time()) + 60})).rstrip(b"=")
        signature = base64.urlsafe_b64encode(
            hmac.new(public_pem.encode(), header + b"." + payload, hashlib.sha256).digest()
        ).rstrip(b"=")
        forged = (header + b"." + payload + b"." + signature).decode()
        with pytest.raises(WebSocketDenialResponse) as denied:
            handshake(client, "/ws", headers={"Authorization": f"Bearer {forged}"})
    assert denied.value.status_code == 401
    assert transport.published[0].user == "bob"


def test_claims_become_the_tenant_and_user_of_the_query(
    client: TestClient, transport: FakeTransport
) -> None:
    # ?user= is ignored when auth is on: the identity comes from the token only
    with client.websocket_connect(f"/ws?user=root&token={token(sub='alice@acme', tenant='acme')}") as ws:
        ws.send_json(query())
        assert receive_until_final(ws)[-1]["type"] == "done"
    (event,) = transport.published
    assert (event.user, event.tenant) == ("alice@acme", "acme")


def test_default_tenant_for_tokens_without_one(transport: FakeTransport) -> None:
    app = create_app(jwt_settings(jwt_default_tenant="shared"), transport=transport, checks={})
    with TestClient(app) as client, client.websocket_connect(f"/ws?token={token(tenant=None)}") as ws:
        ws.send_json(query())
        receive_until_final(ws)
    assert transport.published[0].tenant == "shared"


@pytest.mark.parametrize(
    ("origin", "allowed", "ok"),
    [
        (None, [], True),  # not a browser
        ("http://testserver", [], True),  # the gateway's own chat page
        ("https://chat.example.com", ["https://chat.example.com"], True),
        ("https://CHAT.example.com/", ["https://chat.example.com"], True),
        ("https://evil.example", ["https://chat.example.com"], False),
        ("https://evil.example", [], False),
        ("null", [], False),
        ("https://anything.example", ["*"], True),
    ],
)
def test_origin_allowlist(
    transport: FakeTransport, origin: str | None, allowed: list[str], ok: bool
) -> None:
    app = create_app(jwt_settings(gateway_allowed_origins=allowed), transport=transport, checks={})
    headers = {"Authorization": f"Bearer {token()}"}
    if origin is not None:
        headers["Origin"] = origin
    before = refused("origin")
    with TestClient(app) as client:
        if ok:
            with client.websocket_connect("/ws", headers=headers) as ws:
                ws.send_json({"type": "ping"})
                assert ws.receive_json() == {"type": "pong"}
            return
        with pytest.raises(WebSocketDenialResponse) as denied:
            handshake(client, "/ws", headers=headers)
    assert denied.value.status_code == 403
    assert denied.value.json()["code"] == "origin_not_allowed"
    assert refused("origin") == before + 1


def test_origin_is_checked_when_auth_is_disabled(transport: FakeTransport) -> None:
    app = create_app(settings(), transport=transport, checks={})
    with TestClient(app) as client, pytest.raises(WebSocketDenialResponse) as denied:
        handshake(client, "/ws", headers={"Origin": "https://evil.example"})
    assert denied.value.status_code == 403


# -- configuration ---------------------------------------------------------------------------


def test_jwt_without_a_key_fails_at_start_naming_the_setting() -> None:
    with pytest.raises(ConfigError, match="AICHAT_JWT_SECRET_FILE"):
        create_app(settings(gateway_auth="jwt"), transport=FakeTransport())
    with pytest.raises(ConfigError, match="AICHAT_JWT_PUBLIC_KEY_FILE"):
        build_authenticator(settings(gateway_auth="jwt", jwt_algorithm="RS256"))
    with pytest.raises(ConfigError, match="at least 32"):
        build_authenticator(settings(gateway_auth="jwt", jwt_secret="short"))
    with pytest.raises(ConfigError, match="not a PEM public key"):
        build_authenticator(
            settings(gateway_auth="jwt", jwt_algorithm="RS256", jwt_public_key="-----BEGIN nope")
        )


def test_auth_is_on_unless_disabled_explicitly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AICHAT_GATEWAY_AUTH", raising=False)
    assert GatewaySettings().gateway_auth == "jwt"
    monkeypatch.setenv("AICHAT_GATEWAY_AUTH", "off")
    with pytest.raises(ConfigError, match="AICHAT_GATEWAY_AUTH"):
        load_settings(GatewaySettings)


def test_secret_and_public_key_from_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = ensure_secret(tmp_path / "gw" / "secret")
    assert ensure_secret(tmp_path / "gw" / "secret") == secret  # created once
    assert (tmp_path / "gw" / "secret").stat().st_mode & 0o777 == 0o600
    monkeypatch.setenv("AICHAT_JWT_SECRET_FILE", str(tmp_path / "gw" / "secret"))
    s = load_settings(GatewaySettings)
    assert s.jwt_secret is not None and s.jwt_secret.get_secret_value() == secret
    principal = build_authenticator(s).verify(mint(secret, user="u1", tenant="t1"))  # type: ignore[union-attr]
    assert (principal.user, principal.tenant) == ("u1", "t1")

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = tmp_path / "public.pem"
    pem.write_bytes(private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    monkeypatch.setenv("AICHAT_JWT_ALGORITHM", "RS256")
    monkeypatch.setenv("AICHAT_JWT_PUBLIC_KEY_FILE", str(pem))
    s = load_settings(GatewaySettings)
    rs = jwt.encode({"sub": "u2", "tenant": "t2", "aud": "aichat", "iss": "aichat",
                     "exp": int(time.time()) + 60}, private, algorithm="RS256")
    assert build_authenticator(s).verify(rs).user == "u2"  # type: ignore[union-attr]


# -- a real server: client errors and expiry during a session ---------------------------------


async def test_client_raises_the_refusal_and_asks_with_a_token() -> None:
    transport = FakeTransport()
    server, task, url = await serving(jwt_settings(gateway_port=0), transport)
    try:
        with pytest.raises(Unauthorized) as missing:
            _ = [f async for f in ask(url, "hi")]
        assert missing.value.code == "missing_token" and "401" in str(missing.value)
        with pytest.raises(Unauthorized) as expired:
            _ = [f async for f in ask(url, "hi", token=token(exp=int(time.time()) - 1))]
        assert expired.value.code == "token_expired"
        frames = [f async for f in ask(url, "hi", token=token())]
        assert frames[-1]["type"] == "done"
        frames = [f async for f in ask(f"{url}?token={token()}", "hi")]
        assert frames[-1]["type"] == "done"
        with pytest.raises(InvalidStatus) as foreign:
            async with connect_gateway(url, token=token(), origin="https://evil.example"):
                pass
        refusal = handshake_error(foreign.value)
        assert isinstance(refusal, OriginNotAllowed) and refusal.code == "origin_not_allowed"
    finally:
        await stop(server, task)


async def test_token_expiry_ends_the_session_with_an_error_frame_and_4401() -> None:
    transport = FakeTransport(script=lambda event: [])  # the query stays in flight
    server, task, url = await serving(jwt_settings(gateway_port=0, answer_deadline_ms=10_000), transport)
    frames: list[dict[str, Any]] = []
    try:
        short = token(exp=int(time.time()) + 2)
        async with connect_gateway(url, token=short) as ws:
            await ws.send(orjson.dumps(query(id="slow")).decode())
            with pytest.raises(ConnectionClosed) as closed:
                async with asyncio.timeout(6):
                    while True:
                        frames.append(orjson.loads(await ws.recv()))
    finally:
        await stop(server, task)
    assert frames[0]["type"] == "ack"
    assert [(f["id"], f["code"]) for f in frames[1:]] == [("slow", "token_expired"), (None, "token_expired")]
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
    (cancelled,) = transport.cancelled
    assert (cancelled.query_id, cancelled.reason) == (frames[0]["query_id"], "token_expired")


def test_aichat_up_hands_the_gateway_a_local_secret_and_the_page_a_token(tmp_path: Path) -> None:
    from infra.config import StackSettings
    from infra.up import chat_token, gateway_auth_env

    stack_settings = StackSettings(stack_dir=tmp_path / "stack")
    plain = settings(gateway_auth="jwt")  # auth on, no key configured
    env = gateway_auth_env(plain, stack_settings)
    secret_file = Path(env["AICHAT_JWT_SECRET_FILE"])
    assert secret_file.is_relative_to(tmp_path / "stack") and secret_file.stat().st_mode & 0o777 == 0o600
    assert gateway_auth_env(plain, stack_settings) == env  # the same secret next time
    page_token = chat_token(plain, env)
    assert page_token is not None
    gateway = settings(gateway_auth="jwt", jwt_secret=secret_file.read_text().strip())
    principal = build_authenticator(gateway).verify(page_token)  # type: ignore[union-attr]
    assert principal.tenant == "default" and principal.expires_at is not None
    assert principal.expires_at - time.time() > 11 * 3600
    # a configured key, or auth disabled, is left alone
    assert gateway_auth_env(gateway, stack_settings) == {}
    assert gateway_auth_env(settings(), stack_settings) == {} and chat_token(settings(), {}) is None


def test_the_local_secret_is_created_0600_and_once(tmp_path: Path) -> None:
    path = tmp_path / "gw" / "secret"
    first = ensure_secret(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert (path.parent.stat().st_mode & 0o777) == 0o700
    assert ensure_secret(path) == first
    assert [p.name for p in path.parent.iterdir()] == ["secret"]  # no temporary file left
