"""Typed readers for JSON bodies: each returns the value or raises BadRequest naming its path.

The parsers of every endpoint are built from these so a wrong type anywhere reads
the same way: ``alerts[0].labels: expected a mapping of strings``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from streams.errors import InvalidInputError
from streams.ingest.errors import BadRequest
from streams.model.records import CONTROL_CHARS, UNSTORABLE_CHARS, unstorable_char_name

_MISSING = object()
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def index(path: str, i: int) -> str:
    return f"{path}[{i}]"


MAX_DEPTH = 32  # objects / arrays inside each other
MAX_INT_DIGITS = 19  # Avro long: |n| < 2**63
MAX_STRING_CHARS = 256 * 1024


def _no_constant(name: str) -> Any:
    raise _Refused("", f"{name} is not a JSON number (NaN and Infinity are refused)")


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS or abs(value := int(text)) >= 2**63:
        raise _Refused("", f"integer of {len(text.lstrip('-'))} digits is out of range (at most 64-bit)")
    return value


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value) or math.isnan(value):
        raise _Refused("", f"number {text[:20]}... is out of range (not a finite double)")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _Refused("", f"duplicate key {key[:40]!r} in an object")
        out[key] = value
    return out


class _Refused(InvalidInputError, ValueError):
    """A JSON value refused while parsing (depth, size, a number that is not finite); ``path`` names it."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(reason)
        self.path, self.reason = path, reason


def _check_tree(value: Any) -> None:
    """Depth, string lengths and characters (NUL, lone surrogates) of a parsed body; names the path."""
    stack: list[tuple[Any, str, int]] = [(value, "", 0)]
    while stack:
        node, path, depth = stack.pop()
        if isinstance(node, str):
            if len(node) > MAX_STRING_CHARS:
                raise BadRequest(path or "body", f"string of {len(node)} characters exceeds {MAX_STRING_CHARS}")
            if (bad := UNSTORABLE_CHARS.search(node)) is not None:
                raise BadRequest(
                    path or "body", f"contains {unstorable_char_name(bad.group())} at character {bad.start()}"
                )
            continue
        if isinstance(node, (dict, list)):
            if depth >= MAX_DEPTH:
                raise BadRequest(path or "body", f"nested deeper than {MAX_DEPTH} levels")
            if isinstance(node, dict):
                for key, item in node.items():
                    if (bad := UNSTORABLE_CHARS.search(key)) is not None:
                        raise BadRequest(
                            join(path, "<key>"), f"an object key contains {unstorable_char_name(bad.group())}"
                        )
                    stack.append((item, join(path, key[:64]), depth + 1))
            else:
                stack.extend((item, index(path, i), depth + 1) for i, item in enumerate(node))


def parse_json(body: bytes) -> Any:
    """Decode a request body strictly; every refusal is a 400 naming the reason.

    Malformed or truncated JSON names the line and column. Refused as well: NaN /
    Infinity, numbers out of range (``1e999``, integers beyond 64 bits), duplicate
    keys, nesting deeper than :data:`MAX_DEPTH`, NUL characters and lone surrogates
    (``\\ud800``) anywhere, strings longer than :data:`MAX_STRING_CHARS`.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest("body", f"not UTF-8 (byte {exc.start})") from None
    if not text.strip():
        raise BadRequest("body", "empty; expected JSON")
    try:
        value = json.loads(
            text,
            parse_constant=_no_constant,
            parse_int=_bounded_int,
            parse_float=_finite_float,
            object_pairs_hook=_unique_keys,
        )
    except _Refused as exc:
        raise BadRequest("body", exc.reason) from None
    except RecursionError:
        raise BadRequest("body", f"nested deeper than {MAX_DEPTH} levels") from None
    except json.JSONDecodeError as exc:
        raise BadRequest("body", f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except ValueError as exc:  # e.g. int() refusing more digits than sys.get_int_max_str_digits()
        raise BadRequest("body", f"invalid JSON number ({str(exc)[:80]})") from None
    _check_tree(value)
    return value


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


def string_map(
    value: Any, path: str, *, required: bool = False, nonempty: bool = False, text: bool = False
) -> dict[str, str]:
    """A JSON object of string values (labels; annotations with ``text``, whose long values
    :func:`clip_annotations` cuts where every event is finished, instead of a 400 here)."""
    if value is None:
        if required:
            raise BadRequest(path, "required")
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(v, str) for v in value.values()):
        raise BadRequest(path, "expected a mapping of strings")
    if nonempty and not value:
        raise BadRequest(path, "empty; expected at least one label")
    for name, item in value.items():
        if text:
            check_label_name(name, path)
        else:
            check_label(name, item, path)
    return dict(value)


MAX_LABEL_NAME = 128
MAX_LABEL_VALUE = 4096


def clip_annotations(annotations: Any) -> Any:
    """Annotation values past :data:`MAX_LABEL_VALUE` characters cut there, with a marker saying how long they were.

    Why not a 400 as for a label: an annotation is text for people (a templated description, a runbook's
    text), not the alert's identity, and a 400 made Prometheus drop every alert of the post (it does not
    retry a 4xx). Anything else is returned as it is, for the checks after to judge.
    """
    if not isinstance(annotations, Mapping) or not any(
        isinstance(v, str) and len(v) > MAX_LABEL_VALUE for v in annotations.values()
    ):
        return annotations
    out = {}
    for key, value in annotations.items():
        if isinstance(value, str) and len(value) > MAX_LABEL_VALUE:
            marker = f" … (cut from {len(value)} characters)"
            value = value[: MAX_LABEL_VALUE - len(marker)] + marker
        out[key] = value
    return out


def check_label(name: Any, value: Any, path: str) -> None:
    """A label (or annotation) name (:func:`check_label_name`) and its value: at most 4096 characters."""
    check_label_name(name, path)
    if isinstance(value, str) and len(value) > MAX_LABEL_VALUE:
        raise BadRequest(join(path, name), f"value longer than {MAX_LABEL_VALUE} characters")


def check_label_name(name: Any, path: str) -> None:
    """A label (or annotation) name: 1..128 characters, no control characters."""
    if not isinstance(name, str) or not name:
        raise BadRequest(path, "a label name is empty")
    if len(name) > MAX_LABEL_NAME:
        raise BadRequest(join(path, name[:40] + "..."), f"label name longer than {MAX_LABEL_NAME} characters")
    if CONTROL_CHARS.search(name):
        raise BadRequest(path, "a label name contains a control character")


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
    return {
        dict: "an object",
        list: "an array",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
    }.get(type(value), type(value).__name__)
