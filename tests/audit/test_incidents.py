"""The incidents table follows each session's decisions, on real PostgreSQL (and SQLite), idempotently."""

from __future__ import annotations

import sqlalchemy as sa

from streams.audit import store
from streams.audit.models import IncidentRow
from streams.audit.store import Position
from tests.audit.records import decision, event

SESSION = "acme:db:db-1"
T0 = 1_700_000_000_000


def step(i: int, outcome: str, *, session: str = SESSION, kind: str = "telemetry", **extra) -> list:
    """An event and its decision with ``outcome``, at offsets ``i``."""
    ev = event(i, session)
    ev["labels"] = {"alertname": "PgDown", "service": f"db-{i % 2}", "team": "data"}
    dec = decision(i, session)
    dec.update(kind=kind, outcome=outcome, severity="urgent", category="database", runbook="db-down", gates=[])
    dec.update(extra)
    return [(Position("events.telemetry", 0, i), ev), (Position("decisions", 0, i), dec)]


def incidents(engine) -> list[dict]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(IncidentRow.__table__).order_by(IncidentRow.session_key))
        return [dict(r._mapping) for r in rows]


def the_row(engine) -> dict:
    (row,) = incidents(engine)
    return row


def history() -> list[list]:
    return [
        step(1, "grouped"),
        step(2, "notified", kind="timer", matched={"receivers": "db-pager,db-slack", "notification": "firing"}),
        step(3, "acknowledged", kind="webhook", matched={"acked_by": "alice"}),
        step(4, "notified", matched={"receivers": "db-slack"}),
        step(5, "resolved", matched={"receivers": "db-slack"}),
        step(6, "suppressed", gates=[{"gate": "cooldown", "verdict": "stop", "reason": "15m"}]),
        step(
            7,
            "suppressed",
            gates=[{"gate": "silence", "verdict": "stop", "reason": "1 of 1 silenced"}],
            matched={"silence": "silence sil-1 until 1700000900000"},
        ),
        step(8, "notified", matched={"receivers": "db-pager"}),
    ]


def test_a_sessions_row_follows_its_decisions(pg_audit_db):
    _, engine = pg_audit_db
    store.migrate(engine)
    seen = []
    for batch in history():
        store.write_batch(engine, batch)
        row = the_row(engine)
        seen.append((row["status"], row["acked_by"], row["last_receivers"], row["last_outcome"]))
    assert seen == [
        ("firing", None, [], "grouped"),
        ("firing", None, ["db-pager", "db-slack"], "notified"),
        ("acknowledged", "alice", ["db-pager", "db-slack"], "acknowledged"),
        ("acknowledged", "alice", ["db-slack"], "notified"),  # an ack holds until the incident resolves
        ("resolved", "alice", ["db-slack"], "resolved"),
        ("firing", None, ["db-slack"], "suppressed"),  # firing again inside the cooldown: a new episode, untold
        ("silenced", None, ["db-slack"], "suppressed"),  # muted: the old ack is history
        ("firing", None, ["db-pager"], "notified"),
    ]
    row = the_row(engine)
    assert row["first_seen"] == T0 + 1000
    assert row["last_seen"] == T0 + 8000 + 5  # when its last event reached ingest
    assert row["last_notified_at"] == T0 + 8000
    assert (row["org"], row["severity"], row["category"], row["runbook"]) == ("acme", "urgent", "database", "db-down")
    assert row["labels"] == {"alertname": "PgDown", "service": "db-0", "team": "data"}
    assert row["last_decision_id"] == "dec-8"


def test_a_flush_an_ack_and_a_resolution_keep_the_alerts_severity_and_category(audit_db):
    """Their decisions carry their own event's verdict (a timer, an ack webhook, a resolved alert: info,
    other); the incident stays what the alert said until the alert fires again with another."""
    _, engine = audit_db
    store.migrate(engine)
    own = {"severity": "info", "category": "other"}
    seen = []
    for batch in [
        step(1, "grouped"),
        step(2, "notified", kind="timer", matched={"receivers": "db-pager"}, **own),
        step(3, "acknowledged", kind="webhook", matched={"acked_by": "alice"}, **own),
        step(4, "resolved", **own),
        step(5, "grouped", severity="warning", category="disk"),  # a new episode says it again
    ]:
        store.write_batch(engine, batch)
        row = the_row(engine)
        seen.append((row["status"], row["severity"], row["category"]))
    assert seen == [
        ("firing", "urgent", "database"),
        ("firing", "urgent", "database"),
        ("acknowledged", "urgent", "database"),
        ("resolved", "urgent", "database"),
        ("firing", "warning", "disk"),
    ]


def test_an_incident_is_as_severe_as_its_most_severe_alert_of_the_episode(audit_db):
    """kube-prometheus's rules through Prometheus: a session's critical filesystem alert, then the warning
    of another filesystem in the same session: the incident read "warning" in every list and the console,
    and `severity="urgent"` missed it, though it had paged. A runbook's severity for what it takes
    (`agent.failed` fires as urgent) is decide's ``severity`` note; the record's is the classifier's."""
    _, engine = audit_db
    store.migrate(engine)
    seen = []
    for batch in [
        step(1, "notified", severity="urgent", matched={"receivers": "db-pager"}),
        step(2, "grouped", severity="warning"),  # another alert of the session, a warning
        step(3, "resolved", severity="info"),
        step(4, "grouped", severity="warning"),  # a new episode: as severe as its alerts, from the start
        step(5, "notified", kind="webhook", severity="warning", matched={"severity": "urgent", "receivers": "x"}),
    ]:
        store.write_batch(engine, batch)
        seen.append(the_row(engine)["severity"])
    assert seen == ["urgent", "urgent", "urgent", "warning", "urgent"]


