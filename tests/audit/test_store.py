"""The audit store's contract, on SQLite and on PostgreSQL alike."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from streams.audit import store, timeline
from streams.audit.models import Base
from streams.audit.store import Position
from tests.audit.records import decision, delivery, effect, event


def _batch(n: int, session: str = "acme:cpu:web-1"):
    items = []
    for i in range(n):
        items.append((Position("events.telemetry", i % 3, i), event(i, session)))
        items.append((Position("decisions", i % 3, i), decision(i, session)))
        if i % 2 == 0:
            items.append((Position("outbox", i % 3, i), effect(i, session)))
            items.append((Position("deliveries", 0, i), delivery(i, session)))
    return items


def test_migrations_build_exactly_the_models_and_rerun_as_no_ops(audit_db):
    _, engine = audit_db
    store.migrate(engine)
    store.migrate(engine)
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []


def test_a_batch_written_twice_gives_the_same_rows_and_offsets(audit_db):
    _, engine = audit_db
    store.migrate(engine)
    items = _batch(10)
    store.write_batch(engine, items)
    first = store.count_rows(engine)
    store.write_batch(engine, items)  # a redelivered batch after a crash
    assert (
        store.count_rows(engine)
        == first
        == {
            "audit_events": 10,
            "audit_decisions": 10,
            "audit_effects": 5,
            "audit_deliveries": 5,
        }
    )
    offsets = store.stored_offsets(engine)
    assert offsets[("events.telemetry", 0)] == 10  # next offset after 9 (9 % 3 == 0)
    assert offsets[("deliveries", 0)] == 9


def test_timeline_of_a_session(audit_db):
    _, engine = audit_db
    store.migrate(engine)
    store.write_batch(engine, _batch(4) + _batch(2, session="other"))
    entries = timeline.build(store.session_rows(engine, "acme:cpu:web-1"))
    assert [e["event_id"] for e in entries] == ["ev-0", "ev-1", "ev-2", "ev-3"]
    first = entries[0]
    assert first["decision"]["runbook"] == "high-cpu" and first["decision"]["outcome"] == "notified"
    assert first["effects"][0]["deliveries"] == [
        {
            "channel": "slack",
            "receiver": "infra-slack",
            "status": "delivered",
            "attempts": 2,
            "http_status": 200,
            "latency_ms": 12.5,
            "error": None,
        }
    ]
    assert entries[1]["decision"]["gates"] == [{"gate": "cooldown", "verdict": "stop", "reason": "15m"}]
    text = timeline.render("acme:cpu:web-1", entries)
    assert "classified cpu/warning p=0.90 by model-test; runbook high-cpu (set rs-1); outcome notified" in text
    assert "gate cooldown       stop: 15m" in text
    assert "delivered? delivered after 2 attempt(s) HTTP 200" in text


def test_prune_removes_old_rows_and_keeps_offsets(audit_db):
    _, engine = audit_db
    store.migrate(engine)
    store.write_batch(engine, _batch(10))
    cutoff = 1_700_000_000_000 + 5 * 1000  # rows of i < 5 are older
    deleted = store.prune(engine, cutoff)
    assert deleted["audit_events"] == 5 and deleted["audit_decisions"] == 5
    assert store.count_rows(engine)["audit_events"] == 5
    assert store.stored_offsets(engine)[("events.telemetry", 0)] == 10


def _migrate_together(url: str, n: int = 6) -> None:
    import subprocess
    import sys

    code = "import sys; from streams.db import make_engine; from streams.audit import store; store.migrate(make_engine(sys.argv[1]))"
    procs = [
        subprocess.Popen([sys.executable, "-c", code, url], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for _ in range(n)
    ]
    outputs = [(p.wait(120), p.stdout.read().decode(errors="replace")) for p in procs]
    assert [rc for rc, _ in outputs] == [0] * n, "\n".join(out[-1500:] for rc, out in outputs if rc)


def test_processes_starting_together_on_a_fresh_sqlite_file_all_migrate(tmp_path):
    """As below, for `opsloop dev --sqlite` (the console and the projector on one file)."""
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    _migrate_together(url)
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM alembic_version")).scalar_one() == 1
    engine.dispose()


def test_processes_starting_together_on_a_fresh_database_all_migrate(pg_audit_db):
    """`opsloop dev` starts the projector and the console at once, compose the projector, the API
    and the console: each migrates on start. On a fresh database two CREATE TABLE alembic_version
    raced and one process died (UniqueViolation); migrations now take a lock and wait.
    Processes, not threads: Alembic's migration context is global to a process."""
    url, engine = pg_audit_db
    _migrate_together(url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM alembic_version")).scalar_one() == 1


def test_stored_offsets_never_move_back(audit_db):
    """A batch stores its last offset + 1; a record it skipped earlier in the same partition (dead-lettered to
    events.dlq) advances its own afterwards, and must not pull the offset back below the rows written."""
    _, engine = audit_db
    store.migrate(engine)
    store.write_batch(engine, [(Position("events.telemetry", 0, i), event(i, "acme:s")) for i in range(5, 8)])
    store.advance_offsets(engine, {("events.telemetry", 0): 3, ("events.telemetry", 1): 2})
    assert store.stored_offsets(engine) == {("events.telemetry", 0): 8, ("events.telemetry", 1): 2}
    store.advance_offsets(engine, {("events.telemetry", 1): 9})
    assert store.stored_offsets(engine)[("events.telemetry", 1)] == 9


def test_an_incident_from_before_its_alerts_were_kept_has_its_labels_as_its_one_alert(audit_db):
    """Migration 0004 on a database 0003 left with incidents: the column filled, so filters still find them."""
    from alembic import command
    from alembic.config import Config

    from streams.audit import queries
    from streams.audit.store import MIGRATIONS

    _, engine = audit_db
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    columns = (
        "session_key, org, status, severity, category, runbook, labels, first_seen, last_seen, last_receivers, "
        "last_outcome, last_decision_id"
    )
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0003")
        for key, labels in (("acme:db:db-1", '{"service": "db-1"}'), ("acme:x", "{}")):
            conn.execute(
                sa.text(
                    f"INSERT INTO incidents ({columns}) VALUES (:k, 'acme', 'firing', 'urgent', 'database', '', "
                    ":labels, 1, 2, '[]', 'notified', 'dec-1')"
                ),
                {"k": key, "labels": labels},
            )
    store.migrate(engine)
    page = queries.list_incidents(engine, queries.IncidentQuery.parse(sort="session_key"))
    assert [(i["session_key"], i["alerts"]) for i in page.items] == [
        ("acme:db:db-1", [{"service": "db-1"}]),
        ("acme:x", []),
    ]
    found = queries.list_incidents(engine, queries.IncidentQuery.parse(filter='service=~"db-.*"'))
    assert [i["session_key"] for i in found.items] == ["acme:db:db-1"]
