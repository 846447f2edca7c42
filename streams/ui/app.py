"""The web console (aiohttp, server-rendered HTML, no script): ``opsloop ui``.

Pages (one module each under ``streams/ui/``)::

    GET  /login, POST /login, POST /logout
    GET  /                          incidents (default: firing), Alertmanager matcher filter, sort, pages
    GET  /incident/{session}        the incident and its audit timeline
    POST /incident/{session}/{action}  ack, approve, reject, silence-1h, silence-4h: the event the
                                    message's signed link produces, actor = the user
    POST /silences/{id}/expire      produce ``silence.expired`` (as ``opsloop silence expire`` does)
    GET  /silences                  silences (active, pending, expired)
    POST /silences                  preview what a new silence mutes (action=preview), or produce
                                    ``silence.created`` (as ``opsloop silence add`` does)
    GET  /deadletters               events.dlq and outbox.dlq (as ``opsloop dlq list``), the projector's too
    POST /deadletters/redrive       redrive one dead letter, or all of one reason (as ``opsloop dlq redrive``)
    GET  /route                     ``opsloop route test`` for labels typed in

Reads call :mod:`streams.audit.queries` in-process (what the read API answers). Writes are
events produced to Kafka (``events.webhook``) or dead letters redriven to their source
topic: decide and the sinks do the rest, the projector folds it back into what these
pages show. Every page needs a session (``/login``); every POST needs the session's CSRF
token in the form (checked in constant time, 403 otherwise); a login limited to some
orgs acts only on those (403 otherwise; dead letters, which hold any org's records, not
at all), as the read API's tokens; every request is logged with who made it; no token
or secret is ever rendered.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any
from urllib.parse import urlencode

import sqlalchemy as sa
from aiohttp import web

from streams.api.auth import ApiAuth, AuthError, Reader
from streams.audit import store
from streams.audit.queries import QueryError, check_printable
from streams.settings import Settings
from streams.ui import deadletters, incidents, routetest, silences
from streams.ui.auth import COOKIE, LOGIN_COOKIE, SESSION_S, ProxyAuth, SessionSigner, same_token
from streams.ui.base import (
    AUTH,
    ENGINE,
    FRESH_COOKIE,
    KAFKA,
    OPTIONS,
    PROXY,
    READER,
    ROUTE_TEST,
    SECURITY_HEADERS,
    SEND,
    SESSION,
    SIGNER,
    RouteTest,
    Send,
    esc,
    page,
    refuse,
    see_other,
)

log = logging.getLogger("streams.ui")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
OPEN = {("GET", "/login"), ("POST", "/login"), ("GET", "/healthz"), ("GET", "/favicon.ico")}


def _set_fresh_cookie(request: web.Request, response: web.StreamResponse) -> None:
    """The session cookie a proxy-vouched request was given (its CSRF token must reach the browser)."""
    fresh = request.get(FRESH_COOKIE)
    if fresh:
        response.set_cookie(COOKIE, fresh, httponly=True, samesite="Strict", max_age=SESSION_S,
                            secure=request.app[OPTIONS]["secure_cookie"], path="/")  # fmt: skip


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Session on every page, CSRF on every POST, one log line per request naming who made it."""
    who = "-"
    try:
        check_printable(request.path, request.query)
        if (request.method, request.path) not in OPEN:
            session = request.app[SIGNER].read(request.cookies.get(COOKIE))
            proxy = request.app[PROXY]
            proxied = proxy.reader(request.remote, request.headers) if proxy else None
            if proxied is not None:  # a trusted proxy vouches for this request's user
                reader: Reader | None = proxied
                if session is None or session.user != proxied.name:
                    fresh, session = request.app[SIGNER].issue(proxied.name)
                    request[FRESH_COOKIE] = fresh
            else:
                reader = request.app[AUTH].reader(session.user) if session else None
            if session is None or reader is None:
                if request.method == "GET":
                    response: web.StreamResponse = see_other("/login?" + urlencode({"next": request.path_qs}))
                else:
                    response = web.Response(status=401, text="log in first", headers=SECURITY_HEADERS)
                log.info("%s %s by %s -> %d", request.method, request.path, who, response.status)
                return response
            who = session.user
            request[SESSION] = session
            request[READER] = reader
            if request.method == "POST":
                form = await request.post()
                offered = form.get("csrf")
                if not same_token(offered if isinstance(offered, str) else None, session.csrf):
                    log.warning("%s %s by %s refused: CSRF token missing or wrong", request.method, request.path, who)
                    response = refuse(request, 403, "The form's CSRF token is missing or wrong; reload the page.")
                    log.info("%s %s by %s -> %d", request.method, request.path, who, response.status)
                    return response
        response = await handler(request)
        _set_fresh_cookie(request, response)
    except web.HTTPException as exc:
        if exc.status < 400:
            log.info("%s %s by %s -> %d", request.method, request.path, who, exc.status)
            _set_fresh_cookie(request, exc)
            raise
        response = refuse(request, exc.status, exc.reason)
    except AuthError as exc:
        response = refuse(request, exc.status, exc.reason)
    except QueryError as exc:
        response = refuse(request, 400, str(exc))
    except Exception:
        log.exception("%s %s by %s failed", request.method, request.path, who)
        response = page(request, "Error", '<p class="error">Internal error (see the log).</p>', status=500)
    log.info("%s %s by %s -> %d", request.method, request.path, who, response.status)
    return response


