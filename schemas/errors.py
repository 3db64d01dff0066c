"""Errors of the event contracts.

    SchemaError          root
    └── InvalidEvent     bytes that are not a valid event of the expected type;
                         the message says what is wrong (bad JSON, unknown
                         schema_version, missing or mistyped field)
"""

from __future__ import annotations


class SchemaError(Exception):
    retriable = False


class InvalidEvent(SchemaError):
    pass
