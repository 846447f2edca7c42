"""The daily digest's pure half: counting decisions and deliveries per org and local day,
deciding when a day's digest is due, and rendering it as notify effects through routing.

The shell is :mod:`agents.digest`. What flows through it, all pure here:

1. :func:`group_items` turns records into small items per org: the decision records a
   decide batch made, each with the position of the *event* it was decided from (its
   ``events.*`` topic, partition and offset; an event's fired timers and its own decision
   share that position), and the ``deliveries`` records the digest's collector read, each
   with its own position; a decision's item has its outcome and session, a delivery's its
   status and channel;
2. :func:`fold_delta` folds one org's items into its table value: counts per local day
   (:class:`DigestCounts`), the highest source offset folded per source partition (an
   item at or below it is a redelivery and is skipped), the day last sent, and days
   older than ``KEEP_DAYS`` pruned;
3. :func:`due_digest` says which day is due (yesterday, once the org's local hour has
   come, unless sent; an older day missed while no worker ran, at once) and
   :func:`digest_effects` renders it as one notify effect per receiver the routing
   tree names for the digest's labels.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from streams.model.receivers import REMEDIATE_CHANNEL
from streams.model.records import derived_id

FAILED = ("failed", "ambiguous")
NOISIEST = 5
# Distinct sessions counted per org and day. A storm of 20,000 distinct alerts in one org made
# the day's table row (every session with its count) pass Kafka's 1 MB record limit and crash
# the worker; past twice this many, the least noisy are folded into ``other_sessions``.
SESSIONS_KEPT = 100
KEEP_DAYS = 3  # days of counts kept per org (older ones are pruned, older records dropped)
DIGEST_RUNBOOK = "digest"
SOURCE_TOPICS = ("deliveries",)  # what the collector reads; decisions come from the decide agent's batches
DELIVERIES = "deliveries"
ONE_PER_OFFSET = ("decisions", DELIVERIES)  # sources with one item per offset; decide's items share an event's
DELTA_BYTES = 200_000  # a delta's items past this are split (at an event's boundary): a record fits a produce batch
_COUNTERS = ("outcomes", "notifications", "failures", "dead", "sessions", "actions")


@dataclass
class DigestCounts:
    """One org's day: what happened, what was sent, what failed."""

    events: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    notifications: Counter[str] = field(default_factory=Counter)  # delivered, by channel
    failures: Counter[str] = field(default_factory=Counter)  # failed or ambiguous, by channel
    dead: Counter[str] = field(default_factory=Counter)  # given up (dead letters of the sinks), by channel
    sessions: Counter[str] = field(default_factory=Counter)  # events per session
    actions: Counter[str] = field(default_factory=Counter)  # runbook actions by result: called, dry_run, failed, dead
    other_sessions: int = 0  # distinct sessions trimmed from ``sessions`` (their events still in ``events``)

    def to_dict(self) -> dict[str, Any]:
        out = {"events": self.events, **{k: dict(getattr(self, k)) for k in _COUNTERS}}
        if self.other_sessions:
            out["other_sessions"] = self.other_sessions
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> DigestCounts:
        if not d:
            return cls()
        return cls(
            events=int(d.get("events", 0)),
            other_sessions=int(d.get("other_sessions", 0)),
            **{k: Counter(d.get(k) or {}) for k in _COUNTERS},
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, raw: str | None) -> DigestCounts:
        return cls.from_dict(json.loads(raw) if raw else None)


def day_of(ts_ms: int, tz: str) -> str:
    """The calendar day (in the org's time zone) a timestamp falls on."""
    return datetime.fromtimestamp(ts_ms / 1000, ZoneInfo(tz)).date().isoformat()


def add_decision(counts: DigestCounts, decision: Mapping[str, Any]) -> None:
    """A decision counts its event once; a duplicate (a re-delivered event) is not a new event."""
    counts.outcomes[decision["outcome"]] += 1
    if decision["outcome"] != "duplicate":
        counts.events += 1
        counts.sessions[decision["session_key"]] += 1
        if len(counts.sessions) > 2 * SESSIONS_KEPT:
            trim_sessions(counts)