# -- login ---------------------------------------------------------------------------


def _next(value: Any) -> str:
    """Only a local path (no scheme, no host): an open redirect otherwise; and printable, because a CR or LF
    in the Location header made aiohttp drop the connection without an answer."""
    text = value if isinstance(value, str) else "/"
    local = text.startswith("/") and not text.startswith("//") and "\\" not in text
    return text if local and text.isprintable() else "/"


def _login_form(request: web.Request, nxt: str, error: str = "", status: int = 200) -> web.Response:
    # One token per browser until it logs in: a second tab (or the favicon) must not void the first form's.
    token = request.cookies.get(LOGIN_COOKIE, "")
    if not (43 <= len(token) <= 64 and token.replace("-", "").replace("_", "").isalnum()):
        token = secrets.token_urlsafe(32)
    message = f'<p class="error">{esc(error)}</p>' if error else ""
    body = (
        f'{message}<form method="post" action="/login">'
        f'<input type="hidden" name="csrf" value="{esc(token)}">'
        f'<input type="hidden" name="next" value="{esc(nxt)}">'
        '<label>Token <input type="password" name="token" autocomplete="current-password" autofocus></label>'
        '<button type="submit">Log in</button></form>'
    )
    response = page(request, "Log in", body, status=status)
    response.set_cookie(LOGIN_COOKIE, token, httponly=True, samesite="Strict", max_age=3600,
                        secure=request.app[OPTIONS]["secure_cookie"], path="/login")  # fmt: skip
    return response


async def login_page(request: web.Request) -> web.Response:
    return _login_form(request, _next(request.query.get("next")))


