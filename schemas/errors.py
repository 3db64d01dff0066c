"""Errors of the event contracts.

    SchemaError          root
    ├── NotAJsonObject   bytes that are not one JSON object (not JSON at all, or
    │                    JSON of another type): :func:`schemas.codec.load_object`
    └── InvalidEvent     bytes that are not a valid event of the expected type;
                         the message says what is wrong (bad JSON, unknown
                         schema_version, missing or mistyped field)
"""

from __future__ import annotations


class SchemaError(Exception):
    retriable = False


class NotAJsonObject(SchemaError):
    pass


class InvalidEvent(SchemaError):
    pass
