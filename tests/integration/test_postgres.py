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
