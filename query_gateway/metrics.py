"""Prometheus metrics of the gateway (``aichat_gateway_`` prefix, units in names)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 30.0)

OPEN_CONNECTIONS = Gauge("aichat_gateway_open_connections", "Websocket connections open now")
QUERIES = Counter(
    "aichat_gateway_queries_total",
    "Queries accepted by the gateway, by how they ended",
    ["outcome"],  # done | error | deadline_exceeded | cancelled | kafka_unavailable | disconnected
)
TIME_TO_FIRST_TOKEN = Histogram(
    "aichat_gateway_time_to_first_token_seconds",
    "From the query frame to the first token frame sent",
    buckets=_LATENCY_BUCKETS,
)
TIME_TO_DONE = Histogram(
    "aichat_gateway_time_to_done_seconds",
    "From the query frame to the done frame sent",
    buckets=_LATENCY_BUCKETS,
)
FRAMES_REFUSED = Counter(
    "aichat_gateway_frames_refused_total", "Client frames answered with an error frame", ["code"]
)
ANSWERS_DROPPED = Counter(
    "aichat_gateway_answers_dropped_total",
    "Answer events not delivered to a query",
    ["reason"],  # unknown_query | invalid | slow_consumer | duplicate
)
AUTH_REFUSED = Counter(
    "aichat_gateway_auth_refused_total",
    "Websocket upgrades refused before the connection opened, by reason",
    # missing_token | malformed | bad_algorithm | bad_signature | expired | not_yet_valid |
    # wrong_audience | wrong_issuer | missing_claim | bad_claim | origin
    ["reason"],
)
RATE_LIMITED = Counter(
    "aichat_gateway_rate_limited_total",
    "Queries refused by a limit, by limit",
    ["limit"],  # user_queries (per-user token bucket) | connection_inflight
)
RATE_LIMITER_ERRORS = Counter(
    "aichat_gateway_rate_limiter_errors_total",
    "Rate-limit checks that failed (Redis unreachable or slow); the query was let through",
)
CONNECTIONS_REFUSED = Counter(
    "aichat_gateway_connections_refused_total",
    "Websocket upgrades refused because a connection limit was reached, by limit",
    ["limit"],  # user (per JWT subject) | client (per client address) | total (this replica)
)
SESSIONS_ENDED = Counter(
    "aichat_gateway_sessions_ended_total",
    "Websocket sessions the gateway closed itself, by reason",
    ["reason"],  # token_expired | slow_client | idle | shutdown
)
REFUSAL_LOGS_SUPPRESSED = Counter(
    "aichat_gateway_refusal_logs_suppressed_total",
    "Log lines of refused frames and upgrades left out by the log rate limit",
)
CANCELLATIONS = Counter(
    "aichat_gateway_cancellations_total",
    "QueryCancelled events produced onto the queries topic, by reason and outcome",
    ["reason", "outcome"],  # outcome: published | failed
)
