"""SQL engines: SQLite as the embedded default, PostgreSQL (psycopg 3) in production.

One place turns a DATABASE_URL into a SQLAlchemy engine, so every store (the
delivery ledger, the audit projection) gets the same driver choice and the same
SQLite settings (WAL, a busy timeout, a parent directory that exists).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url

log = logging.getLogger(__name__)
T = TypeVar("T")
DB_RETRY_S = 1.0  # first wait after a database outage is seen; doubles up to DB_RETRY_MAX_S
DB_RETRY_MAX_S = 30.0


def normalise_url(database_url: str) -> str:
    """``postgres://`` and ``postgresql://`` mean psycopg 3 here (SQLAlchemy would pick psycopg2)."""
    url = make_url(database_url)
    if url.drivername in ("postgres", "postgresql"):
        url = url.set(drivername="postgresql+psycopg")
    return url.render_as_string(hide_password=False)


def dialect_insert(bind: sa.Engine | sa.Connection, table: sa.Table) -> postgresql.Insert | sqlite.Insert:
    """The INSERT of ``bind``'s dialect, which has ON CONFLICT (both engines :func:`make_engine` makes have it)."""
    return postgresql.insert(table) if bind.dialect.name == "postgresql" else sqlite.insert(table)


def make_engine(database_url: str, **kwargs: Any) -> sa.Engine:
    """An engine for ``database_url``; SQLite files get WAL and wait on locks instead of failing.

    A URL this build cannot use (not a URL, another database, a driver not installed) is a
    :class:`~streams.settings.SettingsError` that never repeats it (it holds the password)."""
    try:
        url = make_url(normalise_url(database_url))
        if url.get_backend_name() not in ("sqlite", "postgresql"):
            raise _bad_url(f"{url.get_backend_name()!r} is not supported")
        return _engine(url, **kwargs)
    except sa.exc.NoSuchModuleError:  # an ArgumentError too: the URL parsed, its scheme names no dialect
        raise _bad_url(f"no driver for {database_url.split('://', 1)[0]!r}") from None
    except sa.exc.ArgumentError:
        raise _bad_url("not a URL") from None
    except ImportError as exc:  # a dialect whose driver is not installed (postgresql+psycopg2)
        raise _bad_url(f"its driver is not installed ({exc.name})") from None


def _engine(url: sa.URL, **kwargs: Any) -> sa.Engine:
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


def _bad_url(why: str) -> Exception:
    from streams.settings import SettingsError

    return SettingsError(
        f"invalid settings: DATABASE_URL (or OPSLOOP_SINK_DATABASE_URL): {why}; expected "
        "postgresql+psycopg://user:password@host:port/database or sqlite:///path"
    )


def database_down(exc: BaseException) -> bool:
    """Is ``exc`` the database being unreachable (wait for it), not a bug or a schema problem (raise)?"""
    return isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError)) or bool(
        getattr(exc, "connection_invalidated", False)
    )


def outage_reason(exc: BaseException) -> str:
    """The driver's first line (host, port, user, database; never the password), for a log line or an error."""
    lines = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


async def while_database_down(
    fn: Callable[..., T],
    *args: Any,
    stop: asyncio.Event | None = None,
    first_wait_s: float = DB_RETRY_S,
    what: str = "the database",
) -> T | None:
    """``fn(*args)`` off the event loop, called again while the database is down (None if ``stop`` is set first).

    An outage (or a database still starting) used to end the projector, and crash the sinks agent every few
    seconds with a traceback: a service waits instead, one log line per try, and carries on when it is back.
    Waiting is safe for its callers: each writes in one transaction (a batch's rows and its offsets, a ledger's
    tables), so a call refused by a dead connection is made whole on a later call, or not at all."""
    wait = first_wait_s
    while True:
        try:
            return await asyncio.to_thread(fn, *args)
        except Exception as exc:
            if not database_down(exc):
                raise
            log.warning("%s is unavailable (%s); retrying in %.0fs", what, outage_reason(exc), wait)
        if stop is None:
            await asyncio.sleep(wait)
        else:
            try:
                await asyncio.wait_for(stop.wait(), wait)
                return None
            except TimeoutError:
                pass
        wait = min(wait * 2, DB_RETRY_MAX_S)
