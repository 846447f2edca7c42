"""YAML loading that remembers where each value came from.

Config errors must name the file and line (``topics.yaml:14: ...``), so mappings
load as :class:`LineDict`, which records the line of every key. Used by the topics
catalogue and the runbook loader alike.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml

from streams.errors import ConfigError

__all__ = [
    "ConfigError",
    "LineDict",
    "check_keys",
    "load_yaml",
    "load_yaml_documents",
    "load_yaml_text",
    "parse_duration_ms",
    "suggest",
]


class LineDict(dict[str, Any]):
    """A dict that knows the 1-based line of itself and of each of its keys."""

    line: int = 0
    key_lines: dict[str, int]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.key_lines = {}  # one built in code (an absent section's stand-in) knows no lines: its own is asked

    def line_of(self, key: str) -> int:
        return self.key_lines.get(key, self.line)


class _Loader(yaml.SafeLoader):  # type: ignore[misc]  # PyYAML ships no stubs (types-PyYAML is not installed)
    pass


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> LineDict:
    loader.flatten_mapping(node)
    result = LineDict()
    result.line = node.start_mark.line + 1
    result.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in result:
            raise ConfigError(loader.name, key_node.start_mark.line + 1, f"duplicate key {key!r}")
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_lines[key] = key_node.start_mark.line + 1
    return result


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _parsed(path: str | Path, parse: Callable[[_Loader], Any]) -> Any:
    """Read ``path`` and ``parse`` it; unreadable files and YAML errors become :class:`ConfigError` with the line."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(path, None, f"cannot read: {exc.strerror}") from exc
    except UnicodeDecodeError:
        raise ConfigError(path, None, "not a text file (UTF-8)") from None
    return _parsed_text(text, path, parse)


def _parsed_text(text: str, path: str | Path, parse: Callable[[_Loader], Any]) -> Any:
    loader = None
    try:
        loader = _Loader(text)  # the reader refuses a control character here, before any parsing
        loader.name = str(path)
        return parse(loader)
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else None
        raise ConfigError(path, line, f"invalid YAML: {exc.problem}") from exc
    except yaml.reader.ReaderError as exc:
        line, char = text.count("\n", 0, exc.position) + 1, exc.character
        shown = f"U+{char:04X}" if isinstance(char, int) else repr(char)
        raise ConfigError(path, line, f"invalid YAML: control character {shown} is not allowed") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(path, None, f"invalid YAML: {exc}") from exc
    except RecursionError:  # thousands of nested brackets: PyYAML's composer recurses per level
        raise ConfigError(path, None, "invalid YAML: nested too deeply") from None
    finally:
        if loader is not None:
            loader.dispose()


def _all_documents(loader: _Loader) -> list[Any]:
    docs = []
    while loader.check_data():
        docs.append(loader.get_data())
    return docs


def load_yaml(path: str | Path) -> Any:
    """Parse a YAML file of one document; syntax errors become :class:`ConfigError` with the line."""
    return _parsed(path, lambda loader: loader.get_single_data())


def load_yaml_text(text: str, origin: str) -> Any:
    """Parse one YAML document given as text (an environment variable's value), as :func:`load_yaml` parses a file's;
    errors name ``origin``."""
    return _parsed_text(text, origin, lambda loader: loader.get_single_data())


def load_yaml_documents(path: str | Path) -> list[Any]:
    """Every document of a YAML file (``---``-separated), mappings as :class:`LineDict`; errors as in :func:`load_yaml`."""
    docs: list[Any] = _parsed(path, _all_documents)
    return docs


def load_embedded_yaml_documents(text: str, path: str | Path, after_line: int) -> list[Any]:
    """The documents of a YAML text held in a file's block scalar (``key: |`` at ``after_line``), their lines
    counted as the file's: the scalar's first line is the file's ``after_line + 1``."""
    docs: list[Any] = _parsed_text("\n" * after_line + text, path, _all_documents)
    return docs


def suggest(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` when a close match exists, else an empty string."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_keys(path: str | Path, mapping: LineDict, allowed: Iterable[str], what: str) -> None:
    """Reject unknown keys, naming the key, its line and the nearest valid one."""
    allowed = list(allowed)
    for key in mapping:
        if key not in allowed:
            raise ConfigError(path, mapping.line_of(key), f"{what}: unknown field {key!r}{suggest(str(key), allowed)}")


_UNITS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
# The longest duration a file may give: 100 years. No wait, window or interval needs more, and a time
# that far ahead still fits the records' epoch milliseconds (an Avro long); 999999999999d did not.
MAX_DURATION_MS = 36_500 * 86_400_000


def parse_duration_ms(value: Any) -> int:
    """``"15m"`` → 900000. Accepts ms/s/m/h/d/w suffixes and combinations like ``1h30m``.

    Raises ValueError with the offending text; callers wrap it into a ConfigError.
    """
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, int):
        return _bounded(value * 1000, str(value))
    text = str(value).strip()
    if not text:
        raise ValueError("empty duration")
    total, number = 0, ""
    i = 0
    matched = False
    while i < len(text):
        ch = text[i]
        if "0" <= ch <= "9":  # ASCII digits only: str.isdigit() also takes '²', which int() refuses
            number += ch
            i += 1
            continue
        unit = "ms" if text.startswith("ms", i) else ch
        if unit not in _UNITS or not number:
            raise ValueError(f"not a duration: {text!r} (use e.g. 30s, 15m, 4h, 7d)")
        total += int(number) * _UNITS[unit]
        number = ""
        matched = True
        i += len(unit)
    if number:
        raise ValueError(f"not a duration: {text!r} (a number needs a unit: ms, s, m, h, d, w)")
    if not matched:
        raise ValueError(f"not a duration: {text!r}")
    return _bounded(total, text)


def _bounded(total: int, text: str) -> int:
    if total < 0:
        raise ValueError(f"not a duration: {text!r} (negative)")
    if total > MAX_DURATION_MS:
        raise ValueError(f"duration {text!r} is longer than 100 years (36500d)")
    return total
