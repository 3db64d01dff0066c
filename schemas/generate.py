"""Write the JSON Schema of every event to ``schemas/json/`` (``python -m schemas.generate``)."""

from __future__ import annotations

import sys
from pathlib import Path

import orjson

from schemas.events import TOPIC_EVENTS
from schemas.feedback import FEEDBACK_TOPIC_EVENTS

JSON_DIR = Path(__file__).with_name("json")


def render() -> dict[str, bytes]:
    files = {}
    for topic, model in {**TOPIC_EVENTS, **FEEDBACK_TOPIC_EVENTS}.items():
        schema = model.model_json_schema(mode="validation")
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"aichat/{topic}/{model.__name__}.schema.json"
        schema["x-topic"] = topic
        files[f"{model.__name__}.schema.json"] = orjson.dumps(
            schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS
        ) + b"\n"
    return files


def main() -> int:
    JSON_DIR.mkdir(exist_ok=True)
    for name, content in render().items():
        (JSON_DIR / name).write_bytes(content)
        sys.stdout.write(f"wrote {JSON_DIR / name}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
