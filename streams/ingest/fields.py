"""Typed readers for JSON bodies: each returns the value or raises BadRequest naming its path.

The parsers of every endpoint are built from these so a wrong type anywhere reads
the same way: ``alerts[0].labels: expected a mapping of strings``.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping

from streams.ingest.errors import BadRequest

_MISSING = object()
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MS = timedelta(milliseconds=1)


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def index(path: str, i: int) -> str:
    return f"{path}[{i}]"


def parse_json(body: bytes) -> Any:
    """Decode a request body; malformed or truncated JSON names the line and column."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest("body", f"not UTF-8 (byte {exc.start})") from None
    if not text.strip():
        raise BadRequest("body", "empty; expected JSON")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadRequest("body", f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None


def obj(value: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise BadRequest(path or "body", f"expected an object, got {_type(value)}")
    return value


def array(value: Any, path: str, *, nonempty: bool = False) -> list[Any]:
    if not isinstance(value, list):
        raise BadRequest(path or "body", f"expected an array, got {_type(value)}")
    if nonempty and not value:
        raise BadRequest(path or "body", "empty; expected at least one item")
    return value


def string(m: Mapping[str, Any], key: str, path: str, *, required: bool = True, default: str = "") -> str:
    value = m.get(key, _MISSING)
    if value is _MISSING or value is None:
        if required:
            raise BadRequest(join(path, key), "required")
        return default
    if not isinstance(value, str):
        raise BadRequest(join(path, key), f"expected a string, got {_type(value)}")
    if required and not value:
        raise BadRequest(join(path, key), "required (empty string)")
    return value


def integer(m: Mapping[str, Any], key: str, path: str) -> int:
    value = m.get(key)
    if value is None:
        raise BadRequest(join(path, key), "required")
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(join(path, key), f"expected an integer, got {_type(value)}")
    return value


def string_map(value: Any, path: str, *, required: bool = False, nonempty: bool = False) -> dict[str, str]:
    """A JSON object of string values (labels, annotations)."""
    if value is None:
        if required:
            raise BadRequest(path, "required")
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(v, str) for v in value.values()):
        raise BadRequest(path, "expected a mapping of strings")
    if nonempty and not value:
        raise BadRequest(path, "empty; expected at least one label")
    return dict(value)


def timestamp_ms(value: Any, path: str, *, required: bool = False, allow_millis: bool = False) -> int | None:
    """RFC 3339 text (or epoch ms where allowed) → epoch ms; Go's zero time → None.

    Alertmanager writes ``0001-01-01T00:00:00Z`` for "no end yet"; anything before the
    epoch is treated the same way.
    """
    if value is None or value == "":
        if required:
            raise BadRequest(path, "required")
        return None
    if allow_millis and isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise BadRequest(path, f"expected epoch milliseconds >= 0, got {value}")
        return value
    if not isinstance(value, str):
        expected = "an RFC 3339 timestamp or epoch milliseconds" if allow_millis else "an RFC 3339 timestamp"
        raise BadRequest(path, f"expected {expected}, got {_type(value)}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise BadRequest(path, f"not an RFC 3339 timestamp: {value[:40]!r}") from None
    if parsed.tzinfo is None:
        raise BadRequest(path, f"timestamp without a time zone: {value[:40]!r}")
    if parsed.year < 1970:
        return None
    return (parsed - _EPOCH) // _MS  # integer arithmetic: no float rounding of the millisecond


def _type(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}.get(
        type(value), type(value).__name__
    )