def trim_sessions(counts: DigestCounts, keep: int = SESSIONS_KEPT) -> None:
    """Keep the ``keep`` noisiest sessions (ties by key, so every worker trims alike); count the rest.

    Lossy like the heavy-hitter counters of stream processing: a session trimmed while it was
    quiet starts again from zero, so a late-rising session's count can be low by what it had
    then. The noisiest sessions of a storm are far above the trimmed ones and stay exact.
    """
    ranked = sorted(counts.sessions.items(), key=lambda kv: (-kv[1], kv[0]))
    counts.other_sessions += len(ranked) - keep
    counts.sessions = Counter(dict(ranked[:keep]))


def add_delivery(counts: DigestCounts, delivery: Mapping[str, Any]) -> None:
    """Delivered, failed (or ambiguous) and dead receipts count by channel; ``skipped`` (the
    sinks' ledger refusing a second delivery of an effect) is not a notification. Receipts of
    runbook actions count as actions (a call is not a notification); their failures and dead
    letters count with the others' too."""
    status, channel = delivery["status"], delivery["channel"]
    if channel == REMEDIATE_CHANNEL and status != "skipped":
        counts.actions["called" if status == "delivered" else status] += 1
    if status == "delivered":
        if channel != REMEDIATE_CHANNEL:
            counts.notifications[channel] += 1
    elif status in FAILED:
        counts.failures[channel] += 1
    elif status == "dead":
        counts.dead[channel] += 1


# -- collecting: records of the source topics -> items per org -----------------------


def digest_session(org: str) -> str:
    """The session key of an org's digest effects (and of their delivery receipts)."""
    return f"{org}:digest"


def org_of_session(session_key: str) -> str:
    """The org a session key belongs to, by the ``<org>:...`` convention of every session rule.

    Delivery receipts carry no org (opsloop.Delivery has the session key, not the org), so a
    delivery is attributed by its session key's prefix; a key without one is ``default``'s.
    """
    head, sep, _ = session_key.partition(":")
    return head if sep and head else "default"


def digest_item(
    topic: str, partition: int, offset: int, record: Mapping[str, Any]
) -> tuple[str, dict[str, Any]] | None:
    """(org, item) for one decoded decision or delivery record; None for what a digest does not count.

    ``topic``, ``partition`` and ``offset`` are the item's source position, its identity for
    the fold's marks: a delivery's own on ``deliveries``; for a decision, the position of
    the event it was decided from (``events.*``), which every record decided from that
    event shares (``decisions``, the source of digests before issue 17, is read as one too).
    Receipts of digests themselves are left out: a digest reporting its own delivery would
    keep every org that was ever seen getting a digest a day, forever.
    """
    if topic != DELIVERIES:
        return record.get("org") or "default", {
            "topic": topic,
            "partition": partition,
            "offset": offset,
            "at": int(record["decided_at"]),
            "session_key": record["session_key"],
            "status": record["outcome"],
            "channel": "",
        }
    session = record.get("session_key") or ""
    org = org_of_session(session)
    if session == digest_session(org):
        return None
    return org, {
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "at": int(record["completed_at"]),
        "session_key": session,
        "status": record["status"],
        "channel": record["channel"],
    }


def group_items(
    records: Iterable[tuple[str, int, int, Mapping[str, Any]]], enabled: Callable[[str], bool]
) -> dict[str, list[dict[str, Any]]]:
    """Items per org (of orgs that get a digest), in record order, from (topic, partition, offset, record)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for topic, partition, offset, record in records:
        found = digest_item(topic, partition, offset, record)
        if found is not None and enabled(found[0]):
            out.setdefault(found[0], []).append(found[1])
    return out


def split_items(items: list[dict[str, Any]], budget: int = DELTA_BYTES) -> list[list[dict[str, Any]]]:
    """``items`` in chunks of about ``budget`` bytes each, never splitting the items of one source position.

    The fold counts an event's records all at once (:func:`fold_delta`), so they stay in one
    chunk; the caller sends the chunks of one org in order, each after the previous was
    acknowledged, so a chunk's marks never pass a chunk that did not arrive.
    """
    out: list[list[dict[str, Any]]] = [[]]
    size = 0
    previous: tuple[str, int, int] | None = None
    for item in items:
        position = (item["topic"], item["partition"], item["offset"])
        cost = 64 + len(item["session_key"]) + len(item["status"]) + len(item["channel"])
        if size + cost > budget and out[-1] and position != previous:
            out.append([])
            size = 0
        out[-1].append(item)
        size += cost
        previous = position
    return out


def delta(org: str, items: list[dict[str, Any]], sent_day: str | None = None) -> dict[str, Any]:
    """An opsloop.DigestDelta record: items to count, or (``sent_day``) that a day's digest went out."""
    return {"org": org, "items": items, "sent_day": sent_day}


