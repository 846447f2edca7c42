"""The suite's PostgreSQL is real: psycopg 3 under SQLAlchemy 2, transactions and all."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

pytestmark = pytest.mark.integration


def test_engine_speaks_psycopg3_to_a_real_server(pg_engine):
    assert pg_engine.dialect.driver == "psycopg"
    meta = sa.MetaData()
    t = sa.Table("probe", meta, sa.Column("id", sa.String, primary_key=True), sa.Column("n", sa.Integer))
    meta.create_all(pg_engine)
    with pg_engine.begin() as conn:
        conn.execute(t.insert(), [{"id": "a", "n": 1}, {"id": "b", "n": 2}])
    with pytest.raises(sa.exc.IntegrityError):
        with pg_engine.begin() as conn:
            conn.execute(t.insert(), [{"id": "c", "n": 3}, {"id": "a", "n": 9}])  # rolled back whole
    with pg_engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(t)).scalar() == 2
        assert conn.execute(sa.text("select current_setting('server_version_num')::int")).scalar() >= 150000


def test_opsloop_dev_sees_a_killed_server_and_starts_it_again():
    """What `opsloop dev` watches: pg_ctl daemonises the server, so no child to poll; a SIGKILL of the
    postmaster (left a zombie where nothing reaps it) must read as ended, and a restart must recover
    the cluster with its data."""
    import os
    import signal
    import time

    from streams.devtools.dev import PostgresChild
    from tests.support.postgres import LocalPostgres

    pg = LocalPostgres().start()
    try:
        engine = sa.create_engine(pg.url)
        with engine.begin() as conn:
            conn.execute(sa.text("create table kept (n int)"))
            conn.execute(sa.text("insert into kept values (7)"))
        with engine.connect() as conn:  # the test cluster commits without waiting for its WAL (dev's does)
            conn.execute(sa.text("checkpoint"))
        engine.dispose()
        child = PostgresChild(pg)
        pid = pg.server_pid()
        assert pid is not None and child.ended() is None
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while child.ended() is None:  # the kill is asynchronous: poll until the process is gone
            assert time.monotonic() < deadline, "a killed postmaster still reads as running"
            time.sleep(0.02)
        assert child.ended() == "its server process is gone"
        child.restart()
        assert child.ended() is None and pg.server_pid() not in (None, pid)
        engine = sa.create_engine(pg.url)
        with engine.connect() as conn:
            assert conn.execute(sa.text("select n from kept")).scalar() == 7
        engine.dispose()
    finally:
        pg.stop()
