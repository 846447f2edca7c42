"""Writing and reading the audit projection.

``rows_for`` is pure: a decoded record and its coordinates in, the rows for its
tables out (a decision's include one effect row per timer effect it carries).
``write_batch`` inserts a batch idempotently (a row whose id exists is
skipped, so a replayed batch changes nothing) and moves the partition offsets in
the same transaction. A record the database refuses (a value too long for its
column, a NUL character, NaN in the JSON, a field missing) never stops the
projection: the batch is retried one record per transaction, and the record that
fails goes to ``audit_dead_letters`` with the reason, its offset moving in that
same transaction, so a restart neither re-tries it forever nor loses it. ``migrate`` brings any existing database to the current
schema with Alembic.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import sqlalchemy as sa

from streams.audit.incidents import fold_batch
from streams.audit.models import Base, DeadLetterRow, DecisionRow, DeliveryRow, EffectRow, EventRow, ProjectorOffset
from streams.db import dialect_insert
from streams.model.effects import timer_effects

log = logging.getLogger(__name__)
DEAD_RECORD_CHARS = 64_000

MIGRATIONS = Path(__file__).resolve().parent / "migrations"

# logical topic -> table
TABLE_OF: dict[str, type[Base]] = {
    "events.telemetry": EventRow,
    "events.webhook": EventRow,
    "events.timer": EventRow,
    "events.scan": EventRow,
    "decisions": DecisionRow,
    "outbox": EffectRow,
    "deliveries": DeliveryRow,
}
PROJECTED_TOPICS = tuple(TABLE_OF)
# tables whose new rows also fold into ``incidents`` -> their id column
FOLDED: dict[type[Base], str] = {EventRow: "event_id", DecisionRow: "decision_id"}


@dataclass(frozen=True)
class Position:
    topic: str  # logical name
    partition: int
    offset: int


def _plain(record: Mapping[str, Any]) -> dict[str, Any]:
    """JSON-safe copy (bytes become hex) for the record column."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, bytes):
            out[key] = value.hex()
        elif isinstance(value, Mapping):
            out[key] = _plain(value)
        elif isinstance(value, list):
            out[key] = [_plain(v) if isinstance(v, Mapping) else v for v in value]
        else:
            out[key] = value
    return out


def rows_for(pos: Position, record: Mapping[str, Any]) -> list[tuple[type[Base], dict[str, Any]]]:
    """The table and row for one decoded record, and for a decision an effect row per timer effect it carries.

    Timer effects are not produced to outbox (streams/model/effects.py): they come here on their
    decision record, rebuilt into the very effect records outbox used to hold, so audit_effects
    and the timeline keep them as before (their coordinates are the decision's)."""
    table = TABLE_OF[pos.topic]
    rows = [(table, _row_for(table, pos, record))]
    if table is DecisionRow:
        rows += [(EffectRow, _row_for(EffectRow, pos, e)) for e in timer_effects(record)]
    return rows


def _row_for(table: type[Base], pos: Position, record: Mapping[str, Any]) -> dict[str, Any]:
    where = {"topic": pos.topic, "partition": pos.partition, "offset": pos.offset, "record": _plain(record)}
    if table is EventRow:
        return {
            **where,
            "event_id": record["event_id"],
            "session_key": record["session_key"],
            "org": record["org"],
            "kind": record["kind"],
            "type": record["type"],
            "source": record["source"],
            "occurred_at": record["occurred_at"],
            "received_at": record["received_at"],
        }
    if table is DecisionRow:
        return {
            **where,
            "decision_id": record["decision_id"],
            "event_id": record["event_id"],
            "session_key": record["session_key"],
            "org": record["org"],
            "decided_at": record["decided_at"],
            "category": record["category"],
            "severity": record["severity"],
            "outcome": record["outcome"],
            "runbook": record.get("runbook", ""),
        }
    if table is EffectRow:
        notify = record.get("notify") or {}
        return {
            **where,
            "effect_id": record["effect_id"],
            "event_id": record["event_id"],
            "session_key": record["session_key"],
            "type": record["type"],
            "channel": notify.get("channel", ""),
            "receiver": notify.get("receiver", ""),
            "created_at": record["created_at"],
        }
    return {
        **where,
        "receipt_id": f"{pos.topic}:{pos.partition}:{pos.offset}",
        "effect_id": record["effect_id"],
        "session_key": record.get("session_key", ""),
        "channel": record["channel"],
        "status": record["status"],
        "attempts": record["attempts"],
        "completed_at": record["completed_at"],
    }


