"""What ingest reads back for Alertmanager's clients: silences and firing alerts, from the audit store.

Ingest writes events and keeps no state of its own, so the reads of Alertmanager's API (``amtool silence
query``, ``amtool alert query``) come from the audit store ``opsloop projector`` fills (``DATABASE_URL``),
through the same queries as the read API and the CLI (:mod:`streams.audit.queries`). The store is opened on
the first read: most ingests never read, and one without a store still takes every post.

Who may read: a token with ``control: true`` in its scope (the operators' and on-call tokens that make
silences), and only its scope's orgs (every org for ``orgs: ["*"]``). A producer's plain token writes and
does not read.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from aiohttp import web
from sqlalchemy.engine import make_url

from streams.audit import queries
from streams.db import make_engine, normalise_url, outage_reason
from streams.ingest.errors import BadRequest, Forbidden, IngestError
from streams.ingest.fields import index
from streams.ingest.pipeline import INGEST
from streams.ingest.scopes import Scope
from streams.model.matchers import Matcher, MatcherError, parse_matcher
from streams.settings import SettingsError

T = TypeVar("T")


class StoreUnavailable(IngestError):
    """The audit store cannot be read: a read answers 503 (the writes do not need it)."""

    status = 503

    def __init__(self, reason: str) -> None:
        super().__init__(reason, headers={"Retry-After": "5"})


class AuditReads:
    """The audit store, opened on the first read."""

    def __init__(self, database_url: str) -> None:
        self._url = database_url
        self._engine: sa.Engine | None = None

    def _open(self) -> sa.Engine:
        if self._engine is None:
            try:
                url = make_url(normalise_url(self._url))
                path = url.database if url.get_backend_name() == "sqlite" else None
                if path and path != ":memory:" and not Path(path).expanduser().exists():
                    # make_engine would create an empty file here: say what is missing instead
                    raise StoreUnavailable(
                        "no audit store yet (DATABASE_URL names a SQLite file that does not exist): silences and "
                        "alerts are read from what `opsloop projector` stores"
                    )
                self._engine = make_engine(self._url)
            except sa.exc.ArgumentError:  # its message repeats the URL, password and all
                raise StoreUnavailable("the audit store cannot be opened (DATABASE_URL is not a URL)") from None
            except SettingsError as exc:  # make_engine's reasons never repeat the URL
                raise StoreUnavailable(f"the audit store cannot be opened ({str(exc).split(';')[0]})") from None
        return self._engine

    async def _read(self, what: str, query: Callable[..., T], orgs: frozenset[str] | None) -> T:
        engine = self._open()
        now_ms = int(time.time() * 1000)
        try:
            return await asyncio.to_thread(query, engine, now_ms, orgs=orgs)
        except sa.exc.SQLAlchemyError as exc:
            raise StoreUnavailable(f"{what} cannot be read from the audit store ({outage_reason(exc)})") from None

    async def silences(self, orgs: frozenset[str] | None) -> list[dict[str, Any]]:
        """:func:`streams.audit.queries.list_silences` now, of ``orgs`` (None: every org)."""
        return await self._read("silences", queries.list_silences, orgs)

    async def alerts(self, orgs: frozenset[str] | None) -> list[dict[str, Any]]:
        """:func:`streams.audit.queries.firing_alerts` now, of ``orgs`` (None: every org)."""
        return await self._read("alerts", queries.firing_alerts, orgs)


AUDIT_READS = web.AppKey("audit_reads", AuditReads)


def readable_orgs(scope: Scope) -> frozenset[str] | None:
    """The orgs a token may read: its scope's (None: every org)."""
    return None if "*" in scope.orgs else frozenset(scope.orgs)


def read_scope(request: web.Request, what: str) -> Scope:
    """The scope of the request's token, which must have ``control: true`` to read ``what``."""
    principal = request.app[INGEST].authenticate(request)
    if not principal.scope.control:
        raise Forbidden(f"{principal.name} may not read {what}; grant it control: true in its scope")
    return principal.scope


def filter_matchers(request: web.Request) -> list[Matcher]:
    """Alertmanager's ``?filter=`` (repeated, each a matcher); 400 naming the one that does not parse."""
    filters = []
    for i, text in enumerate(request.query.getall("filter", [])):
        try:
            filters.append(parse_matcher(text))
        except MatcherError as exc:
            raise BadRequest(index("filter", i), str(exc)) from None
    return filters


def iso_ms(ms: int) -> str:
    """Epoch milliseconds as Alertmanager writes a time (RFC 3339, UTC, milliseconds)."""
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def ms_of_iso(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)
