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

import re2

from streams.errors import InvalidInputError

OPERATORS = ("=", "!=", "=~", "!~")

# Alertmanager's matcher grammar (pkg/labels/parse.go) takes ":" in a label name, as recording rules
# name series; Prometheus' own label names never carry one, other sources' labels may.
_LABEL = r"[A-Za-z_:][A-Za-z0-9_:]*"
_MATCHER = re.compile(rf"^\s*({_LABEL})\s*(=~|!~|!=|=)\s*(.*?)\s*$", re.DOTALL)


class MatcherError(InvalidInputError, ValueError):
    """A matcher is malformed; the message says what and where in the text."""


# Regexes are compiled by RE2 (google-re2), the engine Alertmanager's Go regexp follows, not by
# Python's re: the two read some patterns differently (POSIX classes such as ``[[:alpha:]]`` were
# a set then a literal ``]`` to re; ``\d \w \s \b`` are ASCII in RE2, Unicode in re; ``\z``),
# so a silence written for Alertmanager selected other alerts here; and re backtracks, so
# ``(a+)+b`` against 30 a's took minutes: one org's silence or one API filter could stall a
# worker for every org. RE2 matches in linear time and refuses what it cannot (lookarounds,
# backreferences), as Alertmanager does. A match costs ~9 µs against re's ~0.7, so each matcher
# remembers its answers for the label values it has seen (they repeat: services, alertnames).
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # a refused pattern is a MatcherError, not a line on stderr
MATCH_MEMO_MAX = 4096


@dataclass(frozen=True)
class Matcher:
    name: str
    op: str
    value: str
    _regex: Any = field(default=None, compare=False, repr=False)  # an RE2 pattern (google-re2 ships no types)
    _hits: dict[str, bool] = field(default_factory=dict, compare=False, repr=False)

    def matches(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.name, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        hits = self._hits
        hit = hits.get(actual)
        if hit is None:
            if len(hits) >= MATCH_MEMO_MAX:
                hits.clear()
            hit = hits[actual] = self._regex.fullmatch(actual) is not None
        return hit if self.op == "=~" else not hit

    def __deepcopy__(self, memo: dict[int, Any]) -> Matcher:
        return self  # immutable; an RE2 pattern does not deep-copy

    def __str__(self) -> str:
        escaped = self.value.replace("\\", "\\\\").replace('"', '\\"')
        return f'{self.name}{self.op}"{escaped}"'


def is_label_name(name: str) -> bool:
    """A name a matcher can state (``[A-Za-z_:][A-Za-z0-9_:]*``). Ingest keeps labels of other names, as
    Prometheus 3's UTF-8 names, so code that makes matchers from an alert's labels must ask."""
    return re.fullmatch(_LABEL, name or "") is not None


def make_matcher(name: str, op: str, value: str) -> Matcher:
    """Build a matcher, compiling (and so validating) a regex value once."""
    if not is_label_name(name):
        raise MatcherError(f"invalid label name {name!r}")
    if op not in OPERATORS:
        raise MatcherError(f"unknown operator {op!r}; expected one of {', '.join(OPERATORS)}")
    if not isinstance(value, str):
        raise MatcherError(f"{name}: value must be a string, got {value!r}")
    regex = None
    if op in ("=~", "!~"):
        try:
            regex = re2.compile(value, options=_RE2_OPTIONS)
        except re2.error as exc:
            reason = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else exc
            raise MatcherError(f"{name}{op}: invalid regular expression {value!r}: {reason}") from None
    return Matcher(name, op, value, regex)


def _unquote(text: str) -> str:
    """The value as Alertmanager reads it (``ParseMatcher``, pkg/labels/parse.go): ``\\n``, ``\\"`` and
    ``\\\\`` are escapes; any other backslash stays, so ``=~"\\d+"`` is the regex ``\\d+`` (it was
    ``d+`` here); a quote may only close a value that opened with one."""
    quoted = text.startswith('"')
    raw = text[1:] if quoted else text
    out: list[str] = []
    escaped = False
    last = len(raw) - 1
    for i, ch in enumerate(raw):
        if escaped:
            escaped = False
            out.append("\n" if ch == "n" else ch if ch in '"\\' else "\\" + ch)
        elif ch == "\\" and i < last:
            escaped = True
        elif ch == '"':
            if not quoted or i < last:
                raise MatcherError(f"unescaped quote inside {text}")
            quoted = False
        else:
            out.append(ch)
    if quoted:
        raise MatcherError(f"missing closing quote in {text}")
    return "".join(out)


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