def _insert_ignore(conn: sa.Connection, table: type[Base], rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    conn.execute(
        dialect_insert(conn, cast(sa.Table, table.__table__)).on_conflict_do_nothing(), rows
    )  # a mapped class: a Table


def _insert_new(conn: sa.Connection, table: type[Base], rows: list[dict[str, Any]], key: str) -> set[str]:
    """Insert what is not there yet; the ids (column ``key``) of the rows actually inserted."""
    if not rows:
        return set()
    t = cast(sa.Table, table.__table__)  # a mapped class: a Table
    return set(conn.execute(dialect_insert(conn, t).on_conflict_do_nothing().returning(t.c[key]), rows).scalars())


def _upsert_offsets(conn: sa.Connection, offsets: Mapping[tuple[str, int], int]) -> None:
    if not offsets:
        return
    table = cast(sa.Table, ProjectorOffset.__table__)  # a mapped class: a Table
    stmt = dialect_insert(conn, table)
    # never backwards: a batch's rows store its last offset + 1, and the records it skipped (dead-lettered to
    # events.dlq) advance theirs after; an earlier skipped record used to pull the offset back below the rows
    # written, and a restart read them (and re-dead-lettered the skipped one) again
    greater = sa.func.greatest if conn.dialect.name == "postgresql" else sa.func.max
    stmt = stmt.on_conflict_do_update(
        index_elements=["topic", "partition"],
        set_={"next_offset": greater(table.c.next_offset, stmt.excluded.next_offset)},
    )
    conn.execute(stmt, [{"topic": t, "partition": p, "next_offset": o} for (t, p), o in offsets.items()])


def write_batch(engine: sa.Engine, items: Iterable[tuple[Position, Mapping[str, Any]]]) -> int:
    """Insert the rows of a batch and advance offsets, atomically. Returns rows offered.

    When the database refuses the batch because of a record in it, each record is
    written in its own transaction instead, and the ones refused are dead-lettered.
    A database that is down (connection errors) still raises: that is not the record's fault.
    """
    items = list(items)
    try:
        _write_rows(engine, items)
    except Exception as exc:
        if not _record_fault(exc):
            raise
        log.warning("audit batch refused (%s); writing record by record", type(exc).__name__)
        for item in items:
            try:
                _write_rows(engine, [item])
            except Exception as one:
                if not _record_fault(one):
                    raise
                dead_letter(engine, *item, reason=_reason(one))
    return len(items)


def _write_rows(engine: sa.Engine, items: list[tuple[Position, Mapping[str, Any]]]) -> None:
    by_table: dict[type[Base], list[dict[str, Any]]] = {}
    offsets: dict[tuple[str, int], int] = {}
    for pos, record in items:
        for table, row in rows_for(pos, record):
            by_table.setdefault(table, []).append(row)
        key = (pos.topic, pos.partition)
        offsets[key] = max(offsets.get(key, 0), pos.offset + 1)
    with engine.begin() as conn:
        new: dict[type[Base], set[str]] = {}
        for table, rows in by_table.items():
            if table in FOLDED:
                new[table] = _insert_new(conn, table, rows, FOLDED[table])
            else:
                _insert_ignore(conn, table, rows)
        # The incidents fold sees only the records this transaction inserted: a replayed one changes nothing.
        fresh: dict[type[Base], list[dict[str, Any]]] = {}
        for table, ids in new.items():  # in Kafka order, each id once (a batch may hold a record twice)
            fresh[table] = []
            for row in by_table[table]:
                if row[FOLDED[table]] in ids:
                    ids.discard(row[FOLDED[table]])
                    fresh[table].append(row["record"])
        fold_batch(conn, fresh.get(EventRow, []), fresh.get(DecisionRow, []))
        _upsert_offsets(conn, offsets)


def _record_fault(exc: BaseException) -> bool:
    """Is ``exc`` about the data (dead-letter the record) rather than the database (raise)?"""
    if isinstance(exc, (sa.exc.DataError, sa.exc.IntegrityError)):
        return True
    if isinstance(exc, sa.exc.DBAPIError):  # operational, interface, programming: the database, not the record
        return False
    if isinstance(exc, sa.exc.StatementError):  # the driver refused a parameter before sending it
        return True
    return isinstance(exc, (KeyError, TypeError, ValueError, UnicodeError, OverflowError))


def _reason(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).splitlines()[0] if str(exc) else ""
    reason = f"{type(exc).__name__}: {text}"[:1000]
    return reason.replace("\x00", "\\x00").encode("ascii", "backslashreplace").decode("ascii")


def _record_text(record: Mapping[str, Any]) -> str:
    """ASCII JSON (NUL and lone surrogates escaped, NaN spelled out): storable in any TEXT column."""
    try:
        text = json.dumps(_plain(record), ensure_ascii=True, sort_keys=True, default=repr)
    except (TypeError, ValueError):
        text = json.dumps(repr(record), ensure_ascii=True)
    return text[:DEAD_RECORD_CHARS]


def dead_letter(engine: sa.Engine, pos: Position, record: Mapping[str, Any], *, reason: str) -> None:
    """Keep ``record`` in audit_dead_letters with ``reason`` and move its offset, in one transaction (idempotent)."""
    log.error("audit: record %s:%d:%d dead-lettered: %s", pos.topic, pos.partition, pos.offset, reason)
    row = {
        "topic": pos.topic,
        "partition": pos.partition,
        "offset": pos.offset,
        "reason": reason,
        "record_json": _record_text(record),
        "failed_at": int(time.time() * 1000),
    }
    with engine.begin() as conn:
        _insert_ignore(conn, DeadLetterRow, [row])
        _upsert_offsets(conn, {(pos.topic, pos.partition): pos.offset + 1})


def dead_letters(engine: sa.Engine) -> list[dict[str, Any]]:
    """The dead-lettered records, oldest coordinates first."""
    t = DeadLetterRow
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(t.topic, t.partition, t.offset, t.reason, t.record_json).order_by(t.topic, t.partition, t.offset)
        )
        return [dict(r._mapping) for r in rows]