def test_last_seen_is_when_the_alert_last_reached_opsloop_as_prometheus_re_sends_it(audit_db):
    """Prometheus re-sends a firing alert every minute with its first startsAt, which is the decision's
    time: "last seen" stood at the alert's start while it kept coming, and the list sorted it as stale."""
    _, engine = audit_db
    store.migrate(engine)
    first = step(1, "notified", matched={"receivers": "db-pager"})
    store.write_batch(engine, first)
    for minute in (1, 2, 3):
        again = step(10 + minute, "repeat")
        again[0][1].update(occurred_at=T0 + 1000, received_at=T0 + 1000 + minute * 60_000)  # the same startsAt
        again[1][1].update(decided_at=T0 + 1000)
        store.write_batch(engine, again)
    row = the_row(engine)
    assert (row["first_seen"], row["last_seen"]) == (T0 + 1000, T0 + 1000 + 3 * 60_000)


def test_the_silence_gate_marks_it_silenced_with_the_reason(pg_audit_db):
    _, engine = pg_audit_db
    store.migrate(engine)
    store.write_batch(engine, step(1, "grouped") + history()[6])
    row = the_row(engine)
    assert (row["status"], row["silenced_by"]) == ("silenced", "silence sil-1 until 1700000900000")


def test_an_inhibited_incident_is_muted_with_the_alert_that_mutes_it(audit_db):
    """kube-prometheus's KubeAPIErrorBudgetBurn warning, muted by its critical variant, read "firing" in the
    incidents list and the console, like one that paged."""
    _, engine = audit_db
    store.migrate(engine)
    why = "inhibit_rules[0]: KubeAPIErrorBudgetBurn firing (org=acme, alertname=KubeAPIErrorBudgetBurn)"
    muted = step(2, "suppressed", gates=[{"gate": "inhibit", "verdict": "stop", "reason": "1 of 1 inhibited"}])
    muted[1][1]["matched"] = {"inhibit": why}
    store.write_batch(engine, step(1, "grouped") + muted)
    row = the_row(engine)
    assert (row["status"], row["silenced_by"]) == ("silenced", f"inhibited: {why}")
    store.write_batch(engine, step(3, "notified", matched={"receivers": "db-slack"}))  # its source resolved
    assert (the_row(engine)["status"], the_row(engine)["silenced_by"]) == ("firing", None)


def test_refolding_the_same_records_changes_nothing(audit_db):
    _, engine = audit_db
    store.migrate(engine)
    records = [item for batch in history() for item in batch]
    other = step(101, "notified", session="acme:db:db-2", matched={"receivers": "x"})
    store.write_batch(engine, records[:7] + other)
    store.write_batch(engine, records[7:])
    once = incidents(engine)
    assert [r["status"] for r in once] == ["firing", "firing"]
    for batch in (records, records[:5], records[5:] + other, records + records):
        store.write_batch(engine, batch)
        assert incidents(engine) == once
    # and folded in one batch from scratch it comes out the same
    fresh = engine
    with fresh.begin() as conn:
        conn.execute(sa.delete(IncidentRow))
        for name in ("audit_events", "audit_decisions"):
            conn.execute(sa.text(f"DELETE FROM {name}"))
    store.write_batch(fresh, records + other)
    assert incidents(fresh) == once


def test_an_event_stored_after_its_decision_still_brings_its_labels(pg_audit_db):
    _, engine = pg_audit_db
    store.migrate(engine)
    (ev_pos, ev), (dec_pos, dec) = step(1, "notified", matched={"receivers": "db-pager"})
    store.write_batch(engine, [(dec_pos, dec)])
    assert the_row(engine)["labels"] == {}
    store.write_batch(engine, [(ev_pos, ev)])
    assert the_row(engine)["labels"] == {"alertname": "PgDown", "service": "db-1", "team": "data"}


def test_decisions_that_say_nothing_about_an_incident_make_no_row(pg_audit_db):
    _, engine = pg_audit_db
    store.migrate(engine)
    # an escalation step an ack stopped says nothing; an alert firing that a gate kept quiet is firing all the same
    quiet_step = step(3, "suppressed", kind="timer", type="timer.fired")
    store.write_batch(engine, step(1, "recorded") + step(2, "repeat") + quiet_step)
    assert incidents(engine) == []
    store.write_batch(engine, step(4, "suppressed", gates=[{"gate": "cap", "verdict": "stop", "reason": "3 of 3"}]))
    assert the_row(engine)["status"] == "firing"


def test_an_incidents_alerts_are_the_most_recent_within_a_bound_of_count_and_size():
    from streams.audit.incidents import MAX_ALERTS, MAX_ALERTS_CHARS, with_alert

    alerts: list = []
    for i in range(MAX_ALERTS + 20):
        alerts = with_alert(alerts, {"pod": f"p-{i}"})
    assert len(alerts) == MAX_ALERTS and alerts[-1] == {"pod": f"p-{MAX_ALERTS + 19}"}
    big = [{"pod": f"p-{i}", "note": "x" * 4000} for i in range(40)]
    for labels in big:
        alerts = with_alert(alerts, labels)
    assert alerts[-1] == big[-1] and sum(len(k) + len(v) for a in alerts for k, v in a.items()) <= MAX_ALERTS_CHARS
    assert with_alert([], {"huge": "y" * 100_000}) == [{"huge": "y" * 100_000}]  # the latest is always kept
    assert with_alert(alerts, {}) == alerts  # a timer's event (no labels) is not an alert