# -- folding: the table value of one org ---------------------------------------------


def _shift(day: str, days: int) -> str:
    return (date.fromisoformat(day) + timedelta(days=days)).isoformat()


def fold_delta(
    state: Mapping[str, Any] | None,
    record: Mapping[str, Any],
    *,
    tz: str,
    partition: int,
    now_ms: int | None,
    keep_days: int = KEEP_DAYS,
) -> dict[str, Any]:
    """Fold one DigestDelta into an org's value ``{"p", "last_sent", "hwm", "days"}``.

    Idempotent under redelivery: an item whose source offset is at or below the highest
    folded from its source partition (``hwm``, kept in the same value and so written in
    the same changelog record as the counts) is skipped. The records decided from one
    event share the event's position and always travel in one delta (one decide batch,
    one session, one org), so for them "at or below" is the mark as it was before this
    delta: a delta counts all of an event's records or none. A decision of a day whose digest
    went out already, or older than ``keep_days`` before ``now``, is counted in today's (one
    about an alert that reached opsloop a day after it started was lost: its day had been
    sent); a receipt (timed by the sinks' wall clock) of such a day, or any item later than
    tomorrow, is dropped (mis-stamped). Days older than ``keep_days`` are pruned, so a value
    holds a few days at most.
    """
    s = state or {}
    hwm = dict(s.get("hwm") or {})
    before = dict(hwm)
    days_raw = dict(s.get("days") or {})
    touched: dict[str, DigestCounts] = {}
    today: str | None = None
    oldest = newest = ""
    last_sent = s.get("last_sent")
    if now_ms is not None:
        today = day_of(now_ms, tz)
        oldest, newest = _shift(today, -keep_days), _shift(today, 1)
    for item in record.get("items") or ():
        src = f"{item['topic']}:{item['partition']}"
        offset = item["offset"]
        if offset < hwm.get(src, -1) or offset <= (hwm if item["topic"] in ONE_PER_OFFSET else before).get(src, -1):
            continue
        hwm[src] = offset
        day = day_of(item["at"], tz)
        decision = item["topic"] != DELIVERIES
        if decision and today is not None and (day < oldest or (last_sent is not None and day <= last_sent)):
            # an event's day whose digest went out already, or is past keeping: decided today, so counted
            # today rather than lost (a Prometheus re-send after an outage, an alert a new opsloop meets)
            day = today
        elif today is not None and not oldest <= day <= newest:  # a receipt's day (the wall clock's) out of range
            continue
        counts = touched.get(day)
        if counts is None:
            counts = touched[day] = DigestCounts.from_dict(days_raw.get(day))
        if decision:
            add_decision(counts, {"outcome": item["status"], "session_key": item["session_key"]})
        else:
            add_delivery(counts, {"status": item["status"], "channel": item["channel"]})
    days_raw.update({day: counts.to_dict() for day, counts in touched.items()})
    if today is not None:
        days_raw = {day: v for day, v in days_raw.items() if day >= oldest}
    sent = record.get("sent_day")
    if sent and (last_sent is None or sent > last_sent):
        last_sent = sent
    return {"p": partition, "last_sent": last_sent, "hwm": hwm, "days": dict(sorted(days_raw.items()))}


def due_digest(state: Mapping[str, Any] | None, now_ms: int, hour: int, tz: str) -> tuple[str, DigestCounts] | None:
    """(day, counts) of the digest due now, oldest first; a quiet day sends nothing.

    Yesterday's is due once the org's local hour has come. A day before yesterday that
    saw traffic and was never sent (no worker ran at its hour) is overdue and goes out
    at once, as far back as the table keeps days (``KEEP_DAYS``). Days at or before the
    last one sent are not sent again, so digests never go out of order.
    """
    if not state:
        return None
    local = datetime.fromtimestamp(now_ms / 1000, ZoneInfo(tz))
    today, yesterday = local.date().isoformat(), (local.date() - timedelta(days=1)).isoformat()
    last_sent = state.get("last_sent")
    days = state.get("days") or {}
    pending = sorted(d for d in days if d < today and (last_sent is None or d > last_sent))
    if not pending or (pending[0] == yesterday and local.hour < hour):
        return None
    return pending[0], DigestCounts.from_dict(days[pending[0]])


