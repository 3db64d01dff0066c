"""Who is asking: the Origin check and JWT authentication of the websocket upgrade.

    build_authenticator(settings) -> JwtAuthenticator | NoAuthenticator
    authenticator.authenticate(conn) -> Principal        raises Unauthorized (401)
    check_origin(conn, allowed)                          raises OriginNotAllowed (403)

The token comes from ``Authorization: Bearer …`` or, for browsers (which cannot
set headers on a websocket), the ``token`` query parameter. Verification pins the
one configured algorithm (so ``alg: none`` or an HS256 token signed with an RS256
public key never pass), requires ``exp``, ``aud``, ``iss`` and the user claim, and
checks audience and issuer. The tenant comes from the token, never from the client.

``AICHAT_GATEWAY_AUTH=disabled`` trusts ``?user=`` instead: for local experiments
only, and it logs a warning at start.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from starlette.requests import HTTPConnection

from query_gateway.config import TENANT_PATTERN, GatewaySettings
from query_gateway.errors import OriginNotAllowed, Unauthorized
from query_gateway.refusals import excerpt
from streams.errors import ConfigError

logger = logging.getLogger(__name__)

ANONYMOUS = "anonymous"
DEFAULT_TENANT = "default"
HS256_MIN_SECRET_BYTES = 32
RSA_MIN_BITS = 2048
_USER = re.compile(r"^[\w.@+|:-]{1,256}$")
_TENANT = re.compile(TENANT_PATTERN)


@dataclass(frozen=True, slots=True)
class Principal:
    user: str
    tenant: str
    #: UNIX time at which the session must end (token ``exp`` + leeway); None = never
    expires_at: float | None = None


class Authenticator(Protocol):
    def authenticate(self, conn: HTTPConnection) -> Principal:
        """The principal of a websocket handshake; raise :class:`Unauthorized`."""
        ...


def bearer_token(conn: HTTPConnection) -> str | None:
    """The token of the ``Authorization: Bearer`` header, else of ``?token=``."""
    header = conn.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        raise Unauthorized(
            "the Authorization header must be 'Bearer <token>'",
            code="invalid_token",
            reason="malformed",
        )
    token = conn.query_params.get("token")
    return token or None


class JwtAuthenticator:
    """Verifies HS256 or RS256 tokens with the pinned algorithm, audience and issuer."""

    def __init__(self, settings: GatewaySettings, key: str | bytes | RSAPublicKey) -> None:
        self._key = key
        self._algorithm = settings.jwt_algorithm
        self._audience = settings.jwt_audience
        self._issuer = settings.jwt_issuer
        self._leeway = settings.jwt_leeway_s
        self._user_claim = settings.jwt_user_claim
        self._tenant_claim = settings.jwt_tenant_claim
        self._default_tenant = settings.jwt_default_tenant
        self._max_lifetime_s = settings.jwt_max_lifetime_s

    def authenticate(self, conn: HTTPConnection) -> Principal:
        token = bearer_token(conn)
        if token is None:
            raise Unauthorized(
                "a token is required: 'Authorization: Bearer <jwt>' or ?token=<jwt>",
                code="missing_token",
            )
        return self.verify(token)

    def verify(self, token: str) -> Principal:
        claims = self._decode(token)
        user = claims.get(self._user_claim)
        if not isinstance(user, str) or not _USER.fullmatch(user):
            raise Unauthorized(
                f"claim {self._user_claim!r} must be a user name (letters, digits, .@+|:_-)",
                reason="bad_claim",
            )
        tenant = claims.get(self._tenant_claim, self._default_tenant)
        if tenant is None:
            raise Unauthorized(
                f"the token has no {self._tenant_claim!r} claim", reason="missing_claim"
            )
        if not isinstance(tenant, str) or not _TENANT.fullmatch(tenant):
            raise Unauthorized(
                f"claim {self._tenant_claim!r} must match {TENANT_PATTERN}", reason="bad_claim"
            )
        lifetime = float(claims["exp"]) - float(claims.get("iat", time.time()))
        if self._max_lifetime_s and lifetime > self._max_lifetime_s + self._leeway:
            raise Unauthorized(
                f"the token is valid for {lifetime:.0f}s; at most {self._max_lifetime_s}s "
                "(AICHAT_JWT_MAX_LIFETIME_S) is accepted",
                reason="lifetime_too_long",
            )
        return Principal(user=user, tenant=tenant, expires_at=float(claims["exp"]) + self._leeway)

    def _decode(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError:
            raise Unauthorized("the token is not a JWT", reason="malformed") from None
        if header.get("alg") != self._algorithm:
            raise Unauthorized(
                f"token algorithm {excerpt(header.get('alg'))} is not accepted "
                f"(only {self._algorithm})",
                reason="bad_algorithm",
            )
        try:
            return jwt.decode(
                token,
                self._key,
                algorithms=[self._algorithm],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": ["exp", "aud", "iss", self._user_claim]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized(
                "the token has expired", code="token_expired", reason="expired"
            ) from None
        except jwt.ImmatureSignatureError:
            raise Unauthorized("the token is not valid yet", reason="not_yet_valid") from None
        except jwt.InvalidAudienceError:
            raise Unauthorized(
                "the token is for another audience", reason="wrong_audience"
            ) from None
        except jwt.InvalidIssuerError:
            raise Unauthorized(
                "the token comes from another issuer", reason="wrong_issuer"
            ) from None
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthorized(
                f"the token lacks the {exc.claim!r} claim", reason="missing_claim"
            ) from None
        except jwt.InvalidAlgorithmError:
            raise Unauthorized(
                "the token's algorithm is not accepted", reason="bad_algorithm"
            ) from None
        except jwt.InvalidSignatureError:
            raise Unauthorized(
                "the token's signature does not verify", reason="bad_signature"
            ) from None
        except jwt.InvalidTokenError as exc:
            raise Unauthorized(
                f"invalid token: {excerpt(str(exc), quote=False)}", reason="malformed"
            ) from None


class NoAuthenticator:
    """``AICHAT_GATEWAY_AUTH=disabled``: trusts ``?user=`` (or ``anonymous``)."""

    def __init__(self, tenant: str = DEFAULT_TENANT) -> None:
        self._tenant = tenant

    def authenticate(self, conn: HTTPConnection) -> Principal:
        user = conn.query_params.get("user", "")
        if not _USER.fullmatch(user):
            user = ANONYMOUS
        return Principal(user=user, tenant=self._tenant)


def build_authenticator(settings: GatewaySettings) -> JwtAuthenticator | NoAuthenticator:
    """The authenticator the settings ask for; :class:`ConfigError` naming the key when unusable."""
    if settings.gateway_auth == "disabled":
        logger.warning("AICHAT_GATEWAY_AUTH=disabled: every websocket is accepted without a token")
        return NoAuthenticator(settings.jwt_default_tenant or DEFAULT_TENANT)
    if settings.jwt_algorithm == "HS256":
        if settings.jwt_secret is None:
            raise ConfigError(
                "AICHAT_JWT_SECRET_FILE (or AICHAT_JWT_SECRET): HS256 needs a shared secret; "
                "or set AICHAT_JWT_ALGORITHM=RS256 with AICHAT_JWT_PUBLIC_KEY_FILE, "
                "or AICHAT_GATEWAY_AUTH=disabled to run without authentication"
            )
        secret = settings.jwt_secret.get_secret_value().encode("utf-8")
        if len(secret) < HS256_MIN_SECRET_BYTES:
            raise ConfigError(
                f"AICHAT_JWT_SECRET: {len(secret)} bytes; HS256 needs at least "
                f"{HS256_MIN_SECRET_BYTES}"
            )
        return JwtAuthenticator(settings, secret)
    if settings.jwt_public_key is None:
        raise ConfigError("AICHAT_JWT_PUBLIC_KEY_FILE: RS256 needs the issuer's PEM public key")
    try:
        key = load_pem_public_key(settings.jwt_public_key.get_secret_value().encode("utf-8"))
    except ValueError as exc:
        raise ConfigError(f"AICHAT_JWT_PUBLIC_KEY: not a PEM public key ({exc})") from None
    if not isinstance(key, RSAPublicKey):
        raise ConfigError("AICHAT_JWT_PUBLIC_KEY: RS256 needs an RSA public key")
    if key.key_size < RSA_MIN_BITS:
        raise ConfigError(f"AICHAT_JWT_PUBLIC_KEY: {key.key_size}-bit RSA; at least {RSA_MIN_BITS}")
    return JwtAuthenticator(settings, key)


def check_origin(conn: HTTPConnection, allowed: Sequence[str]) -> None:
    """Refuse a browser page from a foreign site (the websocket is not subject to CORS).

    No ``Origin``: not a browser (the token still protects it). The gateway's own
    page (Origin host == Host header) and the allowlist pass; ``"*"`` allows any.
    """
    origin = conn.headers.get("origin")
    if origin is None:
        return
    normalised = origin.strip().rstrip("/").lower()
    if "*" in allowed or normalised in allowed:
        return
    host = conn.headers.get("host", "").lower()
    if host and urlsplit(normalised).netloc == host:
        return
    raise OriginNotAllowed(f"origin {excerpt(origin)} is not allowed", reason="origin")


def seconds_left(principal: Principal) -> float | None:
    return None if principal.expires_at is None else principal.expires_at - time.time()
