"""Incidents for the console's tests: folded by the projector's own write path (store.write_batch)."""

from __future__ import annotations

import sqlalchemy as sa

from streams.audit import store
from streams.audit.store import Position
from tests.audit.records import decision, event

XSS = '<script>alert("x")</script><img src=x onerror=alert(1)>'

# session, org, service, severity, outcome
INCIDENTS = [
    ("acme:db:db-1", "acme", "db-main", "urgent", "notified"),
    ("acme:db:db-2", "acme", "dbproxy", "urgent", "notified"),
    ("acme:web:web-1", "acme", "web", "warning", "notified"),
    ("acme:xss:x-1", "acme", XSS, "warning", "notified"),
    ("acme:old:o-1", "acme", "old", "warning", "resolved"),
    ("globex:db:db-9", "globex", "db-x", "urgent", "notified"),
]


def seed(engine: sa.Engine) -> None:
    store.migrate(engine)
    items = []
    for i, (session, org, service, severity, outcome) in enumerate(INCIDENTS):
        for j, out in enumerate(["notified", outcome] if outcome != "notified" else ["notified"]):
            n = i * 10 + j
            ev = event(n, session)
            ev.update(org=org, labels={"alertname": "Down", "service": service, "team": "data"})
            dec = decision(n, session)
            dec.update(org=org, outcome=out, severity=severity, category="database", gates=[])
            dec["matched"] = {"receivers": f"{org}-pager", "episode": "1"}  # each session's first incident
            items += [(Position("events.telemetry", 0, n), ev), (Position("decisions", 0, n), dec)]
    store.write_batch(engine, items)
