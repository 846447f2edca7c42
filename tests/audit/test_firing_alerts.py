"""The alerts firing now, from the recorded events (what ingest's ``GET /api/v2/alerts`` lists for amtool)."""

from __future__ import annotations

import sqlalchemy as sa

from streams.audit.models import IncidentRow
from streams.audit.queries import firing_alerts
from streams.audit.store import Position, migrate, write_batch
from streams.db import make_engine
from streams.ingest.alerts import alertmanager_events, prometheus_events
from streams.ingest.alerts_api import NO_END, active_matchers, gettable_alert, muting
from streams.ingest.sessions import load_session_rules
from streams.settings import Settings

RULES = load_session_rules(Settings.from_env().sessions_path())
NOW = 1_800_000_000_000
MIN = 60_000


def pushed(labels: dict, received_at: int, org: str = "a", **alert) -> dict:
    [event] = prometheus_events(
        [{"labels": labels, **alert}], org=org, received_at=received_at, rules=RULES, resolve_timeout_ms=5 * MIN
    )
    return event


def store(tmp_path, events: list[dict]) -> sa.Engine:
    engine = make_engine(f"sqlite:///{tmp_path / 'audit.db'}")
    migrate(engine)
    write_batch(engine, [(Position("events.telemetry", 0, i), e) for i, e in enumerate(events)])
    return engine


def test_each_alert_is_listed_by_its_latest_event_while_it_fires(tmp_path):
    db = {"alertname": "DbDown", "service": "db", "severity": "critical"}
    web = {"alertname": "WebSlow", "service": "web", "severity": "warning"}
    gone = {"alertname": "CacheCold", "service": "cache"}
    old = {"alertname": "Old", "service": "old"}
    events = [
        pushed(db, NOW - 10 * MIN),
        pushed(db, NOW - 2 * MIN),  # sent again: its end moved past now
        pushed(web, NOW - 4 * MIN, org="b"),
        pushed(gone, NOW - 10 * MIN),  # not sent again: ended 5 minutes on
        pushed(old, NOW - 25 * 60 * MIN),  # before the lookback
        *alertmanager_events(  # an Alertmanager webhook's alert: no end; its resolve comes from Alertmanager
            {
                "version": "4",
                "status": "firing",
                "alerts": [
                    {
                        "status": "firing",
                        "labels": {"alertname": "Q"},
                        "startsAt": "2027-01-15T07:30:00Z",
                        "endsAt": "0001-01-01T00:00:00Z",
                    }
                ],
            },
            org="a",
            received_at=NOW - MIN,
            rules=RULES,
        ),
    ]
    resolved = pushed(web, NOW - MIN, org="b", endsAt="2027-01-01T00:00:00Z")  # an end in the past: resolved
    engine = store(tmp_path, events)
    listed = {a["labels"]["alertname"]: a for a in firing_alerts(engine, NOW)}
    assert set(listed) == {"DbDown", "WebSlow", "Q"}
    assert listed["DbDown"]["received_at"] == NOW - 2 * MIN and listed["DbDown"]["ends_at"] == NOW + 3 * MIN
    assert listed["Q"]["ends_at"] is None
    assert {a["labels"]["alertname"] for a in firing_alerts(engine, NOW, orgs=frozenset({"a"}))} == {"DbDown", "Q"}

    write_batch(engine, [(Position("events.telemetry", 0, 99), resolved)])
    assert {a["labels"]["alertname"] for a in firing_alerts(engine, NOW)} == {"DbDown", "Q"}

    # the receivers its incident was last notified through
    with engine.begin() as conn:
        conn.execute(
            sa.insert(IncidentRow).values(
                session_key=listed["DbDown"]["session_key"],
                org="a",
                status="firing",
                severity="urgent",
                category="database",
                runbook="default",
                labels={},
                first_seen=NOW,
                last_seen=NOW,
                last_receivers=["oncall-slack", "pagerduty-dba"],
                last_outcome="notified",
                last_decision_id="d1",
            )  # fmt: skip
        )
    [db_alert] = [a for a in firing_alerts(engine, NOW) if a["labels"]["alertname"] == "DbDown"]
    assert db_alert["receivers"] == ["oncall-slack", "pagerduty-dba"]


def test_a_firing_alert_reads_as_alertmanagers_gettable_alert_with_the_silences_that_mute_it(tmp_path):
    engine = store(tmp_path, [pushed({"alertname": "DbDown", "service": "db"}, NOW - MIN)])
    [stored] = firing_alerts(engine, NOW)
    silences = [
        {"id": "s-db", "state": "active", "matchers": ['org="a"', 'service=~"d.*"']},
        {"id": "s-other-org", "state": "active", "matchers": ['org="b"', 'service="db"']},
        {"id": "s-expired", "state": "expired", "matchers": ['service="db"']},
    ]
    muted_by = muting(active_matchers(silences), {**stored["labels"], "org": "a"})
    assert muted_by == ["s-db"]
    alert = gettable_alert(stored, muted_by)
    assert alert["labels"] == {"alertname": "DbDown", "service": "db", "org": "a"}
    assert alert["status"] == {"state": "suppressed", "silencedBy": ["s-db"], "inhibitedBy": []}
    assert alert["startsAt"] == "2027-01-15T07:59:00.000Z" and alert["endsAt"] == "2027-01-15T08:04:00.000Z"
    assert alert["receivers"] == [] and alert["fingerprint"] == stored["fingerprint"]
    assert gettable_alert({**stored, "ends_at": None}, [])["endsAt"] == NO_END
