"""The read side's queries: incidents (filtered, sorted, paged), one incident, silences, dead letters.

The read API (:mod:`streams.api`) and ``opsloop incidents list`` / ``opsloop silence list``
call these, so both answer the same thing. Filters are Alertmanager matchers
(:mod:`streams.model.matchers`) over the labels of an incident's alerts plus ``severity``, ``category``,
``org``, ``runbook``, ``status`` and ``session_key`` as labels (those win over an event label
of the same name): an incident matches when one of its episode's alerts matches every matcher, as
Alertmanager keeps a group whose alerts match. SQL narrows what it can (equality on those columns,
equality on a label through the GIN index of ``alerts @> ...``, and on PostgreSQL plain regular
expressions on the columns); every matcher is then checked in Python on the rows SQL returns, which
is the definition.
Pages are keyset pages: the cursor names the last row returned.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB, JSONPATH

from streams.audit import store, timeline
from streams.audit.incidents import STATUSES
from streams.audit.models import EventRow, IncidentRow
from streams.errors import InvalidInputError
from streams.model.matchers import Matcher, make_matcher, matches_all, parse_matcher
from streams.model.records import CONTROL_CHARS
from streams.model.silences import (
    SILENCE_CREATED,
    SILENCE_TYPES,
    Silence,
    SilenceError,
    refused_by,
    silence_from_event,
)
from streams.model.taxonomy import normalize_severity

COLUMN_LABELS = ("severity", "category", "org", "runbook", "status", "session_key")
SORTS = ("last_seen", "first_seen", "session_key")
MAX_LIMIT = 1000
_SCAN_CHUNK = 500
# Regular expressions PostgreSQL (ARE) and Python read alike: literals, ``. * + ? |``, groups,
# bracket classes of plain characters (``[a-z0-9_-]``, ``[^.]``) and counted repeats (``{2}``,
# ``{1,3}``); no escapes, POSIX classes, flags or ``(?...)``. One difference is left: PostgreSQL's
# ``.`` also matches a newline, so SQL keeps a superset for ``=~`` and is not given a ``!~`` with ``.``.
_PORTABLE_REGEX = re.compile(r"(?:[A-Za-z0-9_.*+?|()\-:/ ]|\[\^?[A-Za-z0-9_.\-:/ ]+\]|\{[0-9]+(?:,[0-9]*)?\})*")


class QueryError(InvalidInputError, ValueError):
    """A filter, sort, status, limit or cursor is not valid; the message names the parameter."""


def check_printable(path: str, query: Mapping[str, str]) -> None:
    """QueryError for a control character in a request's path or query: nothing stored holds one (ingest refuses
    them), and PostgreSQL refuses a NUL in a text parameter, which was a 500 (``/incident/a%00b``, a filter value)."""
    for name, value in (("path", path), *query.items()):
        if CONTROL_CHARS.search(value):
            raise QueryError(f"{name}: contains a control character")


def parse_filter(text: str | Sequence[str] | None) -> tuple[Matcher, ...]:
    """``service=~"db.*",severity="urgent"`` (or a list of matchers) → matchers; QueryError names the bad one."""
    if not text:
        return ()
    items = _split(text) if isinstance(text, str) else [t for item in text for t in _split(item)]
    out = []
    for item in items:
        try:
            out.append(parse_matcher(item))
        except InvalidInputError as exc:
            raise QueryError(f"filter: {exc}") from None
    return tuple(out)


def _split(text: str) -> list[str]:
    """Split on commas outside double quotes (a matcher's value may hold a comma); braces are allowed around."""
    text = text.strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1]
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for ch in text:
        if escaped:
            escaped = False
        elif ch == "\\" and quoted:
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == "," and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


def incident_label_sets(row: Mapping[str, Any]) -> list[dict[str, str]]:
    """What matchers see, one label set per alert of the episode: its labels, then the columns as labels (an
    incident from before its alerts were kept: its merged labels)."""
    columns = {name: str(row.get(name) or "") for name in COLUMN_LABELS}
    alerts = row.get("alerts") or [row.get("labels") or {}]
    return [{**{str(k): str(v) for k, v in alert.items()}, **columns} for alert in alerts]


def matches_incident(matchers: Sequence[Matcher], row: Mapping[str, Any]) -> bool:
    return any(matches_all(matchers, labels) for labels in incident_label_sets(row))


