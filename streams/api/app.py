"""The read API (aiohttp), version 1. Every route needs ``Authorization: Bearer <token>``.

Routes (under ``/api/v1``)::

    GET /incidents                 ?filter=<matchers>&status=firing&sort=-last_seen&limit=50&cursor=...
    GET /incidents/{session_key}   the incident and its audit timeline
    GET /silences                  ?state=active|pending|expired
    GET /deadletters               records the projector could not store (tokens for every org only)

Answers are JSON; a refusal is ``{"error": "<reason>"}`` with 400 (naming the bad
parameter or matcher), 401 (no or unknown token), 403 (the token's orgs do not cover
it) or 404. ``v1_app`` is the sub-application a console mounts beside its pages;
``create_app`` is it under ``/api/v1``, which ``opsloop api`` serves.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import sqlalchemy as sa
from aiohttp import web

from streams.api.auth import ApiAuth, AuthError, Reader
from streams.audit import queries, store
from streams.audit.queries import IncidentQuery, QueryError, check_printable

log = logging.getLogger("streams.api")

ENGINE = web.AppKey("engine", sa.Engine)
AUTH = web.AppKey("auth", ApiAuth)
READER = web.RequestKey("reader", Reader)
PREFIX = "/api/v1"
SILENCE_STATES = ("active", "pending", "expired")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, reason: str) -> web.Response:
    headers = {"WWW-Authenticate": 'Bearer realm="opsloop"'} if status == 401 else None
    return web.json_response({"error": reason}, status=status, headers=headers)


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Authenticate every request (unknown paths too), then turn errors into JSON answers."""
    who = "-"
    try:
        reader = request.app[AUTH].check(request.headers.get("Authorization"))
        check_printable(request.path, request.query)
        who = reader.name
        request[READER] = reader
        response = await handler(request)
    except AuthError as exc:
        response = _error(exc.status, exc.reason)
    except QueryError as exc:
        response = _error(400, str(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = _error(exc.status, exc.reason)
    except Exception:  # a bug or the database: 500, the traceback in the log only
        log.exception("%s %s failed", request.method, request.path)
        response = _error(500, "internal error")
    log.info("%s %s by %s -> %d", request.method, request.path, who, response.status)
    return response


def _reader(request: web.Request) -> Reader:
    reader: Reader = request[READER]
    return reader


async def _db(request: web.Request, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return await asyncio.to_thread(fn, request.app[ENGINE], *args, **kwargs)


async def list_incidents(request: web.Request) -> web.Response:
    params = request.query
    q = IncidentQuery.parse(
        filter=params.getall("filter", []),
        status=params.getall("status", []),
        sort=params.get("sort"),
        limit=params.get("limit"),
        cursor=params.get("cursor"),
        orgs=_reader(request).orgs,
    )
    page = await _db(request, queries.list_incidents, q)
    return web.json_response(page.to_json())


async def get_incident(request: web.Request) -> web.Response:
    key = request.match_info["session_key"]
    reader = _reader(request)
    reader.require_session_org(key)
    view = await _db(request, queries.incident_view, key)
    if view.org is None:
        raise web.HTTPNotFound(reason=f"no incident or events for session {key!r}")
    reader.require_org(view.org)
    return web.json_response({"session_key": key, "incident": view.row, "timeline": view.timeline})


async def list_silences(request: web.Request) -> web.Response:
    state = request.query.get("state") or None
    if state is not None and state not in SILENCE_STATES:
        raise QueryError(f"state: {state!r} is not one of {', '.join(SILENCE_STATES)}")
    now = int(time.time() * 1000)
    found = await _db(request, queries.list_silences, now, orgs=_reader(request).orgs, state=state)
    return web.json_response({"silences": found, "now": now})


async def list_dead_letters(request: web.Request) -> web.Response:
    _reader(request).require_all_orgs("dead letters")
    found = await _db(request, store.dead_letters)
    return web.json_response({"dead_letters": found})


def v1_app(engine: sa.Engine, auth: ApiAuth) -> web.Application:
    """The version-1 routes as a sub-application (mount it at ``/api/v1``)."""
    app = web.Application(middlewares=[guard])
    app[ENGINE] = engine
    app[AUTH] = auth
    app.router.add_get("/incidents", list_incidents, name="incidents")
    app.router.add_get("/incidents/{session_key:.+}", get_incident, name="incident")
    app.router.add_get("/silences", list_silences, name="silences")
    app.router.add_get("/deadletters", list_dead_letters, name="deadletters")
    return app


async def healthz(request: web.Request) -> web.Response:
    """For a load balancer or compose's healthcheck: no token, nothing read but ``SELECT 1``."""
    try:
        await asyncio.to_thread(_ping, request.app[ENGINE])
    except sa.exc.SQLAlchemyError:
        return web.json_response({"status": "database unreachable"}, status=503)
    return web.json_response({"status": "ok"})


def _ping(engine: sa.Engine) -> None:
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))


def create_app(engine: sa.Engine, auth: ApiAuth) -> web.Application:
    """The API: ``/api/v1`` (whose every route, unknown ones too, needs a token) and an open ``/healthz``."""
    app = web.Application()
    app[ENGINE] = engine
    app.router.add_get("/healthz", healthz)
    app.add_subapp(PREFIX, v1_app(engine, auth))
    return app


def serve(host: str, port: int) -> int:
    """``opsloop api``: tokens and the database from the environment, read once; serve until stopped."""
    import os

    from streams.audit.store import migrate
    from streams.db import make_engine
    from streams.httpserve import serve as http_serve
    from streams.logs import configure, register_secrets
    from streams.settings import Settings

    settings = Settings.from_env()
    configure(settings.log_level, settings.log_format)
    auth = ApiAuth.from_environ(os.environ)
    register_secrets(*settings.secret_values(), *auth.secrets())
    engine = make_engine(settings.database_url.get_secret_value())
    migrate(engine)
    http_serve(  # the port in use, a host not on this machine: one line, exit code 4
        create_app(engine, auth),
        host,
        port,
        serving=lambda: log.info("read API on %s:%d for %s", host, port, ", ".join(auth.names)),
    )
    return 0
