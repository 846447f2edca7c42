"""Silences and maintenance windows: matchers plus a start and an end.

A silence mutes notifications for events whose routing labels match, between
``starts_at`` and ``ends_at`` (event time). Silences are created through an event
(``kind: webhook``, ``type: silence.created``, the silence as JSON in the webhook
body, e.g. by ``opsloop silence add``) and expired by ``silence.expired``; the decide
agent keeps them in a table every worker holds, and hands the list to decide in its
context. Maintenance windows are the same thing declared in
``runbooks/maintenance.yaml``, versioned with the runbook set.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from streams.errors import InvalidInputError
from streams.model.matchers import Matcher, MatcherError, matches_all, parse_matcher
from streams.model.records import UNSTORABLE_CHARS, derived_id, unstorable_char_name
from streams.model.yamlfile import ConfigError, LineDict, check_keys, load_yaml

SILENCE_CREATED = "silence.created"
SILENCE_EXPIRED = "silence.expired"
SILENCE_TYPES = (SILENCE_CREATED, SILENCE_EXPIRED)
MAINTENANCE_FIELDS = ("name", "matchers", "start", "end", "comment")
# A silence's comment, author or matcher: longer is refused (a silence event stays far below the 1 MB a record may be).
MAX_TEXT_CHARS = 65_536


class SilenceError(InvalidInputError, ValueError):
    """A silence (from an event or the CLI) is malformed; the message names the field."""


@dataclass(frozen=True)
class Silence:
    silence_id: str
    matchers: tuple[Matcher, ...]
    starts_at: int
    ends_at: int
    created_by: str = ""
    comment: str = ""
    kind: str = "silence"  # silence | maintenance

    def active_at(self, now: int) -> bool:
        return self.starts_at <= now < self.ends_at

    def mutes(self, labels: Mapping[str, str], now: int) -> bool:
        return self.active_at(now) and matches_all(self.matchers, labels)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.silence_id,
            "matchers": [str(m) for m in self.matchers],
            "starts_at": self.starts_at,
            "ends_at": self.ends_at,
            "created_by": self.created_by,
            "comment": self.comment,
            "kind": self.kind,
        }


_ORG_MATCHER = re.compile(r"\s*org\s*(=|!=|=~|!~)")


class SilenceScopeError(SilenceError):
    """A silence names an org its credential may not silence."""


def scoped_to_org(matchers: Sequence[Any], org: str) -> list[Any]:
    """``matchers`` with any ``org`` matcher replaced by ``org="<org>"``: what a silence made by a
    credential limited to one org may mute (only an operator's silence applies across orgs).

    Refused rather than replaced: an ``org`` matcher that does not hold for ``org`` (SilenceScopeError;
    replaced, ``org=~"acme"`` or ``org!="globex"`` from a credential of globex became a silence of every
    alert of globex, the opposite of what it asked); and matchers that select nothing as written
    (SilenceError, :func:`require_selective`), which the added ``org="..."`` would always pass."""
    kept = []
    for m in matchers:
        if not (isinstance(m, str) and _ORG_MATCHER.match(m)):
            kept.append(m)
            continue
        try:
            holds = parse_matcher(m).matches({"org": org})
        except MatcherError as exc:
            raise SilenceError(f"matchers: {exc}") from None
        if not holds:
            raise SilenceScopeError(
                f"matchers: {m.strip()} does not select org {org!r}, the only org this credential may silence"
            )
    require_selective(matchers)
    return [*kept, 'org="{}"'.format(org.replace("\\", "\\\\").replace('"', '\\"'))]


def require_selective(matchers: Sequence[Any]) -> None:
    """Raise SilenceError unless some matcher fails on an alert without labels (Alertmanager's rule:
    ``service!="web"`` alone mutes every alert of every other service, and of none). ``matchers`` are
    parsed matchers or their text."""
    try:
        parsed = [parse_matcher(m) if isinstance(m, str) else m for m in matchers]
    except MatcherError as exc:
        raise SilenceError(f"matchers: {exc}") from None
    if matches_all(parsed, {}):
        raise SilenceError(
            "matchers: a silence must select something: at least one matcher must not match an empty or "
            'missing label (as in Alertmanager); add one like service="db"'
        )


def silence_from_json(data: Mapping[str, Any]) -> Silence:
    """A silence from its JSON form (the event body, the table value); raises SilenceError."""
    if not isinstance(data, Mapping):
        raise SilenceError("silence: expected a JSON object")
    raw_matchers = data.get("matchers")
    if not isinstance(raw_matchers, list) or not raw_matchers:
        raise SilenceError('matchers: required, a non-empty list like ["service=\\"db\\""]')
    # What ingest's JSON reader refuses, refused here for every other way in (the console's form, the CLI): a
    # silence with a NUL in its comment muted alerts while no list showed it (the audit store cannot hold it).
    for name, value in (
        ("matchers", raw_matchers),
        ("comment", data.get("comment")),
        ("created_by", data.get("created_by")),
    ):
        for text in value if isinstance(value, list) else [value]:
            if isinstance(text, str) and (bad := UNSTORABLE_CHARS.search(text)) is not None:
                raise SilenceError(f"{name}: contains {unstorable_char_name(bad.group())}")
            if isinstance(text, str) and len(text) > MAX_TEXT_CHARS:  # the console's 900,000 characters: a 500
                raise SilenceError(f"{name}: {len(text):,} characters; at most {MAX_TEXT_CHARS:,}")
    try:
        matchers = tuple(parse_matcher(m) for m in raw_matchers)
    except MatcherError as exc:
        raise SilenceError(f"matchers: {exc}") from None
    require_selective(matchers)
    starts, ends = data.get("starts_at"), data.get("ends_at")
    for name, value in (("starts_at", starts), ("ends_at", ends)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise SilenceError(f"{name}: expected epoch milliseconds, got {value!r}")
    assert isinstance(starts, int) and isinstance(ends, int)  # checked just above
    if ends <= starts:
        raise SilenceError("ends_at must be after starts_at")
    sid = data.get("id") or derived_id("silence", *(str(m) for m in matchers), str(starts), str(ends))
    return Silence(
        silence_id=str(sid),
        matchers=matchers,
        starts_at=starts,
        ends_at=ends,
        created_by=str(data.get("created_by", "")),
        comment=str(data.get("comment", "")),
        kind=str(data.get("kind", "silence")),
    )


def owned_by(silence: Silence, org: str) -> bool:
    """Is ``silence`` one org's own: does it select exactly ``org`` (``org="<org>"``)?"""
    return any(m.name == "org" and m.op == "=" and m.value == org for m in silence.matchers)


def limited_org(event: Mapping[str, Any]) -> str | None:
    """The org a silence event is limited to (ingest writes ``"org"`` into the body of a non-operator's
    silence event: it may create or expire only that org's silences), or None for an operator's."""
    try:
        body = json.loads((event.get("payload") or {}).get("body_json") or "{}")
    except (TypeError, ValueError, AttributeError):
        return None
    org = body.get("org") if isinstance(body, dict) else None
    return org if isinstance(org, str) else None


def refused_by(event: Mapping[str, Any], silence_id: str, current: Iterable[Silence]) -> Silence | None:
    """The silence of ``current`` (those in force) that ``event`` may not expire or replace by naming its id:
    one not of the org the event is limited to (:func:`limited_org`); None when it may. Decide and the
    silence lists ask this one rule, so they agree."""
    org = limited_org(event)
    if org is None:
        return None
    existing = next((s for s in current if s.silence_id == silence_id), None)
    return existing if existing is not None and not owned_by(existing, org) else None


def silence_from_event(event: Mapping[str, Any]) -> tuple[str, Silence | None, str]:
    """(type, silence, silence_id) of a silence.created / silence.expired event.

    An expiry only needs the id (``{"id": ...}``); its silence is None.
    """
    etype = event.get("type")
    if etype not in SILENCE_TYPES:
        raise SilenceError(f"type: not a silence event: {etype!r}")
    payload = event.get("payload") or {}
    try:
        body = json.loads(payload.get("body_json") or "{}")
    except (TypeError, json.JSONDecodeError) as exc:
        raise SilenceError(f"payload.body_json: not JSON: {exc}") from None
    if etype == SILENCE_EXPIRED:
        sid = body.get("id") if isinstance(body, dict) else None
        if not sid:
            raise SilenceError("id: required to expire a silence")
        return etype, None, str(sid)
    silence = silence_from_json(body)
    return etype, silence, silence.silence_id


def silence_event(silence: Silence, *, org: str, now_ms: int, actor: str = "cli") -> dict[str, Any]:
    """The event that creates ``silence`` (what ``opsloop silence add`` produces)."""
    return {
        "event_id": derived_id("silence-event", silence.silence_id, SILENCE_CREATED),
        "session_key": f"{org}:silences",
        "kind": "webhook",
        "type": SILENCE_CREATED,
        "source": "cli",
        "org": org,
        "occurred_at": now_ms,
        "labels": {},
        "annotations": {"comment": silence.comment},
        "payload": {
            "provider": "opsloop",
            "action": "create",
            "subject": silence.silence_id,
            "actor": actor,
            "body_json": json.dumps(silence.to_json(), sort_keys=True),
        },
    }


def expire_event(silence_id: str, *, org: str, now_ms: int, actor: str = "cli") -> dict[str, Any]:
    return {
        "event_id": derived_id("silence-event", silence_id, SILENCE_EXPIRED, str(now_ms)),
        "session_key": f"{org}:silences",
        "kind": "webhook",
        "type": SILENCE_EXPIRED,
        "source": "cli",
        "org": org,
        "occurred_at": now_ms,
        "payload": {
            "provider": "opsloop",
            "action": "expire",
            "subject": silence_id,
            "actor": actor,
            "body_json": json.dumps({"id": silence_id}),
        },
    }


def muting(silences: Iterable[Silence], labels: Mapping[str, str], now: int) -> Silence | None:
    """The first silence that mutes ``labels`` at ``now``, or None."""
    for silence in silences:
        if silence.mutes(labels, now):
            return silence
    return None


def next_change(silences: Sequence[Silence], labels: Mapping[str, str], now: int) -> int | None:
    """When the set of silences muting ``labels`` can next change (the earliest end of one muting now)."""
    ends = [s.ends_at for s in silences if s.mutes(labels, now)]
    return min(ends) if ends else None


# -- maintenance windows ---------------------------------------------------------


def parse_time_ms(value: Any) -> int:
    """An ISO 8601 time (``2025-01-04T22:00:00Z``) or epoch ms → epoch ms (UTC if no zone)."""
    if isinstance(value, bool):
        raise ValueError(f"not a time: {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, datetime):
        dt = value
    else:
        try:
            dt = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"not an ISO 8601 time: {value!r} (e.g. 2025-01-04T22:00:00Z)") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def load_maintenance(path: str | Path) -> tuple[Silence, ...]:
    """Maintenance windows of ``maintenance.yaml`` (``windows: [...]``); errors carry file:line."""
    path = Path(path)
    doc = load_yaml(path)
    if doc is None:
        return ()
    if not isinstance(doc, LineDict):
        raise ConfigError(path, 1, "expected a mapping with a 'windows' list")
    check_keys(path, doc, ("windows",), "maintenance")
    items = doc.get("windows") or []
    if not isinstance(items, list):
        raise ConfigError(path, doc.line_of("windows"), "windows: expected a list")
    out = []
    for i, item in enumerate(items):
        what = f"windows[{i}]"
        if not isinstance(item, LineDict):
            raise ConfigError(path, doc.line_of("windows"), f"{what}: expected a mapping")
        check_keys(path, item, MAINTENANCE_FIELDS, what)
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise ConfigError(path, item.line, f"{what}: name is required")
        times = {}
        for key in ("start", "end"):
            if key not in item:
                raise ConfigError(path, item.line, f"{what} ({name}): {key} is required")
            try:
                times[key] = parse_time_ms(item[key])
            except ValueError as exc:
                raise ConfigError(path, item.line_of(key), f"{what} ({name}): {key}: {exc}") from None
        try:
            silence = silence_from_json(
                {
                    "id": f"maintenance:{name}",
                    "matchers": item.get("matchers"),
                    "starts_at": times["start"],
                    "ends_at": times["end"],
                    "comment": str(item.get("comment", "")),
                    "kind": "maintenance",
                }
            )
        except SilenceError as exc:
            raise ConfigError(
                path, item.line_of("matchers") if "matchers" in str(exc) else item.line, f"{what} ({name}): {exc}"
            ) from None
        out.append(silence)
    return tuple(out)
