"""Bytes on the wire ⇄ event models, and the compact vector encoding."""

from __future__ import annotations

import base64
from typing import TypeVar

import numpy as np
import orjson
from pydantic import ValidationError

from schemas.errors import InvalidEvent
from schemas.events import SCHEMA_VERSION, Event

E = TypeVar("E", bound=Event)


def encode(event: Event) -> bytes:
    # pydantic-core writes the JSON in one pass: the bytes orjson makes of
    # model_dump(mode="json"), without building the dict first (every event goes through here)
    return event.__pydantic_serializer__.to_json(event)


def decode(model: type[E], raw: bytes | None) -> E:
    """Parse and validate; raise :class:`InvalidEvent` with a reason a human can act on."""
    if raw is None:
        raise InvalidEvent("empty value (tombstone or null)")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidEvent(f"expected a JSON object, got {type(data).__name__}")
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