@dataclass(frozen=True)
class IncidentQuery:
    matchers: tuple[Matcher, ...] = ()
    statuses: tuple[str, ...] = ()
    sort: str = "-last_seen"
    limit: int = 50
    cursor: str | None = None
    orgs: frozenset[str] | None = None  # None: every org (a token restricted to some orgs passes them)

    @staticmethod
    def parse(
        *,
        filter: str | Sequence[str] | None = None,
        status: str | Sequence[str] | None = None,
        sort: str | None = None,
        limit: str | int | None = None,
        cursor: str | None = None,
        orgs: frozenset[str] | None = None,
    ) -> IncidentQuery:
        statuses: tuple[str, ...] = ()
        if status:
            raw = [status] if isinstance(status, str) else list(status)
            statuses = tuple(s.strip() for item in raw for s in item.split(",") if s.strip())
            wrong = [s for s in statuses if s not in STATUSES]
            if wrong:
                raise QueryError(f"status: {wrong[0]!r} is not one of {', '.join(STATUSES)}")
        sort = sort or "-last_seen"
        if sort.lstrip("-+") not in SORTS:
            raise QueryError(f"sort: {sort!r}; expected one of {', '.join(SORTS)}, '-' first for descending")
        try:
            n = 50 if limit in (None, "") else int(limit)
        except (TypeError, ValueError):
            raise QueryError(f"limit: {limit!r} is not a number") from None
        if not 1 <= n <= MAX_LIMIT:
            raise QueryError(f"limit: {n} is not between 1 and {MAX_LIMIT}")
        return IncidentQuery(severity_as_ours(parse_filter(filter)), statuses, sort, n, cursor or None, orgs)


def severity_as_ours(matchers: Sequence[Matcher]) -> tuple[Matcher, ...]:
    """``severity="critical"`` (or another house's word) read as opsloop's severity, which the incident's column
    holds and which wins over the alert's label: typed as amtool users type it, it found nothing."""
    out = []
    for m in matchers:
        word = normalize_severity(m.value) if m.name == "severity" and m.op in ("=", "!=") else None
        out.append(make_matcher(m.name, m.op, word) if word is not None and word != m.value else m)
    return tuple(out)


@dataclass
class Page:
    items: list[dict[str, Any]] = field(default_factory=list)
    next_cursor: str | None = None
    scanned: int = 0  # rows SQL returned (how much Python had to check)

    def to_json(self) -> dict[str, Any]:
        return {"incidents": self.items, "next_cursor": self.next_cursor}


