"""Alertmanager-style label matchers: ``name = value``, ``!=``, ``=~``, ``!~``.

Routes, runbook matches, silences, maintenance windows and inhibit rules all select
events with the same matchers, written the way Alertmanager users already write them
(``matchers: ['service=~"db|cache"', 'severity="urgent"']``). Regular expressions
are fully anchored, as in Alertmanager, so ``=~"db"`` does not match ``dbproxy``.
A label the event does not carry matches as the empty string (Alertmanager's rule),
which is what makes ``team!="infra"`` true for events without a team label.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from streams.errors import InvalidInputError

OPERATORS = ("=", "!=", "=~", "!~")

_LABEL = r"[A-Za-z_][A-Za-z0-9_]*"
_MATCHER = re.compile(rf"^\s*({_LABEL})\s*(=~|!~|!=|=)\s*(.*?)\s*$", re.DOTALL)


class MatcherError(InvalidInputError, ValueError):
    """A matcher is malformed; the message says what and where in the text."""


@dataclass(frozen=True)
class Matcher:
    name: str
    op: str
    value: str
    _regex: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    def matches(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.name, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        hit = self._regex.fullmatch(actual) is not None  # type: ignore[union-attr]
        return hit if self.op == "=~" else not hit

    def __str__(self) -> str:
        escaped = self.value.replace("\\", "\\\\").replace('"', '\\"')
        return f'{self.name}{self.op}"{escaped}"'


def make_matcher(name: str, op: str, value: str) -> Matcher:
    """Build a matcher, compiling (and so validating) a regex value once."""
    if not re.fullmatch(_LABEL, name or ""):
        raise MatcherError(f"invalid label name {name!r}")
    if op not in OPERATORS:
        raise MatcherError(f"unknown operator {op!r}; expected one of {', '.join(OPERATORS)}")
    if not isinstance(value, str):
        raise MatcherError(f"{name}: value must be a string, got {value!r}")
    regex = None
    if op in ("=~", "!~"):
        try:
            regex = re.compile(value)
        except re.error as exc:
            raise MatcherError(f"{name}{op}: invalid regular expression {value!r}: {exc}") from None
    return Matcher(name, op, value, regex)


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] == '"':
        body, out, i = text[1:-1], [], 0
        while i < len(body):
            ch = body[i]
            if ch == "\\" and i + 1 < len(body):
                nxt = body[i + 1]
                out.append({"n": "\n", "t": "\t"}.get(nxt, nxt))
                i += 2
                continue
            if ch == '"':
                raise MatcherError(f"unescaped quote inside {text}")
            out.append(ch)
            i += 1
        return "".join(out)
    if '"' in text:
        raise MatcherError(f"unbalanced quotes in {text!r}")
    return text


def parse_matcher(text: str) -> Matcher:
    """Parse one matcher in Alertmanager's syntax: ``service=~"db.*"`` or ``team = infra``."""
    if not isinstance(text, str):
        raise MatcherError(f"a matcher must be a string like 'service=\"db\"', got {text!r}")
    m = _MATCHER.match(text)
    if not m:
        raise MatcherError(
            f"cannot parse matcher {text!r} (expected name=value, name!=value, name=~regex or name!~regex)"
        )
    name, op, raw = m.groups()
    return make_matcher(name, op, _unquote(raw))


def parse_matchers(items: Iterable[str]) -> tuple[Matcher, ...]:
    return tuple(parse_matcher(item) for item in items)


def equality_matchers(mapping: Mapping[str, Any], *, regex: bool = False) -> tuple[Matcher, ...]:
    """Alertmanager's older ``match:`` / ``match_re:`` maps as matchers."""
    return tuple(make_matcher(str(k), "=~" if regex else "=", str(v)) for k, v in sorted(mapping.items()))


def matches_all(matchers: Sequence[Matcher], labels: Mapping[str, str]) -> bool:
    """True when every matcher holds (an empty list matches everything)."""
    for matcher in matchers:
        if not matcher.matches(labels):
            return False
    return True