def advance_offsets(engine: sa.Engine, offsets: Mapping[tuple[str, int], int]) -> None:
    """Move offsets past records that produce no row (e.g. undecodable ones, counted elsewhere)."""
    with engine.begin() as conn:
        _upsert_offsets(conn, offsets)


def stored_offsets(engine: sa.Engine) -> dict[tuple[str, int], int]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(ProjectorOffset.topic, ProjectorOffset.partition, ProjectorOffset.next_offset))
        return {(t, p): o for t, p, o in rows}


# pg_advisory_xact_lock key ("opsl"): one migration at a time per database.
MIGRATION_LOCK = 0x6F70736C


def migrate(engine: sa.Engine) -> None:
    """Upgrade the database in place to the newest Alembic revision.

    Every process that uses the tables migrates on start (projector, API, console), and they
    often start together: on PostgreSQL the migration holds a transaction-scoped advisory lock,
    so the others wait and then find the schema current (without it two ``CREATE TABLE
    alembic_version`` raced and one process died). On SQLite, ``BEGIN IMMEDIATE`` does the same
    with the file's write lock (the driver's busy timeout is the wait).
    """
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        elif conn.dialect.name == "sqlite":  # the write lock first (the driver runs DDL outside a transaction)
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        config.attributes["connection"] = conn
        command.upgrade(config, "head")


def count_rows(engine: sa.Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            table.__tablename__: conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
            for table in (EventRow, DecisionRow, EffectRow, DeliveryRow)
        }


def session_rows(engine: sa.Engine, session_key: str) -> dict[str, list[dict[str, Any]]]:
    """Every stored record of one session, per table, in Kafka order."""
    out: dict[str, list[dict[str, Any]]] = {}
    with engine.connect() as conn:
        for name, table, order in (
            ("events", EventRow, EventRow.occurred_at),
            ("decisions", DecisionRow, DecisionRow.decided_at),
            ("effects", EffectRow, EffectRow.created_at),
            ("deliveries", DeliveryRow, DeliveryRow.completed_at),
        ):
            rows = conn.execute(
                sa.select(table.record)
                .where(table.session_key == session_key)
                .order_by(order, table.partition, table.offset)
            )
            out[name] = [row[0] for row in rows]
    return out


def prune(engine: sa.Engine, before_ms: int) -> dict[str, int]:
    """Delete rows older than ``before_ms`` (event time); offsets stay, so nothing is re-read."""
    deleted = {}
    with engine.begin() as conn:
        for table, column in (
            (DeliveryRow, DeliveryRow.completed_at),
            (EffectRow, EffectRow.created_at),
            (DecisionRow, DecisionRow.decided_at),
            (EventRow, EventRow.occurred_at),
        ):
            result = conn.execute(sa.delete(table).where(column < before_ms))
            deleted[table.__tablename__] = result.rowcount
    return deleted
