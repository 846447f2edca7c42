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


# Alertmanager (Go's RE2) and Python's re read some patterns differently, so a silence written
# for Alertmanager would match other labels here. RE2's POSIX classes (``[[:alpha:]]``) are a
# set ``[:alph`` then a literal ``]`` to Python (with a warning); RE2's ``\d``, ``\w``, ``\s`` and
# ``\b`` are ASCII, Python's Unicode (``\d`` matched "١٢"). The ASCII sets RE2 documents:
_POSIX_CLASSES = {
    "alnum": "0-9A-Za-z",
    "alpha": "A-Za-z",
    "ascii": "\\x00-\\x7f",
    "blank": "\\t ",
    "cntrl": "\\x00-\\x1f\\x7f",
    "digit": "0-9",
    "graph": "!-~",
    "lower": "a-z",
    "print": " -~",
    "punct": "!-/:-@\\[-`{-~",
    "space": "\\t\\n\\v\\f\\r ",
    "upper": "A-Z",
    "word": "0-9A-Za-z_",
    "xdigit": "0-9A-Fa-f",
}
_PERL_CLASSES = {"d": "0-9", "w": "0-9A-Za-z_", "s": "\\t\\n\\f\\r "}  # \D, \W, \S: their complements
_POSIX_ITEM = re.compile(r"\[:(\^?)([a-z]*):\]")


def re2_pattern(pattern: str) -> str:
    r"""``pattern`` as Alertmanager's RE2 reads it, spelt for Python's re: the same strings match.

    POSIX classes and ``\d \w \s`` (and their capitals) become their ASCII sets, ``\b \B`` ASCII
    word boundaries, ``\z`` Python's ``\Z``. A complemented class (``[[:^digit:]]``, ``[\D]``) is
    supported as a bracket's only item; beside other items it is refused rather than approximated.
    What Python's re cannot read at all (``\pL``, ``\Q..\E``) is refused by ``re.compile``.
    """
    if "\\" not in pattern and "[:" not in pattern:
        return pattern
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "\\":
            esc = pattern[i + 1 : i + 2]
            if esc.lower() in _PERL_CLASSES:
                out.append(f"[{'^' if esc.isupper() else ''}{_PERL_CLASSES[esc.lower()]}]")
            elif esc in ("b", "B"):
                out.append(f"(?a:\\{esc})")
            elif esc == "z":
                out.append("\\Z")
            else:
                out.append(pattern[i : i + 2])
            i += 2
            continue
        if ch != "[":
            out.append(ch)
            i += 1
            continue
        j, negated = i + 1, False
        if j < n and pattern[j] == "^":
            negated, j = True, j + 1
        items: list[str] = []
        complements: list[str] = []
        while j < n and not (pattern[j] == "]" and (items or complements)):
            posix = _POSIX_ITEM.match(pattern, j)
            if posix:
                name = posix.group(2)
                if name not in _POSIX_CLASSES:
                    known = ", ".join(_POSIX_CLASSES)
                    raise MatcherError(f"unknown POSIX class [:{name}:] in {pattern!r}; known: {known}")
                (complements if posix.group(1) else items).append(_POSIX_CLASSES[name])
                j = posix.end()
            elif pattern[j] == "\\":
                esc = pattern[j + 1 : j + 2]
                if esc.lower() in _PERL_CLASSES:
                    (complements if esc.isupper() else items).append(_PERL_CLASSES[esc.lower()])
                else:
                    items.append(pattern[j : j + 2])
                j += 2
            else:
                items.append("\\[" if pattern[j] == "[" else pattern[j])  # to RE2 a "[" here is literal
                j += 1
        if j >= n:
            raise MatcherError(f"missing closing ] in {pattern!r}")
        if complements:
            if items or len(complements) > 1:
                raise MatcherError(f"a complemented class beside other items is not supported: {pattern!r}")
            out.append(f"[{'' if negated else '^'}{complements[0]}]")
        else:
            out.append(f"[{'^' if negated else ''}{''.join(items)}]")
        i = j + 1
    return "".join(out)


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
            regex = re.compile(re2_pattern(value))
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
