"""The Grafana dashboard, built in code and committed as ``aichat-dashboard.json``.

``python -m infra.grafana`` rewrites the JSON. Import it in Grafana (Dashboards → New →
Import) or provision it from this folder; it asks for a Prometheus data source
(``datasource`` variable) that scrapes the jobs of ``infra/prometheus/prometheus.yml``.
Every expression uses the raw metrics (not recording rules), so the dashboard works
without the rules loaded; a test checks each metric against what the processes expose.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DASHBOARD_FILE = Path(__file__).with_name("aichat-dashboard.json")
DS = {"type": "prometheus", "uid": "${datasource}"}


def _p(q: float, metric: str, by: str = "") -> str:
    group = f"le, {by}" if by else "le"
    return f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket[5m])))"


LAG = "sum by (group, topic) (max by (group, topic, partition) (aichat_consumer_lag_messages))"

#: (row title, [(panel title, unit, [(expr, legend)], kind, description)])
ROWS: list[tuple[str, list[tuple[str, str, list[tuple[str, str]], str, str]]]] = [
    ("Overview", [
        ("Processes up", "none", [('sum by (job) (up{job=~"aichat-.*"})', "{{job}}")], "stat",
         "Targets Prometheus scrapes successfully, per job."),
        ("Workers ready", "none", [("sum(aichat_worker_ready)", "ready")], "stat",
         "Workers whose clients (Kafka, Weaviate, Elasticsearch, model) have started."),
        ("Open websocket connections", "none", [("sum(aichat_gateway_open_connections)", "open")],
         "stat", "Connections open on every gateway replica."),
        ("Answer p95 (query → done)", "s",
         [(_p(0.95, "aichat_gateway_time_to_done_seconds"), "p95")], "stat",
         "Objective: 200 ms (alert AichatAnswerLatencyHigh)."),
        ("Freshness p95 (published → searchable)", "s",
         [(_p(0.95, "aichat_freshness_seconds"), "p95")], "stat",
         "Objective: 1 s (alert AichatFreshnessHigh)."),
        ("Consumer lag (all groups)", "none", [(f"sum({LAG})", "records")], "stat",
         "Records committed by no consumer group yet."),
    ]),
    ("Ingest", [
        ("Events in, by agent and outcome", "ops",
         [("sum by (agent, outcome) (rate(aichat_agent_events_total[5m]))", "{{agent}} {{outcome}}")],
         "timeseries", "Events handled per second: ok or dead_lettered."),
        ("Events out, by agent and topic", "ops",
         [("sum by (agent, topic) (rate(aichat_agent_emitted_total[5m]))", "{{agent}} → {{topic}}")],
         "timeseries", "Events produced per second."),
        ("Micro-batch size p50 / p95", "none",
         [(_p(0.5, "aichat_agent_batch_size", "agent"), "{{agent}} p50"),
          (_p(0.95, "aichat_agent_batch_size", "agent"), "{{agent}} p95")], "timeseries",
         "Events per batch of the chunker, embedder, indexer and shipper."),
        ("Embedding time p95 per model call", "s",
         [(_p(0.95, "aichat_embed_seconds", "agent"), "{{agent}}")], "timeseries",
         "Model inference per batch (embedder) or per question (answerer)."),
        ("Weaviate upsert time p50 / p95", "s",
         [(_p(0.5, "aichat_weaviate_upsert_seconds"), "p50"),
          (_p(0.95, "aichat_weaviate_upsert_seconds"), "p95")], "timeseries",
         "One batch upsert of the indexer."),
        ("Freshness p50 / p95 / p99", "s",
         [(_p(0.5, "aichat_freshness_seconds"), "p50"), (_p(0.95, "aichat_freshness_seconds"), "p95"),
          (_p(0.99, "aichat_freshness_seconds"), "p99")], "timeseries",
         "From the producer's publish to searchable in Weaviate (DocumentIndexed)."),
    ]),
    ("Questions", [
        ("Queries by outcome", "ops",
         [("sum by (outcome) (rate(aichat_gateway_queries_total[5m]))", "{{outcome}}")], "timeseries",
         "done, error, deadline_exceeded, cancelled, kafka_unavailable, disconnected."),
        ("Time to first token / to done", "s",
         [(_p(0.5, "aichat_gateway_time_to_first_token_seconds"), "first token p50"),
          (_p(0.95, "aichat_gateway_time_to_first_token_seconds"), "first token p95"),
          (_p(0.5, "aichat_gateway_time_to_done_seconds"), "done p50"),
          (_p(0.95, "aichat_gateway_time_to_done_seconds"), "done p95"),
          (_p(0.99, "aichat_gateway_time_to_done_seconds"), "done p99")], "timeseries",
         "Measured by the gateway from the query frame; objective p95 done < 200 ms."),
        ("Answerer: total and search time p95", "s",
         [(_p(0.95, "aichat_answer_seconds", "outcome"), "answer {{outcome}}"),
          (_p(0.95, "aichat_weaviate_search_seconds"), "hybrid search")], "timeseries",
         "Inside the answerer: query received to done produced, and the Weaviate search."),
        ("Refused: auth, rate limits, frames", "ops",
         [("sum(rate(aichat_gateway_auth_refused_total[5m]))", "auth refused"),
          ("sum(rate(aichat_gateway_rate_limited_total[5m]))", "rate limited"),
          ("sum by (code) (rate(aichat_gateway_frames_refused_total[5m]))", "frame {{code}}")],
         "timeseries", "Upgrades refused for a bad token, queries over the user's rate, bad frames."),
        ("Answer events dropped by the gateway", "ops",
         [("sum by (reason) (rate(aichat_gateway_answers_dropped_total[5m]))", "{{reason}}")],
         "timeseries", "unknown_query (after a restart), invalid, slow_consumer, duplicate."),
    ]),
    ("Feedback and experiments", [
        ("Ratings by variant", "ops",
         [("sum by (experiment, variant, rating) (rate(aichat_gateway_feedback_total[5m]))",
           "{{experiment}} {{variant}} {{rating}}")], "timeseries",
         "Thumbs up / down accepted by the gateways (feedback frames), per experiment variant."),
        ("Positive share by variant (1 h)", "percentunit",
         [('sum by (experiment, variant) (increase(aichat_gateway_feedback_total{rating="up"}[1h]))'
           " / sum by (experiment, variant) (increase(aichat_gateway_feedback_total[1h]))",
           "{{experiment}} {{variant}}")], "timeseries",
         "Thumbs up among the ratings; aichat experiments report NAME gives intervals and tests."),
        ("Queries by experiment variant", "ops",
         [("sum by (experiment, variant, outcome) (rate(aichat_gateway_experiment_queries_total[5m]))",
           "{{experiment}} {{variant}} {{outcome}}")], "timeseries",
         "The server-side assignment at work (experiment empty: no experiment)."),
        ("Time to first token p95 by variant", "s",
         [(_p(0.95, "aichat_gateway_experiment_first_token_seconds", "experiment, variant"),
           "{{experiment}} {{variant}}")], "timeseries",
         "Measured by the gateway from the query frame, per experiment variant."),
        ("Ratings merged into summaries", "ops",
         [("sum by (result) (rate(aichat_shipper_feedback_total[5m]))", "{{result}}")], "timeseries",
         "merged; not_owner (another user's question: refused); no_summary; invalid."),
    ]),
    ("Reliability", [
        ("Consumer lag by group and topic", "none", [(LAG, "{{group}} {{topic}}")], "timeseries",
         "Grows while a dependency is down; alert AichatConsumerLagGrowing."),
        ("Consumer lag per partition", "none",
         [("max by (group, topic, partition) (aichat_consumer_lag_messages)",
           "{{group}} {{topic}}[{{partition}}]")], "timeseries",
         "A single hot partition shows here: keys are doc_id / query_id."),
        ("Dead letters", "ops",
         [("sum by (agent, error_type) (rate(aichat_dead_letters_total[5m]))",
           "{{agent}} {{error_type}}")], "timeseries",
         "Kibana: 'AI-Chat: failures and dead letters' has each one with its reason."),
        ("Retries (retriable errors)", "ops",
         [("sum by (agent) (rate(aichat_agent_retries_total[5m]))", "{{agent}}")], "timeseries",
         "A dependency unreachable or overloaded: work delayed, not lost."),
        ("Shipper: documents into Elasticsearch", "ops",
         [("sum by (dataset) (rate(aichat_shipper_documents_total[5m]))", "{{dataset}}")],
         "timeseries", "Per dataset (topic), plus aichat.summary updates."),
        ("Shipper: bulk items and bulk time p95", "ops",
         [("sum by (result) (rate(aichat_shipper_bulk_items_total[5m]))", "items {{result}}"),
          (_p(0.95, "aichat_shipper_bulk_seconds"), "bulk p95 (s)")], "timeseries",
         "ok, retried (429/5xx, sent again), refused (dead-lettered)."),
        ("Log records to Kafka", "ops",
         [("sum by (job) (rate(aichat_log_records_shipped_total[5m]))", "{{job}} shipped"),
          ("sum by (job, reason) (rate(aichat_log_records_dropped_total[5m]))",
           "{{job}} dropped {{reason}}")], "timeseries",
         "Dropped only while Kafka is unreachable and the buffer is full."),
    ]),
]


def build_dashboard() -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    next_id = 1
    y = 0
    for row_title, row_panels in ROWS:
        panels.append({"id": next_id, "type": "row", "title": row_title, "collapsed": False,
                       "gridPos": {"x": 0, "y": y, "w": 24, "h": 1}, "panels": []})
        next_id += 1
        y += 1
        stat = all(kind == "stat" for _, _, _, kind, _ in row_panels)
        width, height = (4, 4) if stat else (12, 8)
        for n, (title, unit, targets, kind, description) in enumerate(row_panels):
            x = (n * width) % 24
            if n and x == 0:
                y += height
            panels.append({
                "id": next_id, "type": kind, "title": title, "description": description,
                "datasource": DS,
                "gridPos": {"x": x, "y": y, "w": width, "h": height},
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                "options": {"legend": {"displayMode": "list", "placement": "bottom"},
                            "tooltip": {"mode": "multi"}} if kind == "timeseries" else
                           {"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "value"},
                "targets": [{"refId": chr(ord("A") + i), "datasource": DS, "expr": expr,
                             "legendFormat": legend} for i, (expr, legend) in enumerate(targets)],
            })
            next_id += 1
        y += height
    return {
        "uid": "aichat-overview",
        "title": "AI-Chat: streaming RAG",
        "description": "Workers, gateway and shipper of AI-Chat (infra/grafana, alerts in infra/prometheus)",
        "tags": ["aichat"],
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "timezone": "utc",
        "templating": {"list": [{"name": "datasource", "label": "Prometheus", "type": "datasource",
                                 "query": "prometheus", "current": {}, "hide": 0}]},
        "annotations": {"list": []},
        "panels": panels,
    }


def write_dashboard(path: Path = DASHBOARD_FILE) -> Path:
    path.write_text(json.dumps(build_dashboard(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path
