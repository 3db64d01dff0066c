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
    ["reason"],  # unknown_query | invalid | slow_consumer
)