def caught_up(committed: Mapping[Any, int | None], ends: Mapping[Any, int]) -> bool:
    """Whether a consumer group has committed every partition up to ``ends`` (an empty one always has)."""
    return all(end <= 0 or (committed.get(tp) or 0) >= end for tp, end in ends.items())


# -- the message -----------------------------------------------------------------------


def _by_channel(counter: Counter[str]) -> str:
    return ", ".join(f"{k} {n}" for k, n in sorted(counter.items()))


def render(org: str, day: str, counts: DigestCounts) -> tuple[str, str, dict[str, str]]:
    """(title, body, fields) of the digest message."""
    title = f"Daily digest for {org}: {day}"
    lines = [
        f"{counts.events} events, {sum(counts.notifications.values())} notifications delivered, "
        f"{sum(counts.failures.values())} failed, {sum(counts.dead.values())} dead letters."
    ]
    if counts.outcomes:
        lines.append("Decisions: " + _by_channel(counts.outcomes))
    if counts.notifications:
        lines.append("Notifications: " + _by_channel(counts.notifications))
    if counts.failures:
        lines.append("Failed deliveries: " + _by_channel(counts.failures))
    if counts.dead:
        lines.append("Dead letters: " + _by_channel(counts.dead))
    if counts.actions:
        lines.append("Runbook actions: " + _by_channel(counts.actions))
    if counts.sessions:
        more = (
            f" (of more than {len(counts.sessions) + counts.other_sessions:,} sessions)"
            if counts.other_sessions
            else ""
        )
        lines.append(f"Noisiest sessions{more}:")
        lines += [
            f"- {s}: {n} events" for s, n in sorted(counts.sessions.items(), key=lambda kv: (-kv[1], kv[0]))[:NOISIEST]
        ]
    fields = {
        "events": str(counts.events),
        "notifications": str(sum(counts.notifications.values())),
        "failures": str(sum(counts.failures.values())),
        "dead_letters": str(sum(counts.dead.values())),
    }
    return title, "\n".join(lines), fields


def digest_effect(
    org: str, day: str, counts: DigestCounts, *, channel: str, receiver: str, created_at: int
) -> dict[str, Any]:
    """An opsloop.Effect notify record; its id derives from org, day and receiver, so a digest sent
    twice (a rebalance, a restart before the sent mark was folded) is delivered once by the sinks' ledger."""
    title, body, fields = render(org, day, counts)
    eid = derived_id("digest", org, day)
    return {
        "effect_id": derived_id("effect", eid, receiver),
        "event_id": eid,
        "session_key": digest_session(org),
        "org": org,
        "type": "notify",
        "created_at": created_at,
        "runbook": DIGEST_RUNBOOK,
        "notify": {
            "channel": channel,
            "receiver": receiver,
            "severity": "info",
            "title": title,
            "body": body,
            "fields": fields,
            "links": [],
            "dedupe_key": eid,
            "thread_key": digest_session(org),
            "action": "trigger",
        },
        "timer": None,
        "cancel": None,
        "remediate": None,
    }


def digest_labels(org: str) -> dict[str, str]:
    """What the routing tree sees of a digest: a route on ``category="digest"`` (and ``org``)
    sends digests somewhere of their own; otherwise the tree answers as for any info message."""
    from streams.model.routing import routing_labels

    return routing_labels(
        {"alertname": "DailyDigest"},
        category="digest",
        severity="info",
        org=org,
        source="opsloop",
        kind="digest",
        event_type="digest.daily",
    )


def digest_effects(org: str, day: str, counts: DigestCounts, routing: Any, *, created_at: int) -> list[dict[str, Any]]:
    """One notify effect per receiver the routing tree names for the digest's labels."""
    return [
        digest_effect(org, day, counts, channel=routing.channel_of(r), receiver=r, created_at=created_at)
        for r in routing.receivers_for(digest_labels(org))
    ]


def utc_ms(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> int:
    return int(datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp() * 1000)
