"""Bytes on the wire ⇄ event models, and the compact vector encoding.

:func:`load_object` is the one "parse a JSON object or say why" of the project: events
here, the gateway's client frames and JSON Lines records.
"""

from __future__ import annotations

import base64
from typing import Any, TypeVar

import numpy as np
import orjson
from pydantic import ValidationError

from schemas.errors import InvalidEvent, NotAJsonObject
from schemas.events import SCHEMA_VERSION, Event

E = TypeVar("E", bound=Event)


def encode(event: Event) -> bytes:
    # pydantic-core writes the JSON in one pass: the bytes orjson makes of
    # model_dump(mode="json"), without building the dict first (every event goes through here)
    return event.__pydantic_serializer__.to_json(event)


def load_object(raw: str | bytes, *, not_json: str = "not JSON") -> dict[str, Any]:
    """``raw`` as one JSON object; else :class:`NotAJsonObject` saying why, as
    ``"<not_json>: <the parser's message>"`` or ``"expected a JSON object, got list"``
    (``not_json`` is the caller's words for bytes that are not JSON at all)."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise NotAJsonObject(f"{not_json}: {exc}") from None
    if not isinstance(data, dict):
        raise NotAJsonObject(f"expected a JSON object, got {type(data).__name__}")
    return data


def decode(model: type[E], raw: bytes | None) -> E:
    """Parse and validate; raise :class:`InvalidEvent` with a reason a human can act on."""
    if raw is None:
        raise InvalidEvent("empty value (tombstone or null)")
    try:
        data = load_object(raw)
    except NotAJsonObject as exc:
        raise InvalidEvent(str(exc)) from None
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise InvalidEvent(
            f"unsupported schema_version {version!r} for {model.__name__} (expected {SCHEMA_VERSION})"
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}" for err in exc.errors()
        )
        raise InvalidEvent(f"invalid {model.__name__}: {problems}") from None


def pack_vector(vector: np.ndarray) -> str:
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")


def unpack_vector(encoded: str, dim: int) -> np.ndarray:
    try:
        raw = base64.b64decode(encoded, validate=True)
    except ValueError as exc:
        raise InvalidEvent(f"vector is not base64: {exc}") from None
    if len(raw) != dim * 4:
        raise InvalidEvent(f"vector has {len(raw) // 4} float32 values, dim says {dim}")
    return np.frombuffer(raw, dtype="<f4")
