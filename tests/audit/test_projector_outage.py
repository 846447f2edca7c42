"""The projector waits out a database outage instead of dying (found by the fault harness).

PostgreSQL stopped under ``opsloop projector`` (``python -m tests.faults --scenario postgres``)
ended the process with an OperationalError, and nothing brought it back. Here the database
is a real SQLite file whose directory is missing (the driver refuses to connect, as a
stopped server does) until the outage ends; the batch is then written once, whole.
"""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa

from streams.audit import store
from streams.audit.store import Position
from streams.db import while_database_down
from tests.audit.records import decision, event


def _items(n: int) -> list:
    return [
        item
        for i in range(n)
        for item in (
            (Position("events.telemetry", 0, i), event(i, "acme:db")),
            (Position("decisions", 0, i), decision(i, "acme:db")),
        )
    ]


def test_a_batch_refused_during_an_outage_is_written_once_the_database_is_back(tmp_path):
    home = tmp_path / "db"  # missing: "unable to open database file" until the outage ends
    engine = sa.create_engine(f"sqlite:///{home / 'audit.db'}")
    attempts: list[int] = []

    def write(items: list) -> int:
        attempts.append(1)
        if len(attempts) == 3:
            home.mkdir()  # the database is back
        store.migrate(engine)
        return store.write_batch(engine, items)

    written = asyncio.run(while_database_down(write, _items(5), first_wait_s=0.01))
    assert len(attempts) == 3 and written == 10
    assert store.count_rows(engine)["audit_events"] == 5
    assert store.stored_offsets(engine) == {("events.telemetry", 0): 5, ("decisions", 0): 5}


def test_a_stop_during_an_outage_returns_without_writing(tmp_path):
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'missing' / 'audit.db'}")

    async def scenario() -> object:
        stop = asyncio.Event()
        task = asyncio.create_task(while_database_down(store.migrate, engine, stop=stop, first_wait_s=5))
        await asyncio.sleep(0.2)  # let the first attempt fail (the test's own pacing, not a readiness check)
        stop.set()
        return await asyncio.wait_for(task, 2)

    assert asyncio.run(scenario()) is None


@pytest.mark.parametrize(
    "error",
    [
        sa.exc.ProgrammingError("SELECT 1 FROM audit_events", {}, Exception('relation "audit_events" does not exist')),
        ValueError("a bug"),
    ],
    ids=["schema", "bug"],
)
def test_an_error_that_is_not_an_outage_is_raised_at_once(error):
    attempts: list[int] = []

    def broken() -> None:
        attempts.append(1)
        raise error

    with pytest.raises(type(error)):
        asyncio.run(while_database_down(broken, first_wait_s=0.01))
    assert len(attempts) == 1


def test_each_try_during_an_outage_is_one_warning_naming_what_and_why(tmp_path, caplog):
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'missing' / 'audit.db'}")
    attempts: list[int] = []

    def migrate_on_the_third_try() -> str:
        attempts.append(1)
        if len(attempts) == 3:
            (tmp_path / "missing").mkdir()
        store.migrate(engine)
        return "migrated"

    with caplog.at_level("WARNING", logger="streams.db"):
        result = asyncio.run(
            while_database_down(migrate_on_the_third_try, first_wait_s=0.01, what="the audit database")
        )
    assert result == "migrated"
    assert [r.getMessage() for r in caplog.records] == [
        "the audit database is unavailable (OperationalError: unable to open database file); retrying in 0s",
        "the audit database is unavailable (OperationalError: unable to open database file); retrying in 0s",
    ]
    assert all(r.exc_info is None for r in caplog.records)  # a line each, no traceback