def _encode_cursor(sort: str, row: Mapping[str, Any]) -> str:
    key = sort.lstrip("-+")
    raw = json.dumps([sort, row[key], row["session_key"]], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(sort: str, cursor: str) -> tuple[Any, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        made_for, value, session = json.loads(raw)
    except (ValueError, TypeError):
        raise QueryError("cursor: not a cursor this API returned") from None
    if made_for != sort or not isinstance(session, str):
        raise QueryError(f"cursor: made for sort {made_for!r}, not {sort!r}")
    return value, session


def _pushable_regex(m: Matcher) -> bool:
    """Whether PostgreSQL reads ``m``'s regex as Python does (``!~`` without ``.``: PostgreSQL's also matches a
    newline, so NOT(~) could drop a row Python keeps)."""
    return "(?" not in m.value and not (m.op == "!~" and "." in m.value) and bool(_PORTABLE_REGEX.fullmatch(m.value))


def _sql_condition(m: Matcher, postgres: bool) -> sa.ColumnElement[bool] | None:
    """A condition SQL can check that keeps every row the matcher keeps (None: leave it to Python)."""
    t = IncidentRow
    if m.name not in COLUMN_LABELS:
        # An alert's label: SQL keeps a row when some alert of it may match (the GIN index for equality).
        if not postgres or not m.value:
            return None
        if m.op == "=":
            return t.alerts.op("@>")(sa.literal([{m.name: m.value}], JSONB))
        if m.op == "=~" and _pushable_regex(m) and not re.fullmatch(m.value, ""):
            # An alert holding the label with a matching value (one without it has "", which this regex refuses).
            # jsonpath's like_regex reads the portable subset as Python does (a label holds no newline: ingest
            # refuses control characters).
            path = f"$[*] ? (@.{json.dumps(m.name)} like_regex {json.dumps(f'^({m.value})$')})"
            return sa.func.jsonb_path_exists(t.alerts, sa.cast(sa.literal(path), JSONPATH))
        return None
    column: Any = getattr(t, m.name)
    if m.op == "=":
        return column == m.value  # type: ignore[no-any-return]
    if m.op == "!=":
        return column != m.value  # type: ignore[no-any-return]
    if m.op in ("=~", "!~") and postgres and _pushable_regex(m):
        condition = column.op("~", is_comparison=True)(f"^(?:{m.value})$")
        return condition if m.op == "=~" else sa.not_(condition)  # type: ignore[no-any-return]
    return None


def list_incidents(engine: sa.Engine, q: IncidentQuery) -> Page:
    """One page of incidents matching ``q``, in its order, with the cursor of the next page (if any)."""
    t = IncidentRow
    postgres = engine.dialect.name == "postgresql"
    key = q.sort.lstrip("-+")
    descending = q.sort.startswith("-")
    column, tiebreak = getattr(t, key), t.session_key
    conditions: list[Any] = []
    if q.statuses:
        conditions.append(t.status.in_(q.statuses))
    if q.orgs is not None:
        conditions.append(t.org.in_(sorted(q.orgs)))
    for m in q.matchers:
        condition = _sql_condition(m, postgres)
        if condition is not None:
            conditions.append(condition)
    after = _decode_cursor(q.sort, q.cursor) if q.cursor else None
    order = [column.desc(), tiebreak.desc()] if descending else [column.asc(), tiebreak.asc()]
    page = Page()
    want = q.limit + 1  # one more tells whether there is a next page
    found: list[dict[str, Any]] = []
    chunk = max(_SCAN_CHUNK, want)
    # The scan reads only what matchers and the cursor need; whole rows are read for the page alone.
    scan_columns = [t.__table__.c[name] for name in dict.fromkeys(("labels", "alerts", *COLUMN_LABELS, key))]
    with engine.connect() as conn:
        while len(found) < want:
            stmt = sa.select(*scan_columns).where(*conditions)
            if after is not None:
                pair = sa.tuple_(column, tiebreak)
                stmt = stmt.where(pair < sa.tuple_(*after) if descending else pair > sa.tuple_(*after))
            rows = [dict(r._mapping) for r in conn.execute(stmt.order_by(*order).limit(chunk))]
            page.scanned += len(rows)
            for row in rows:
                if matches_incident(q.matchers, row):
                    found.append(row)
                    if len(found) == want:
                        break
            if len(rows) < chunk:
                break
            after = (rows[-1][key], rows[-1]["session_key"])
        if found:
            keys = [row["session_key"] for row in found]
            full = {
                r.session_key: dict(r._mapping) for r in conn.execute(sa.select(t.__table__).where(tiebreak.in_(keys)))
            }
            found = [full[k] for k in keys if k in full]
    page.items = found[: q.limit]
    if len(found) > q.limit:
        page.next_cursor = _encode_cursor(q.sort, page.items[-1])
    return page


def get_incident(engine: sa.Engine, session_key: str) -> dict[str, Any] | None:
    with engine.connect() as conn:
        row = conn.execute(sa.select(IncidentRow.__table__).where(IncidentRow.session_key == session_key)).first()
    return dict(row._mapping) if row else None


@dataclass(frozen=True)
class IncidentView:
    """One session as the API and the console show it: its incident row (None before the projector
    made one), its audit timeline, and the org it belongs to (None: nothing recorded)."""

    row: dict[str, Any] | None
    timeline: list[dict[str, Any]]
    org: str | None


def incident_view(engine: sa.Engine, session_key: str) -> IncidentView:
    row, rows = get_incident(engine, session_key), store.session_rows(engine, session_key)
    org = row["org"] if row else next((e.get("org") for e in rows.get("events", [])), None)
    return IncidentView(row, timeline.build(rows), org)


def list_silences(
    engine: sa.Engine, now_ms: int, *, orgs: frozenset[str] | None = None, state: str | None = None
) -> list[dict[str, Any]]:
    """Every silence the recorded silence events created, with its state now: active, pending or expired.

    An expiry event ends a silence at the expiry's time; ``updated_at`` is the time of the last event that
    changed it (Alertmanager's ``updatedAt``). Newest start first.

    For a reader held to ``orgs``: its orgs' silences, and the silences of other orgs that mute alerts of
    its orgs (an operator's silence whose matchers name no org, or one that selects them): an org's user
    saw "silenced by silence 5e1a…" on its incident and could not find that silence in any list.
    """
    stmt = sa.select(EventRow.record).where(EventRow.type.in_(SILENCE_TYPES))
    with engine.connect() as conn:
        records = [r[0] for r in conn.execute(stmt.order_by(EventRow.occurred_at, EventRow.offset))]
    silences: dict[str, dict[str, Any]] = {}
    parsed: dict[str, Silence] = {}
    for record in records:
        try:
            etype, silence, sid = silence_from_event(record)
        except SilenceError:
            continue  # decide recorded why; nothing to list
        in_force = (parsed[k] for k, s in silences.items() if s["expired_at"] is None)
        if refused_by(record, sid, in_force) is not None:
            continue  # decide refused it (streams.core.tables.silence_change asks the same rule)
        if etype == SILENCE_CREATED and silence is not None:
            silences[sid] = {
                **silence.to_json(),
                "org": record.get("org", ""),
                "expired_at": None,
                "updated_at": record["occurred_at"],
            }
            parsed[sid] = silence
        elif sid in silences and silences[sid]["expired_at"] is None:
            silences[sid]["expired_at"] = silences[sid]["updated_at"] = record["occurred_at"]
    out = []
    for sid, s in silences.items():
        if orgs is not None and s["org"] not in orgs and not _mutes_any(parsed[sid], orgs):
            continue
        ends = min(s["ends_at"], s["expired_at"]) if s["expired_at"] is not None else s["ends_at"]
        s["state"] = "expired" if ends <= now_ms else ("pending" if s["starts_at"] > now_ms else "active")
        if state is None or s["state"] == state:
            out.append(s)
    return sorted(out, key=lambda s: (-s["starts_at"], s["id"]))


def _mutes_any(silence: Silence, orgs: frozenset[str]) -> bool:
    """Whether ``silence`` can mute an alert of one of ``orgs``: its ``org`` matchers (if any) select one."""
    pinned = [m for m in silence.matchers if m.name == "org"]
    return any(all(m.matches({"org": org}) for m in pinned) for org in orgs)


ALERT_TYPES = ("alert.firing", "alert.resolved")
ALERTS_LOOKBACK_MS = 24 * 3_600_000  # a firing alert is re-sent well within it (Prometheus every minute)


def firing_alerts(
    engine: sa.Engine, now_ms: int, *, orgs: frozenset[str] | None = None, lookback_ms: int = ALERTS_LOOKBACK_MS
) -> list[dict[str, Any]]:
    """Every alert firing now, by what was last received of it: each fingerprint's latest alert event of the
    last ``lookback_ms``, when it is a firing one whose ``ends_at`` (if any) is still ahead.

    What Alertmanager's ``GET /api/v2/alerts`` lists, from the recorded events rather than a memory of its
    own; each with its org, session and the receivers its incident was last notified through. An alert
    Prometheus stopped sending without resolving it ends at its ``ends_at`` (Prometheus sets it four
    evaluation intervals ahead on every send), as in Alertmanager.
    """
    stmt = sa.select(EventRow.org, EventRow.session_key, EventRow.received_at, EventRow.record).where(
        EventRow.type.in_(ALERT_TYPES), EventRow.received_at >= now_ms - lookback_ms
    )
    if orgs is not None:
        stmt = stmt.where(EventRow.org.in_(sorted(orgs)))
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    with engine.connect() as conn:
        for org, session_key, received_at, record in conn.execute(
            stmt.order_by(EventRow.received_at, EventRow.partition, EventRow.offset)
        ):
            payload = record.get("payload") or {}
            fp = payload.get("fingerprint")
            if not isinstance(fp, str):
                continue
            latest[(org, fp)] = {
                "org": org,
                "session_key": session_key,
                "received_at": received_at,
                "labels": record.get("labels") or {},
                "annotations": record.get("annotations") or {},
                "status": payload.get("status"),
                "starts_at": payload.get("starts_at"),
                "ends_at": payload.get("ends_at"),
                "generator_url": payload.get("generator_url") or "",
                "fingerprint": fp,
            }
        firing = [
            a
            for a in latest.values()
            if a["status"] == "firing" and (not isinstance(a["ends_at"], int) or a["ends_at"] > now_ms)
        ]
        sessions = sorted({a["session_key"] for a in firing})
        receivers: dict[str, list[str]] = {}
        for i in range(0, len(sessions), 500):
            rows = conn.execute(
                sa.select(IncidentRow.session_key, IncidentRow.last_receivers).where(
                    IncidentRow.session_key.in_(sessions[i : i + 500])
                )
            )
            receivers.update({key: list(names or []) for key, names in rows})
    for a in firing:
        a["receivers"] = receivers.get(a["session_key"], [])
    return sorted(firing, key=lambda a: (a["starts_at"] or 0, a["fingerprint"]))