async def login(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    nxt = _next(form.get("next"))
    offered = form.get("csrf")
    if not same_token(offered if isinstance(offered, str) else None, request.cookies.get(LOGIN_COOKIE, "")):
        log.warning("POST /login refused: CSRF token missing or wrong")
        return _login_form(request, nxt, "The form expired; try again.", status=403)
    token = form.get("token")
    try:
        reader = request.app[AUTH].check(f"Bearer {token}" if isinstance(token, str) else None)
    except AuthError:
        log.warning("POST /login refused: unknown token")
        return _login_form(request, nxt, "Unknown token.", status=401)
    cookie, _ = request.app[SIGNER].issue(reader.name)
    response = see_other(nxt)
    response.set_cookie(COOKIE, cookie, httponly=True, samesite="Strict", max_age=SESSION_S,
                        secure=request.app[OPTIONS]["secure_cookie"], path="/")  # fmt: skip
    response.del_cookie(LOGIN_COOKIE, path="/login")
    log.info("login by %s", reader.name)
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    log.info("logout by %s", request[SESSION].user)
    response = see_other("/login")
    response.del_cookie(COOKIE, path="/")
    return response


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def favicon(request: web.Request) -> web.Response:
    return web.Response(status=204)


def create_app(
    engine: sa.Engine,
    auth: ApiAuth,
    send: Send,
    *,
    signer: SessionSigner | None = None,
    refresh_s: int = 30,
    default_org: str = "default",
    secure_cookie: bool = False,
    kafka: Settings | None = None,
    route_test: RouteTest | None = None,
    proxy: ProxyAuth | None = None,
) -> web.Application:
    """The console; ``send`` produces one event (an EventProducer's ``send`` in production).

    ``kafka``: where the dead-letters page reads and redrives (without it that page answers 503);
    ``route_test``: the route-test form's answer (handed in by ``opsloop ui``; without it, 503);
    ``proxy``: a trusted reverse proxy's user header, logging in whoever it names (:class:`ProxyAuth`).
    """
    app = web.Application(middlewares=[guard])
    app[ENGINE] = engine
    app[AUTH] = auth
    app[SIGNER] = signer or SessionSigner()
    app[SEND] = send
    app[KAFKA] = kafka
    app[ROUTE_TEST] = route_test
    app[PROXY] = proxy
    app[OPTIONS] = {"refresh_s": refresh_s, "default_org": default_org, "secure_cookie": secure_cookie}
    app.router.add_get("/login", login_page)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/favicon.ico", favicon)
    app.router.add_get("/", incidents.incidents)
    app.router.add_post("/incident/{session_key:.+}/{action:ack|approve|reject|silence-1h|silence-4h}", incidents.act)
    app.router.add_get("/incident/{session_key:.+}", incidents.incident)
    app.router.add_get("/silences", silences.silences_page)
    app.router.add_post("/silences", silences.create_silence)
    app.router.add_post("/silences/{silence_id}/expire", silences.expire_silence)
    app.router.add_get("/deadletters", deadletters.dead_letters)
    app.router.add_post("/deadletters/redrive", deadletters.redrive_letters)
    app.router.add_get("/route", routetest.route_test)
    return app


def serve(
    host: str, port: int, environ: Mapping[str, str] | None = None, *, route_test: RouteTest | None = None
) -> int:
    """``opsloop ui``: tokens, database and Kafka from the environment, read once; serve until stopped.

    ``route_test`` comes from the command line, which loads the runbook set with the channels'
    schemas (streams never imports agents) and owns ``opsloop route test``.
    """
    import os

    from streams.db import make_engine
    from streams.kafka.producer import EventProducer
    from streams.logs import configure, register_secrets
    from streams.settings import Settings
    from streams.ui.auth import SECRET_VARIABLE, UI_TOKENS_VARIABLE, ProxyAuth, console_auth

    env = os.environ if environ is None else environ
    settings = Settings.from_env()  # before anything starts: a bad variable is named at once
    refresh_s = _refresh_s(env.get("OPSLOOP_UI_REFRESH_S", "30"))
    configure(settings.log_level, settings.log_format)
    proxy = ProxyAuth.from_environ(env)
    # Behind a single-sign-on proxy the console may have no tokens of its own.
    auth = ApiAuth({}, {}) if proxy and not env.get(UI_TOKENS_VARIABLE) else console_auth(env)
    signer = SessionSigner.from_environ(env)
    secrets_: Iterable[str] = [*settings.secret_values(), *auth.secrets()]
    if env.get(SECRET_VARIABLE):
        secrets_ = [*secrets_, env[SECRET_VARIABLE]]
    register_secrets(*secrets_)
    engine = make_engine(settings.database_url.get_secret_value())
    store.migrate(engine)
    producers: list[EventProducer] = []  # made in the server's loop (aiokafka needs a running one)

    async def send(event: dict[str, Any]) -> Any:
        return await producers[0].send(event)

    app = create_app(
        engine,
        auth,
        send,
        signer=signer,
        refresh_s=refresh_s,
        default_org=settings.ingest.default_org,
        secure_cookie=env.get("OPSLOOP_UI_SECURE_COOKIE", "false").lower() in ("1", "true", "yes"),
        kafka=settings,
        route_test=route_test,
        proxy=proxy,
    )

    async def start(_: web.Application) -> None:
        producers.append(await EventProducer(settings).start())

    async def stop(_: web.Application) -> None:
        for producer in producers:
            await producer.stop()

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    from streams.httpserve import serve as http_serve

    http_serve(  # the port in use, a host not on this machine: one line, exit code 4
        app,
        host,
        port,
        serving=lambda: log.info("console on http://%s:%d for %s", host, port, ", ".join(auth.names)),
    )
    return 0


def _refresh_s(text: str) -> int:
    """The incidents page's auto-refresh period: a whole number of seconds, at least 1."""
    from streams.settings import SettingsError

    if not text.strip().isdigit() or int(text) < 1:
        raise SettingsError("invalid settings: OPSLOOP_UI_REFRESH_S: should be a whole number of seconds, at least 1")
    return int(text)
