"""What the saved objects ask of Elasticsearch, in Elasticsearch's own terms.

Kibana cannot run on the project's machines, so the tests check the saved objects
through these translations: the fields each object uses (against the index
template's mapping), and the request each saved search or visualization sends
(run against the real cluster). A saved search's Lucene query becomes a
``query_string`` query, as Kibana sends it; a visualization's aggregations become
the equivalent Elasticsearch aggregations.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

#: a Lucene ``field:`` (field names may hold dots and @)
_FIELD = re.compile(r"(?<![\w.@\\])([A-Za-z@_][\w.@]*):")
#: attributes of saved objects that hold JSON in a string
JSON_STRING_ATTRIBUTES = ("visState", "uiStateJSON", "panelsJSON", "optionsJSON", "fieldAttrs",
                          "fieldFormatMap", "fields", "runtimeFieldMap", "sourceFilters", "typeMeta")


def mapped_fields(template: Mapping[str, Any]) -> dict[str, str]:
    """Dotted field name → type, from an index template body (multi-fields included)."""
    out: dict[str, str] = {}

    def walk(props: Mapping[str, Any], prefix: str) -> None:
        for name, spec in props.items():
            path = f"{prefix}{name}"
            if "properties" in spec:
                walk(spec["properties"], f"{path}.")
                continue
            out[path] = spec.get("type", "object")
            for sub, sub_spec in (spec.get("fields") or {}).items():
                out[f"{path}.{sub}"] = sub_spec.get("type", "object")

    walk(template["template"]["mappings"]["properties"], "")
    return out


def is_mapped(field: str, mapping: Mapping[str, str]) -> bool:
    """Mapped directly, or a key inside a ``flattened`` field."""
    if field in mapping:
        return True
    parts = field.split(".")
    return any(mapping.get(".".join(parts[:n])) == "flattened" for n in range(1, len(parts)))


def search_source(obj: Mapping[str, Any]) -> dict[str, Any]:
    raw = obj["attributes"].get("kibanaSavedObjectMeta", {}).get("searchSourceJSON", "{}")
    source: dict[str, Any] = json.loads(raw)
    return source


def lucene_query(obj: Mapping[str, Any]) -> str:
    query = search_source(obj).get("query") or {}
    if query.get("language", "lucene") != "lucene":
        raise ValueError(f"{obj['id']}: only Lucene queries can be checked, not {query.get('language')}")
    return str(query.get("query", ""))


def vis_state(obj: Mapping[str, Any]) -> dict[str, Any]:
    state: dict[str, Any] = json.loads(obj["attributes"]["visState"])
    return state


def fields_used(obj: Mapping[str, Any]) -> set[str]:
    """Every field a data view, saved search or visualization names."""
    attrs = obj["attributes"]
    used: set[str] = set()
    if obj["type"] == "index-pattern" and attrs.get("timeFieldName"):
        used.add(attrs["timeFieldName"])
    if obj["type"] in ("search", "visualization"):
        used.update(_FIELD.findall(lucene_query(obj)))
    if obj["type"] == "search":
        used.update(attrs.get("columns", []))
        used.update(field for field, _ in attrs.get("sort", []))
    if obj["type"] == "visualization":
        for agg in vis_state(obj)["aggs"]:
            if "field" in agg.get("params", {}):
                used.add(agg["params"]["field"])
    return used


def search_request(obj: Mapping[str, Any], substitutions: Mapping[str, str] | None = None,
                   *, size: int = 1000) -> dict[str, Any]:
    """The body Discover sends for a saved search (placeholders replaced)."""
    query = lucene_query(obj)
    for placeholder, value in (substitutions or {}).items():
        query = query.replace(placeholder, value)
    return {
        "query": {"query_string": {"query": query, "analyze_wildcard": True}} if query
        else {"match_all": {}},
        "sort": [{field: {"order": order, "unmapped_type": "date"}}
                 for field, order in obj["attributes"].get("sort", [])],
        "size": size,
    }


def vis_request(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The aggregation request of a (legacy) visualization: buckets nested in order, metrics inside."""
    state = vis_state(obj)
    metrics: dict[str, Any] = {}
    buckets: list[tuple[str, dict[str, Any]]] = []
    for agg in state["aggs"]:
        if not agg.get("enabled", True):
            continue
        p = agg.get("params", {})
        kind = agg["type"]
        if kind == "count":
            continue
        if kind == "percentiles":
            metrics[agg["id"]] = {"percentiles": {"field": p["field"], "percents": p["percents"]}}
        elif kind in ("avg", "max", "min", "sum", "cardinality"):
            metrics[agg["id"]] = {kind: {"field": p["field"]}}
        elif kind == "date_histogram":
            buckets.append((agg["id"], {"date_histogram": {
                "field": p["field"], "fixed_interval": "1m" if p.get("interval") == "auto"
                else p["interval"], "min_doc_count": p.get("min_doc_count", 1)}}))
        elif kind == "terms":
            buckets.append((agg["id"], {"terms": {"field": p["field"], "size": p.get("size", 10)}}))
        else:
            raise ValueError(f"{obj['id']}: aggregation {kind!r} not translated")
    aggs: dict[str, Any] = dict(metrics)
    for agg_id, body in reversed(buckets):
        aggs = {agg_id: {**body, **({"aggs": aggs} if aggs else {})}}
    query = lucene_query(obj)
    return {
        "size": 0,
        "query": {"query_string": {"query": query, "analyze_wildcard": True}} if query
        else {"match_all": {}},
        "aggs": aggs,
    }
