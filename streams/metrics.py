"""Prometheus metrics of the workers (units in names, low-cardinality labels)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS = Counter(
    "aichat_agent_events_total", "Events handled by an agent, by outcome", ["agent", "outcome"]
)
EMITTED = Counter("aichat_agent_emitted_total", "Events produced by an agent", ["agent", "topic"])
DEAD_LETTERS = Counter(
    "aichat_dead_letters_total", "Events sent to the dead-letter topic", ["agent", "error_type"]
)
DEAD_LETTERS_DROPPED = Counter(
    "aichat_dead_letters_dropped_total",
    "Dead letters that could not be stored: a dead letter refused downstream (never "
    "dead-lettered again), or refused by Kafka itself; the record stays in its topic",
    ["agent", "reason"],
)
BATCH_SIZE = Histogram(
    "aichat_agent_batch_size", "Events per micro-batch", ["agent"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)
FRESHNESS_SECONDS = Histogram(
    "aichat_freshness_seconds", "Document published to searchable in Weaviate",
    buckets=(0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30, 60),
)
RETRIES = Counter("aichat_agent_retries_total", "Retried attempts after a retriable error", ["agent"])
HANDLE_SECONDS = Histogram(
    "aichat_agent_handle_seconds",
    "Time to handle one event, effects included",
    ["agent"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
EMBED_SECONDS = Histogram(
    "aichat_embed_seconds", "Model inference time per call", ["agent"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
UPSERT_SECONDS = Histogram(
    "aichat_weaviate_upsert_seconds", "Weaviate batch upsert time",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
SEARCH_SECONDS = Histogram(
    "aichat_weaviate_search_seconds", "Weaviate hybrid search time",
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
)
ANSWER_SECONDS = Histogram(
    "aichat_answer_seconds", "Query received to done event produced, by outcome", ["outcome"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1, 2.5, 5, 10),
)
SHIPPED = Counter("aichat_shipper_documents_total", "Documents indexed into Elasticsearch", ["dataset"])
READY = Gauge("aichat_worker_ready", "1 when every resource of the worker has started")

# -- observability (issue 5) ------------------------------------------------------------------
CONSUMER_LAG = Gauge(
    "aichat_consumer_lag_messages",
    "Records not yet committed by a consumer group, per partition (log end offset - committed)",
    ["group", "topic", "partition"],
)
CONSUMER_BACKLOG_OLDEST = Gauge(
    "aichat_consumer_backlog_oldest_seconds",
    "Age of the oldest record a consumer group has not processed yet (0: no backlog); "
    "measured on documents",
    ["group", "topic"],
)
SHIPPER_BULK_SECONDS = Histogram(
    "aichat_shipper_bulk_seconds", "Elasticsearch bulk request time",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
SHIPPER_ITEMS = Counter(
    "aichat_shipper_bulk_items_total",
    "Bulk actions by result: ok, retried (429/5xx, sent again), refused (dead-lettered)",
    ["result"],
)
ELASTIC_ACCESS_DENIED = Gauge(
    "aichat_elasticsearch_access_denied",
    "1 while Elasticsearch refuses this process's credentials (HTTP 401/403): shipping waits",
)
SHIPPER_SUMMARIES = Counter(
    "aichat_shipper_query_summaries_total", "Query summaries completed, by outcome", ["outcome"]
)
