"""The daily digest's pure half: counting decisions and deliveries per org and day, and
rendering the counts as a notify effect.

The agent that feeds it (a windowed table fed by the decisions and deliveries topics,
sent at a configured hour through the routing rules) is not built yet; these functions
are what it will call, so the counts can be tested without a broker.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping
from zoneinfo import ZoneInfo

from streams.records import derived_id

FAILED = ("failed", "ambiguous")
NOISIEST = 5


@dataclass
class DigestCounts:
    """One org's day: what happened, what was sent, what failed."""

    events: int = 0
    outcomes: Counter = field(default_factory=Counter)
    notifications: Counter = field(default_factory=Counter)  # delivered, by channel
    failures: Counter = field(default_factory=Counter)  # failed or ambiguous, by channel
    dead: Counter = field(default_factory=Counter)  # given up (dead letters of the sinks), by channel
    sessions: Counter = field(default_factory=Counter)  # events per session

    def to_json(self) -> str:
        return json.dumps({"events": self.events, "outcomes": self.outcomes, "notifications": self.notifications,
                           "failures": self.failures, "dead": self.dead, "sessions": self.sessions}, sort_keys=True)

    @classmethod
    def from_json(cls, raw: str | None) -> "DigestCounts":
        if not raw:
            return cls()
        d = json.loads(raw)
        return cls(events=d["events"], **{k: Counter(d[k]) for k in ("outcomes", "notifications", "failures", "dead", "sessions")})


def day_of(ts_ms: int, tz: str) -> str:
    """The calendar day (in the org's time zone) a timestamp falls on."""
    return datetime.fromtimestamp(ts_ms / 1000, ZoneInfo(tz)).date().isoformat()


def add_decision(counts: DigestCounts, decision: Mapping[str, Any]) -> None:
    """A decision counts its event once; a duplicate (a re-delivered event) is not a new event."""
    counts.outcomes[decision["outcome"]] += 1
    if decision["outcome"] != "duplicate":
        counts.events += 1
        counts.sessions[decision["session_key"]] += 1


def add_delivery(counts: DigestCounts, delivery: Mapping[str, Any]) -> None:
    status, channel = delivery["status"], delivery["channel"]
    if status == "delivered":
        counts.notifications[channel] += 1
    elif status in FAILED:
        counts.failures[channel] += 1
    elif status == "dead":
        counts.dead[channel] += 1


def due_day(now_ms: int, hour: int, tz: str, last_sent: str | None) -> str | None:
    """The day whose digest is due at ``now`` (yesterday, once the local hour has come), unless sent."""
    local = datetime.fromtimestamp(now_ms / 1000, ZoneInfo(tz))
    if local.hour < hour:
        return None
    day = (local.date() - timedelta(days=1)).isoformat()
    return None if last_sent is not None and last_sent >= day else day


def render(org: str, day: str, counts: DigestCounts) -> tuple[str, str, dict[str, str]]:
    """(title, body, fields) of the digest message."""
    title = f"Daily digest for {org}: {day}"
    lines = [f"{counts.events} events, {sum(counts.notifications.values())} notifications delivered, "
             f"{sum(counts.failures.values())} failed, {sum(counts.dead.values())} dead letters."]
    if counts.outcomes:
        lines.append("Decisions: " + ", ".join(f"{k} {n}" for k, n in sorted(counts.outcomes.items())))
    if counts.notifications:
        lines.append("Notifications: " + ", ".join(f"{k} {n}" for k, n in sorted(counts.notifications.items())))
    if counts.sessions:
        lines.append("Noisiest sessions:")
        lines += [f"- {s}: {n} events" for s, n in sorted(counts.sessions.items(), key=lambda kv: (-kv[1], kv[0]))[:NOISIEST]]
    fields = {"events": str(counts.events), "notifications": str(sum(counts.notifications.values())),
              "failures": str(sum(counts.failures.values())), "dead_letters": str(sum(counts.dead.values()))}
    return title, "\n".join(lines), fields


def digest_effect(org: str, day: str, counts: DigestCounts, *, channel: str, receiver: str, created_at: int) -> dict[str, Any]:
    """An opsloop.Effect notify record; its id derives from org and day, so a re-sent digest is delivered once."""
    title, body, fields = render(org, day, counts)
    eid = derived_id("digest", org, day)
    return {
        "effect_id": derived_id("effect", eid, "0"), "event_id": eid, "session_key": f"{org}:digest", "org": org,
        "type": "notify", "created_at": created_at, "runbook": "digest",
        "notify": {"channel": channel, "receiver": receiver, "severity": "info", "title": title, "body": body,
                   "fields": fields, "links": [], "dedupe_key": eid, "thread_key": f"{org}:digest", "action": "trigger"},
        "timer": None, "cancel": None, "remediate": None,
    }


def utc_ms(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> int:
    return int(datetime(year, month, day, hour, minute, tzinfo=timezone.utc).timestamp() * 1000)
