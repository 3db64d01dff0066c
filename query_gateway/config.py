"""Settings of one gateway replica (``AICHAT_`` environment variables, ``.env``).

Each replica owns one partition of the ``answers`` topic
(``AICHAT_GATEWAY_REPLY_PARTITION``): replicas of one deployment must use
distinct partitions, or they will steal each other's answers.
"""

from __future__ import annotations

from pydantic import Field

from streams.config import ElasticSettings, KafkaSettings, ObservabilitySettings, WeaviateSettings


class GatewaySettings(KafkaSettings, WeaviateSettings, ElasticSettings, ObservabilitySettings):
    """Kafka + readiness targets + the gateway's own limits."""

    gateway_host: str = "127.0.0.1"
    gateway_port: int = Field(8000, ge=0, le=65535)
    gateway_reply_partition: int = Field(
        0,
        ge=0,
        description="partition of the answers topic this replica owns (distinct per replica)",
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
    outgoing_queue_size: int = Field(256, ge=1, description="server frames buffered per connection")
    kafka_start_timeout_s: float = Field(
        30.0, gt=0, description="connect + position on the answers partition"
    )
    produce_timeout_s: float = Field(10.0, gt=0, description="wait for the broker's ack of a query")
    readiness_timeout_s: float = Field(2.0, gt=0, description="per readiness check")
    worker_health_urls: list[str] = Field(
        default_factory=lambda: ["http://127.0.0.1:6066/health/ready"],
        description="the 'model' readiness check: every answerer worker's /health/ready",
    )
    ws_ping_interval_s: float = Field(20.0, gt=0)
    ws_ping_timeout_s: float = Field(20.0, gt=0)
    shutdown_timeout_s: float = Field(
        12.0,
        gt=0,
        description="graceful shutdown drain limit; keep it above answer deadline + grace so "
        "every in-flight query ends with done or an error frame",
    )

    @property
    def answers_topic(self) -> str:
        return self.topic("answers")

    @property
    def queries_topic(self) -> str:
        return self.topic("queries")
