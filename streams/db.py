"""SQL engines: SQLite as the embedded default, PostgreSQL (psycopg 3) in production.

One place turns a DATABASE_URL into a SQLAlchemy engine, so every store (the
delivery ledger, the audit projection) gets the same driver choice and the same
SQLite settings (WAL, a busy timeout, a parent directory that exists).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url


def normalise_url(database_url: str) -> str:
    """``postgres://`` and ``postgresql://`` mean psycopg 3 here (SQLAlchemy would pick psycopg2)."""
    url = make_url(database_url)
    if url.drivername in ("postgres", "postgresql"):
        url = url.set(drivername="postgresql+psycopg")
    return url.render_as_string(hide_password=False)


def make_engine(database_url: str, **kwargs: Any) -> sa.Engine:
    """An engine for ``database_url``; SQLite files get WAL and wait on locks instead of failing."""
    url = make_url(normalise_url(database_url))
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, **kwargs)

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return sa.create_engine(url, **kwargs)
