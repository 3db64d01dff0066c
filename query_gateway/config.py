"""Settings of one gateway replica (``AICHAT_`` environment variables, ``.env``).

Each replica owns one partition of the ``answers`` topic
(``AICHAT_GATEWAY_REPLY_PARTITION``): replicas of one deployment must use
distinct partitions, or they will steal each other's answers.

Authentication is on by default (``AICHAT_GATEWAY_AUTH=jwt``) and needs a key:
``AICHAT_JWT_SECRET_FILE`` (HS256) or ``AICHAT_JWT_PUBLIC_KEY_FILE`` (RS256).
Running without it takes an explicit ``AICHAT_GATEWAY_AUTH=disabled``. The key
is checked when the app is built (:func:`query_gateway.auth.build_authenticator`),
so ``aichat up`` can load these settings before it hands the gateway a local key.

Per-user rate limits live in Redis when ``AICHAT_REDIS_URL`` is set (needed as
soon as more than one replica runs), in this process otherwise. The caps on open
websockets (per user, per client address, in total) are per replica.

``/metrics`` and the detailed readiness answer on a separate operator listener
(``AICHAT_GATEWAY_OPS_HOST``/``_PORT``, default 127.0.0.1 and the gateway's port + 1),
never on the public one.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator

from query_gateway.dev_jwt import local_secret_path
from query_gateway.experiments import ExperimentSettings
from query_gateway.feedback import FeedbackSettings
from streams.config import (
    ElasticSettings,
    KafkaSettings,
    ObservabilitySettings,
    WeaviateSettings,
)
from streams.conversation_settings import ConversationSettings
from streams.settings_base import SettingsBase

TENANT_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"


class RedisSettings(SettingsBase):
    """Where shared gateway state (rate-limit buckets) lives; unset = in-process."""

    redis_url: SecretStr | None = Field(
        None,
        description="redis://[:password@]host:port/db (or rediss://); may hold a password, "
        "so it is a secret (AICHAT_REDIS_URL_FILE works too)",
    )
    redis_key_prefix: str = Field(
        "aichat:", max_length=64, description="prefix of every key the gateway writes"
    )
    redis_timeout_s: float = Field(0.5, gt=0, le=30, description="per Redis command")


class GatewayAuthSettings(SettingsBase):
    gateway_auth: Literal["jwt", "disabled"] = Field(
        "jwt",
        description="'disabled' trusts ?user= and puts everyone in jwt_default_tenant or "
        "'default': local experiments only",
    )
    jwt_algorithm: Literal["HS256", "RS256"] = Field(
        "HS256", description="the only algorithm accepted (pinned; 'none' never is)"
    )
    jwt_secret: SecretStr | None = Field(
        None, description="HS256 shared secret, at least 32 bytes (AICHAT_JWT_SECRET_FILE)"
    )
    jwt_public_key: SecretStr | None = Field(
        None, description="RS256 PEM public key (AICHAT_JWT_PUBLIC_KEY_FILE)"
    )
    jwt_audience: str = Field("aichat", min_length=1, description="required 'aud'")
    jwt_issuer: str = Field("aichat", min_length=1, description="required 'iss'")
    jwt_user_claim: str = Field("sub", min_length=1)
    jwt_tenant_claim: str = Field("tenant", min_length=1)
    jwt_default_tenant: str | None = Field(
        None,
        pattern=TENANT_PATTERN,
        description="tenant of tokens without the tenant claim; unset = such tokens are refused",
    )
    jwt_leeway_s: float = Field(30.0, ge=0, le=300, description="clock skew allowed on exp/nbf/iat")
    jwt_max_lifetime_s: int = Field(
        86_400, ge=0,
        description="refuse tokens valid longer than this (exp - iat, or exp - now without iat); "
        "0 = no limit. A leaked long-lived token is a long-lived key.",
    )
    gateway_allowed_origins: list[str] = Field(
        default_factory=list,
        description="browser Origins allowed besides the gateway's own (e.g. "
        '["https://chat.example.com"]); "*" allows any; requests without Origin are not browsers',
    )

    @field_validator("gateway_allowed_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        cleaned = []
        for origin in value:
            origin = origin.strip().rstrip("/")
            if origin != "*" and not origin.startswith(("http://", "https://")):
                raise ValueError(f"{origin!r}: an origin is scheme://host[:port], or '*'")
            cleaned.append(origin.lower())
        return cleaned


class GatewaySettings(
    GatewayAuthSettings,
    RedisSettings,
    KafkaSettings,
    WeaviateSettings,
    ElasticSettings,
    ConversationSettings,
    ExperimentSettings,
    FeedbackSettings,
    ObservabilitySettings,
):
    """Kafka + readiness targets + auth + the gateway's own limits."""

    gateway_host: str = "127.0.0.1"
    gateway_port: int = Field(8000, ge=0, le=65535)
    gateway_ops_host: str = Field(
        "127.0.0.1",
        description="operator listener (/metrics, detailed /health/ready): keep it off the "
        "public network; 0.0.0.0 only where the network itself keeps clients out",
    )
    gateway_ops_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        validate_default=True,
        description="operator listener port; unset = AICHAT_GATEWAY_PORT + 1 (0 when that is 0)",
    )
    gateway_trusted_proxies: list[str] = Field(
        default_factory=lambda: ["127.0.0.1"],
        description="proxies whose X-Forwarded-For / X-Forwarded-Proto are believed (IPs or "
        'CIDRs, or ["*"]): the client address of the per-client cap and the logs',
    )
    gateway_reply_partition: int = Field(
        0,
        ge=0,
        description="partition of the answers topic this replica owns (distinct per replica)",
    )
    gateway_tls_certfile: Path | None = Field(
        None, description="PEM certificate (chain): serve https:// and wss://"
    )
    gateway_tls_keyfile: Path | None = Field(None, description="PEM private key of the certificate")
    gateway_local_secret_file: Path | None = Field(
        None,
        description="the HS256 secret `aichat up` creates when no key is configured, and "
        "`aichat ask`/`aichat token` mint from; unset = <AICHAT_STACK_DIR>/gateway/jwt-hs256.secret",
    )
    answer_deadline_ms: int = Field(
        10_000, ge=100, description="answer by then or get deadline_exceeded"
    )
    answer_grace_ms: int = Field(
        1_000, ge=0, description="extra wait after the deadline before giving up"
    )
    answer_queue_size: int = Field(
        1_024, ge=8, description="answer events buffered per query before it fails as slow_consumer"
    )
    max_frame_bytes: int = Field(16_384, ge=256, description="largest client frame accepted")
    max_query_chars: int = Field(2_000, ge=1, le=4_000)
    max_inflight_per_connection: int = Field(4, ge=1, le=256)
    max_connections: int = Field(
        5_000, ge=1, description="websockets one replica holds at once; more get 503 gateway_busy"
    )
    max_connections_per_user: int = Field(
        8, ge=1, description="websockets of one user (tenant + JWT subject) on one replica"
    )
    max_connections_per_client: int = Field(
        64,
        ge=1,
        description="websockets from one client address (IPv4, or IPv6 /64) on one replica; "
        "an office behind one NAT shares it",
    )
    ws_idle_timeout_s: float = Field(
        300.0,
        gt=0,
        description="a connection that sends no frame this long, with no query in flight, "
        "is closed (idle_timeout, 4410); the client's pings are frames",
    )
    refusal_log_interval_s: float = Field(
        10.0,
        gt=0,
        description="refused frames and upgrades: at most one log line per client address "
        "and reason this often, saying how many were left out",
    )
    rate_limit_per_minute: float = Field(
        60.0, gt=0, description="queries per user per minute (token bucket refill)"
    )
    rate_limit_burst: int = Field(10, ge=1, description="queries a user may send at once")
    outgoing_queue_size: int = Field(256, ge=1, description="server frames buffered per connection")
    slow_client_timeout_s: float = Field(
        10.0,
        gt=0,
        description="a client whose buffer stays full this long is disconnected (slow_client)",
    )
    publish_cancellations: bool = Field(
        True, description="produce QueryCancelled onto queries when a query is abandoned"
    )
    kafka_start_timeout_s: float = Field(
        30.0, gt=0, description="connect + position on the answers partition"
    )
    produce_timeout_s: float = Field(10.0, gt=0, description="wait for the broker's ack of a query")
    readiness_timeout_s: float = Field(2.0, gt=0, description="per readiness check")
    readiness_cache_s: float = Field(
        1.0,
        ge=0,
        le=60,
        description="the public /health/ready reuses a result this long (probes at the same "
        "moment always share one run); the operator listener's always runs the checks",
    )
    worker_health_urls: list[str] = Field(
        default_factory=lambda: ["http://127.0.0.1:6066/health/ready"],
        description="the 'model' readiness check: every answerer worker's /health/ready",
    )
    ws_compression: bool = Field(
        True,
        description="permessage-deflate; off halves the memory of an idle connection "
        "(measured ~75 → ~37 KB) at the cost of larger frames on the wire",
    )
    ws_ping_interval_s: float = Field(20.0, gt=0, description="websocket ping every …")
    ws_ping_timeout_s: float = Field(
        20.0, gt=0, description="… and close (1011) when its pong is this late"
    )
    shutdown_timeout_s: float = Field(
        12.0,
        gt=0,
        description="graceful shutdown drain limit; keep it above answer deadline + grace so "
        "every in-flight query ends with done or an error frame",
    )

    @field_validator("gateway_ops_port")
    @classmethod
    def _ops_port(cls, value: int | None, info: ValidationInfo) -> int | None:
        gateway_port = info.data.get("gateway_port")
        if gateway_port is None:  # itself invalid: reported on its own
            return value
        if value is None:
            value = gateway_port + 1 if gateway_port else 0
            if value > 65535:
                raise ValueError("AICHAT_GATEWAY_PORT + 1 is no port: set AICHAT_GATEWAY_OPS_PORT")
        if value and value == gateway_port:
            raise ValueError("must differ from AICHAT_GATEWAY_PORT")
        return value

    @field_validator("gateway_trusted_proxies")
    @classmethod
    def _proxies(cls, value: list[str]) -> list[str]:
        for proxy in value:
            if proxy != "*":
                try:
                    ipaddress.ip_network(proxy, strict=False)
                except ValueError:
                    raise ValueError(f"{proxy!r}: an IP address, a CIDR, or '*'") from None
        return value

    @field_validator("gateway_tls_keyfile")
    @classmethod
    def _tls_pair(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is not None and info.data.get("gateway_tls_certfile") is None:
            raise ValueError("set AICHAT_GATEWAY_TLS_CERTFILE too")
        return value

    @property
    def answers_topic(self) -> str:
        return self.topic("answers")

    @property
    def queries_topic(self) -> str:
        return self.topic("queries")

    @property
    def feedback_topic(self) -> str:
        return self.topic("feedback")

    @property
    def tls(self) -> bool:
        return self.gateway_tls_certfile is not None

    @property
    def local_secret_file(self) -> Path:
        """:attr:`gateway_local_secret_file`, else the local stack's (query_gateway/dev_jwt.py)."""
        if self.gateway_local_secret_file is not None:
            return self.gateway_local_secret_file
        return local_secret_path(self.stack_dir)

    @property
    def ops_port(self) -> int:
        """The operator listener's port (resolved at validation; 0 = any free port)."""
        return self.gateway_ops_port if self.gateway_ops_port is not None else 0
