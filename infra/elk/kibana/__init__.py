"""Kibana saved objects of the project, built in code and committed as ``aichat.ndjson``.

``python -m infra.elk.kibana`` rewrites ``aichat.ndjson`` (default index prefix) —
the file you can import by hand in Kibana (Stack Management → Saved objects →
Import). ``aichat elk import-kibana --url …`` builds the objects for the configured
``AICHAT_ELASTIC_INDEX_PREFIX`` and imports them through Kibana's saved objects API.

Saved searches use the Lucene query language so the very same string runs as an
Elasticsearch ``query_string`` query (the tests run each one against the real
cluster). The journeys take an id: replace ``DOC_ID`` / ``QUERY_ID`` in the query
bar (or in the URL, see OBSERVABILITY.md); a document is ``TENANT`` and ``DOC_ID``
together, since two tenants may use the same ``doc_id``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

NDJSON_FILE = Path(__file__).with_name("aichat.ndjson")
DEFAULT_PREFIX = "aichat-events"
CORE_MIGRATION = "8.8.0"
TYPE_MIGRATION = {"index-pattern": "8.0.0", "search": "8.0.0", "visualization": "8.5.0",
                  "dashboard": "8.9.0"}

EVENTS_VIEW = "aichat-events"
SUMMARIES_VIEW = "aichat-summaries"
DOC_PLACEHOLDER = "DOC_ID"
TENANT_PLACEHOLDER = "TENANT"
QUERY_PLACEHOLDER = "QUERY_ID"

#: dead letters, undecodable records, failed answers and summaries, error log lines
FAILURES_QUERY = "event.outcome:failure OR event.kind:pipeline_error OR log.level:(error OR critical)"


@dataclass(frozen=True)
class SavedSearch:
    id: str
    title: str
    view: str
    query: str
    columns: list[str]
    sort: list[list[str]]
    description: str


@dataclass(frozen=True)
class Visualization:
    id: str
    title: str
    view: str
    query: str
    vis_type: str  # line | histogram | pie
    aggs: list[dict[str, Any]]
    description: str = ""
    grid: dict[str, int] = field(default_factory=dict)


SEARCHES = [
    SavedSearch(
        "aichat-document-journey", "AI-Chat: a document's journey", EVENTS_VIEW,
        f'(aichat.tenant:"{TENANT_PLACEHOLDER}" AND aichat.doc_id:"{DOC_PLACEHOLDER}") '
        f'OR aichat.dead_letter.key:"{TENANT_PLACEHOLDER}/{DOC_PLACEHOLDER}"',
        ["event.dataset", "event.action", "aichat.version", "aichat.seq", "aichat.n_chunks",
         "aichat.outcome", "aichat.freshness_ms", "service.name", "message"],
        [["@timestamp", "asc"]],
        f"Every hop of one document: published, chunked, embedded, indexed (with freshness), "
        f"dead letters and log lines. Replace {TENANT_PLACEHOLDER} and {DOC_PLACEHOLDER} in the "
        f"query with the tenant and the doc_id.",
    ),
    SavedSearch(
        "aichat-question-journey", "AI-Chat: a question's journey", EVENTS_VIEW,
        f'trace.id:"{QUERY_PLACEHOLDER}" OR aichat.query_id:"{QUERY_PLACEHOLDER}"',
        ["event.dataset", "event.action", "service.name", "aichat.seq", "aichat.outcome",
         "aichat.timings_ms.total", "log.level", "message"],
        [["@timestamp", "asc"]],
        f"The query event, its sources, every token, done or error, the summary and the "
        f"gateway's and answerer's log lines. Replace {QUERY_PLACEHOLDER} with the query_id "
        f"(the ack frame's query_id; it is also the trace id).",
    ),
    SavedSearch(
        "aichat-failures", "AI-Chat: failures and dead letters", EVENTS_VIEW, FAILURES_QUERY,
        ["event.dataset", "service.name", "aichat.dead_letter.agent", "aichat.dead_letter.error_type",
         "aichat.dead_letter.topic", "aichat.dead_letter.offset", "aichat.dead_letter.key",
         "error.type", "message"],
        [["@timestamp", "desc"]],
        "Dead letters (original topic, partition, offset, agent, error class and message), "
        "undecodable records, answers that ended in an error, and error log lines.",
    ),
    SavedSearch(
        "aichat-slow-answers", "AI-Chat: slow answers (over 200 ms)", SUMMARIES_VIEW,
        'event.dataset:"aichat.summary" AND aichat.timings_ms.total:>200',
        ["aichat.text", "aichat.outcome", "aichat.timings_ms.total", "aichat.timings_ms.first_token",
         "aichat.timings_ms.embed", "aichat.timings_ms.search", "aichat.user", "aichat.query_id"],
        [["aichat.timings_ms.total", "desc"]],
        "One row per answered question slower than the 200 ms objective; open the question's "
        "journey with its query_id to see where the time went.",
    ),
    SavedSearch(
        "aichat-rated-down", "AI-Chat: answers rated down", SUMMARIES_VIEW,
        'event.dataset:"aichat.summary" AND aichat.feedback.rating:<0',
        ["aichat.text", "aichat.answer", "aichat.feedback.comment", "aichat.variant",
         "aichat.experiment", "aichat.sources.doc_id", "aichat.user", "aichat.query_id"],
        [["aichat.feedback.rated_at", "desc"]],
        "Questions whose asker gave the answer a thumbs down (feedback frame, streams/feedback.py), "
        "newest rating first, with the comment, the variant and the sources it was built from.",
    ),
]


def _metric(agg_id: str, type_: str, **params: Any) -> dict[str, Any]:
    return {"id": agg_id, "enabled": True, "type": type_, "params": params, "schema": "metric"}


def _over_time(agg_id: str) -> dict[str, Any]:
    return {"id": agg_id, "enabled": True, "type": "date_histogram", "schema": "segment",
            "params": {"field": "@timestamp", "useNormalizedEsInterval": True, "interval": "auto",
                       "drop_partials": False, "min_doc_count": 1, "extended_bounds": {}}}


def _split(agg_id: str, field_: str, size: int = 10) -> dict[str, Any]:
    return {"id": agg_id, "enabled": True, "type": "terms", "schema": "group",
            "params": {"field": field_, "orderBy": "1", "order": "desc", "size": size,
                       "otherBucket": True, "otherBucketLabel": "Other", "missingBucket": False,
                       "missingBucketLabel": "Missing"}}


VISUALIZATIONS = [
    Visualization(
        "aichat-vis-ingest-rate", "AI-Chat: ingest rate", EVENTS_VIEW,
        "event.dataset:(aichat.documents OR aichat.chunks OR aichat.indexed)", "histogram",
        [_metric("1", "count"), _over_time("2"), _split("3", "event.dataset")],
        "Documents published, chunks produced and versions indexed per interval.",
        {"x": 0, "y": 0, "w": 24, "h": 12},
    ),
    Visualization(
        "aichat-vis-freshness", "AI-Chat: freshness, published to searchable (ms)", EVENTS_VIEW,
        'event.dataset:"aichat.indexed" AND aichat.outcome:indexed', "line",
        [_metric("1", "percentiles", field="aichat.freshness_ms", percents=[50, 95, 99]),
         _over_time("2")],
        "Percentiles of DocumentIndexed.freshness_ms: from the producer's publish to searchable.",
        {"x": 24, "y": 0, "w": 24, "h": 12},
    ),
    Visualization(
        "aichat-vis-answers-by-outcome", "AI-Chat: answers by outcome", SUMMARIES_VIEW,
        'event.dataset:"aichat.summary"', "pie",
        [_metric("1", "count"),
         {**_split("2", "aichat.outcome"), "schema": "segment"}],
        "done, deadline_exceeded, … (pending: no done or error shipped yet).",
        {"x": 0, "y": 12, "w": 16, "h": 12},
    ),
    Visualization(
        "aichat-vis-answer-latency", "AI-Chat: answer latency percentiles (ms)", SUMMARIES_VIEW,
        'event.dataset:"aichat.summary" AND aichat.outcome:done', "line",
        [_metric("1", "percentiles", field="aichat.timings_ms.total", percents=[50, 95, 99]),
         _metric("3", "percentiles", field="aichat.timings_ms.first_token", percents=[95]),
         _over_time("2")],
        "The answerer's total and time-to-first-token, from the summaries' timings.",
        {"x": 16, "y": 12, "w": 32, "h": 12},
    ),
    Visualization(
        "aichat-vis-errors", "AI-Chat: errors and dead letters", EVENTS_VIEW, FAILURES_QUERY,
        "histogram",
        [_metric("1", "count"), _over_time("2"), _split("3", "event.dataset")],
        "Failures per interval by dataset: dead letters, failed answers, error log lines.",
        {"x": 0, "y": 24, "w": 48, "h": 12},
    ),
    Visualization(
        "aichat-vis-ratings-by-variant", "AI-Chat: ratings by variant", SUMMARIES_VIEW,
        'event.dataset:"aichat.summary" AND aichat.feedback.rating:*', "histogram",
        [_metric("1", "count"), {**_split("2", "aichat.variant"), "schema": "segment"},
         _split("3", "aichat.feedback.rating")],
        "Thumbs up (1) and down (-1) per variant of the experiments; aichat experiments report "
        "NAME gives the rates with their intervals.",
        {"x": 0, "y": 36, "w": 24, "h": 12},
    ),
    Visualization(
        "aichat-vis-experiment-questions", "AI-Chat: questions by experiment variant", SUMMARIES_VIEW,
        'event.dataset:"aichat.summary" AND aichat.experiment:*', "pie",
        [_metric("1", "count"), {**_split("2", "aichat.experiment"), "schema": "segment"},
         {**_split("3", "aichat.variant"), "schema": "segment"}],
        "How the experiments split the questions between their variants (server-side assignment).",
        {"x": 24, "y": 36, "w": 24, "h": 12},
    ),
]


def _vis_params(vis_type: str, title: str) -> dict[str, Any]:
    if vis_type == "pie":
        return {"type": "pie", "addTooltip": True, "legendDisplay": "show", "legendPosition": "right",
                "isDonut": True, "labels": {"show": True, "values": True, "last_level": True,
                                            "truncate": 100}}
    return {
        "type": vis_type, "addTooltip": True, "legendPosition": "right", "addLegend": True,
        "times": [], "addTimeMarker": False, "grid": {"categoryLines": False},
        "categoryAxes": [{"id": "CategoryAxis-1", "type": "category", "position": "bottom",
                          "show": True, "style": {}, "scale": {"type": "linear"},
                          "labels": {"show": True, "filter": True, "truncate": 100}, "title": {}}],
        "valueAxes": [{"id": "ValueAxis-1", "name": "LeftAxis-1", "type": "value", "position": "left",
                       "show": True, "style": {}, "scale": {"type": "linear", "mode": "normal"},
                       "labels": {"show": True, "rotate": 0, "filter": False, "truncate": 100},
                       "title": {"text": title}}],
        "seriesParams": [{"show": True, "type": vis_type, "mode": "stacked" if vis_type == "histogram"
                          else "normal", "data": {"label": title, "id": "1"},
                          "valueAxis": "ValueAxis-1", "drawLinesBetweenPoints": True,
                          "lineWidth": 2, "showCircles": True, "interpolate": "linear"}],
    }


def _search_source(query: str, *, with_index: bool = True, sort: list[list[str]] | None = None) -> str:
    source: dict[str, Any] = {"query": {"query": query, "language": "lucene"}, "filter": []}
    if with_index:
        source["indexRefName"] = "kibanaSavedObjectMeta.searchSourceJSON.index"
    return json.dumps(source, separators=(",", ":"))


def _object(type_: str, id_: str, attributes: dict[str, Any],
            references: list[dict[str, str]]) -> dict[str, Any]:
    return {"attributes": attributes, "coreMigrationVersion": CORE_MIGRATION, "id": id_,
            "managed": False, "references": references, "type": type_,
            "typeMigrationVersion": TYPE_MIGRATION[type_]}


def _view_ref(view: str) -> list[dict[str, str]]:
    return [{"id": view, "name": "kibanaSavedObjectMeta.searchSourceJSON.index", "type": "index-pattern"}]


def build_objects(prefix: str = DEFAULT_PREFIX) -> list[dict[str, Any]]:
    """Every saved object, data views first (import order does not matter to Kibana, but reading does)."""
    views = {
        EVENTS_VIEW: (f"{prefix}-*", "AI-Chat: events, summaries and logs"),
        SUMMARIES_VIEW: (f"{prefix}-summaries", "AI-Chat: query summaries"),
    }
    objects = [
        _object("index-pattern", view_id, {
            "title": title, "name": name, "timeFieldName": "@timestamp", "allowHidden": False,
            "fieldAttrs": "{}", "fieldFormatMap": "{}", "fields": "[]", "runtimeFieldMap": "{}",
            "sourceFilters": "[]", "typeMeta": "{}",
        }, [])
        for view_id, (title, name) in views.items()
    ]
    for s in SEARCHES:
        objects.append(_object("search", s.id, {
            "title": s.title, "description": s.description, "columns": s.columns, "sort": s.sort,
            "grid": {}, "hideChart": False, "isTextBasedQuery": False, "timeRestore": False,
            "kibanaSavedObjectMeta": {"searchSourceJSON": _search_source(s.query)},
        }, _view_ref(s.view)))
    for v in VISUALIZATIONS:
        vis_state = {"title": v.title, "type": v.vis_type, "aggs": v.aggs,
                     "params": _vis_params(v.vis_type, v.title)}
        objects.append(_object("visualization", v.id, {
            "title": v.title, "description": v.description, "version": 1, "uiStateJSON": "{}",
            "visState": json.dumps(vis_state, separators=(",", ":")),
            "kibanaSavedObjectMeta": {"searchSourceJSON": _search_source(v.query)},
        }, _view_ref(v.view)))
    panels = []
    for n, v in enumerate(VISUALIZATIONS):
        panel_id = f"p{n + 1}"
        panels.append({"version": "8.19.4", "type": "visualization",
                       "gridData": {**v.grid, "i": panel_id}, "panelIndex": panel_id,
                       "embeddableConfig": {"enhancements": {}}, "panelRefName": f"panel_{n}"})
    objects.append(_object("dashboard", "aichat-overview", {
        "title": "AI-Chat: overview",
        "description": "Ingest rate, freshness, answers by outcome, answer latency, errors, "
                       "ratings and experiments. Saved searches: a document's journey, a "
                       "question's journey, failures and dead letters, slow answers, answers "
                       "rated down.",
        "version": 1, "timeRestore": True, "timeFrom": "now-1h", "timeTo": "now",
        "refreshInterval": {"pause": False, "value": 30_000},
        "optionsJSON": json.dumps({"useMargins": True, "syncColors": False, "syncCursor": True,
                                   "syncTooltips": False, "hidePanelTitles": False}),
        "panelsJSON": json.dumps(panels, separators=(",", ":")),
        "kibanaSavedObjectMeta": {"searchSourceJSON": _search_source("", with_index=False)},
    }, [{"id": v.id, "name": f"panel_{n}", "type": "visualization"}
        for n, v in enumerate(VISUALIZATIONS)]))
    return objects


def to_ndjson(objects: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(o, ensure_ascii=False, sort_keys=True) + "\n" for o in objects)


def write_ndjson(path: Path = NDJSON_FILE) -> Path:
    path.write_text(to_ndjson(build_objects()), encoding="utf-8")
    return path
