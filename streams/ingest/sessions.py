"""Session-key rules: which events belong to one incident, pull request or scan config.

The rules live in YAML (``runbooks/sessions.yaml``) so operators change grouping
without code. Each rule has a ``match`` (kind, source, type globs, label values)
and a ``key`` template whose placeholders name facts of the event; ``{a|b}`` takes
the first of ``a``, ``b`` that is present and non-empty. Rules are tried in order;
the first that matches *and* can fill its template names the session, and its name
is recorded on the event (``session_rule``) for audits. A rule whose template cannot
be filled (no ``service`` and no ``instance`` label, say) falls through to the next.

Everything here is pure: the loader turns a file into rules (or a ConfigError with
file:line), and :func:`session_key` turns facts into a key.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streams.errors import InvalidInputError
from streams.kafka.catalogue import EVENT_KINDS
from streams.model.yamlfile import ConfigError, LineDict, check_keys, load_yaml, suggest

# Facts an event offers to key templates, besides labels.<name>.
FACTS = (
    "org",
    "kind",
    "type",
    "source",
    "fingerprint",  # every event / alerts
    "repository",
    "number",  # pull requests
    "dedup_key",
    "incident_id",  # PagerDuty incidents
    "config_id",
    "scan_type",  # scans
    "subject",
)
RULE_FIELDS = ("name", "description", "match", "key")
MATCH_FIELDS = ("kind", "source", "type", "labels")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


class NoSessionRule(InvalidInputError, LookupError):
    """No rule matched the event and could fill its key template."""


@dataclass(frozen=True)
class Template:
    text: str
    # literal text, or the alternatives of one placeholder
    parts: tuple[str | tuple[str, ...], ...]

    def render(self, facts: Mapping[str, str]) -> str | None:
        out = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            value = next((facts[name] for name in part if facts.get(name)), None)
            if value is None:
                return None
            out.append(value)
        return "".join(out)


@dataclass(frozen=True)
class SessionRule:
    name: str
    key: Template
    kinds: frozenset[str] = frozenset()
    sources: frozenset[str] = frozenset()
    types: tuple[str, ...] = ()  # fnmatch globs
    labels: Mapping[str, str] = field(default_factory=dict)

    def matches(self, facts: Mapping[str, str]) -> bool:
        if self.kinds and facts.get("kind") not in self.kinds:
            return False
        if self.sources and facts.get("source") not in self.sources:
            return False
        if self.types and not any(fnmatch.fnmatchcase(facts.get("type", ""), t) for t in self.types):
            return False
        return all(facts.get(f"labels.{k}") == v for k, v in self.labels.items())


def make_facts(
    *, org: str, kind: str, type: str, source: str, labels: Mapping[str, str] | None = None, **extra: Any
) -> dict[str, str]:
    """The flat fact dict templates read: the envelope fields, ``labels.<name>`` and extras."""
    facts = {"org": org, "kind": kind, "type": type, "source": source}
    for name, value in extra.items():
        if value is not None and value != "":
            facts[name] = str(value)
    for name, value in (labels or {}).items():
        facts[f"labels.{name}"] = value
    return facts


# The longest session key (its audit columns, streams/audit/models.py; ingest refuses a longer one a client gives).
SESSION_KEY_MAX = 512


def bounded_key(key: str) -> str:
    """``key``, or for one longer than :data:`SESSION_KEY_MAX` its head and a hash of all of it.

    Why: a label value may hold 4,096 characters, so a key made from one (an alert whose ``service`` is
    600 characters) was refused with a 400 naming a session_key the sender never sent, and the alert
    was lost. The head keeps the org prefix and what an operator reads; the hash keeps distinct keys
    distinct and the same labels in the same session.
    """
    if len(key) <= SESSION_KEY_MAX:
        return key
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{key[: SESSION_KEY_MAX - len(digest) - 1]}~{digest}"


def session_key(rules: Iterable[SessionRule], facts: Mapping[str, str]) -> tuple[str, str]:
    """``(key, rule name)`` of the first rule that matches and can fill its template (bounded: :func:`bounded_key`)."""
    for rule in rules:
        if rule.matches(facts):
            key = rule.key.render(facts)
            if key:
                return bounded_key(key), rule.name
    raise NoSessionRule(f"no session rule applies to a {facts.get('kind')} event of type {facts.get('type')!r}")


# -- loading ------------------------------------------------------------------------


def parse_template(text: Any, path: Path, line: int, what: str) -> Template:
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(
            path, line, f"{what}: key must be a non-empty template string like '{{org}}:alert:{{labels.alertname}}'"
        )
    parts: list[str | tuple[str, ...]] = []
    pos = 0
    for m in _PLACEHOLDER.finditer(text):
        literal = text[pos : m.start()]
        if "{" in literal or "}" in literal:
            raise ConfigError(path, line, f"{what}: unbalanced brace in key {text!r}")
        if literal:
            parts.append(literal)
        names = tuple(n.strip() for n in m.group(1).split("|"))
        for name in names:
            if not name:
                raise ConfigError(path, line, f"{what}: empty placeholder in key {text!r}")
            if not (name in FACTS or (name.startswith("labels.") and len(name) > len("labels."))):
                raise ConfigError(
                    path,
                    line,
                    f"{what}: unknown fact {name!r} in key{suggest(name, FACTS)}; known: {', '.join(FACTS)}, labels.<name>",
                )
        parts.append(names)
        pos = m.end()
    tail = text[pos:]
    if "{" in tail or "}" in tail:
        raise ConfigError(path, line, f"{what}: unbalanced brace in key {text!r}")
    if tail:
        parts.append(tail)
    if not any(isinstance(p, tuple) for p in parts):
        raise ConfigError(
            path, line, f"{what}: key {text!r} has no placeholder, so every event would share one session"
        )
    return Template(text, tuple(parts))


def _strings(value: Any, path: Path, line: int, what: str) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(v, str) and v for v in items):
        raise ConfigError(path, line, f"{what}: expected a string or a list of strings, got {value!r}")
    return tuple(items)


def parse_rules(doc: Any, path: str | Path) -> list[SessionRule]:
    path = Path(path)
    if not isinstance(doc, LineDict):
        raise ConfigError(path, None, "expected a mapping with 'rules:'")
    check_keys(path, doc, ("rules",), "top level")
    items = doc.get("rules")
    if not isinstance(items, list) or not items:
        raise ConfigError(path, doc.line_of("rules"), "rules: expected a non-empty list of rules")
    rules: list[SessionRule] = []
    names: set[str] = set()
    for i, item in enumerate(items):
        if not isinstance(item, LineDict):
            raise ConfigError(path, doc.line_of("rules"), f"rules[{i}]: expected a mapping with name, match and key")
        name = item.get("name")
        what = f"rule {name!r}" if isinstance(name, str) and name else f"rules[{i}]"
        check_keys(path, item, RULE_FIELDS, what)
        if not isinstance(name, str) or not name:
            raise ConfigError(path, item.line, f"{what}: name is required")
        if name in names:
            raise ConfigError(path, item.line_of("name"), f"{what}: duplicate rule name")
        names.add(name)
        if "key" not in item:
            raise ConfigError(path, item.line, f"{what}: key is required")
        template = parse_template(item["key"], path, item.line_of("key"), what)
        match = item.get("match") or LineDict()
        if not isinstance(match, LineDict):
            raise ConfigError(path, item.line_of("match"), f"{what}: match must be a mapping")
        check_keys(path, match, MATCH_FIELDS, f"{what}: match")
        kinds = _strings(match["kind"], path, match.line_of("kind"), f"{what}: match.kind") if "kind" in match else ()
        for kind in kinds:
            if kind not in EVENT_KINDS:
                raise ConfigError(
                    path,
                    match.line_of("kind"),
                    f"{what}: match.kind {kind!r} is not an event kind{suggest(kind, EVENT_KINDS)}; expected one of {', '.join(EVENT_KINDS)}",
                )
        sources = (
            _strings(match["source"], path, match.line_of("source"), f"{what}: match.source")
            if "source" in match
            else ()
        )
        types = _strings(match["type"], path, match.line_of("type"), f"{what}: match.type") if "type" in match else ()
        labels = match.get("labels") or {}
        if not isinstance(labels, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
        ):
            raise ConfigError(
                path, match.line_of("labels"), f"{what}: match.labels must map label names to string values"
            )
        rules.append(SessionRule(name, template, frozenset(kinds), frozenset(sources), types, dict(labels)))
    return rules


def load_session_rules(path: str | Path) -> list[SessionRule]:
    """Read and validate a sessions file; errors carry file:line."""
    return parse_rules(load_yaml(path), path)
