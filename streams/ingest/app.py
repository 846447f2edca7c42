"""The ingest aiohttp application: routes, error answers, health and metrics.

Routes::

    POST /api/v2/alerts              Prometheus's alert push (opsloop as its alertmanager)   bearer token
    GET  /api/v2/alerts              the alerts firing, from the audit store (amtool alert)   bearer token, control
    POST /ingest/alertmanager        Alertmanager webhook, payload version 4                 bearer token
    POST /ingest/webhook/{provider}  signed webhooks: github, pagerduty                      HMAC-SHA256
    POST /ingest/scan                drift / compliance / cost scan results                  bearer token
    POST /ingest/events              the generic event envelope (one or an array)            bearer token
    GET  /ingest/ack                 a signed action link: a page saying what it will do      the link's HMAC
    POST /ingest/ack                 the page's button: produce the ack / approval / silence  the link's HMAC
    POST /ingest/slack/interactivity Slack buttons (ack, silence, approve, reject)            Slack request signing
    POST /api/v2/silences            Alertmanager's silence API (amtool silence add)         bearer token, control
    GET  /api/v2/silences            ... listed from the audit store (amtool silence query)  bearer token, control
    GET  /api/v2/silence/{id}        ... one of them (amtool silence update reads it first)   bearer token, control
    DELETE /api/v2/silence/{id}      ... and its expiry (amtool silence expire)              bearer token, control
    GET  /healthz                    the process answers
    GET  /readyz                     Kafka reachable and the events.* topics present (else 503)
    GET  /metrics                    Prometheus metrics of this ingest

Every refusal is JSON ``{"error": "<reason>"}`` with its status (400 naming the
field, 401/403, 404, 413, 429 and 503 with Retry-After); see
:mod:`streams.ingest.errors`. A success is ``{"status": "accepted" | "duplicate",
...}`` sent only after Kafka acknowledged.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

from aiohttp import ClientPayloadError, web
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client import generate_latest

from streams.ingest import alerts_api, silences_api
from streams.ingest import slack as slack_interactivity
from streams.ingest.acklinks_page import get_ack, post_ack
from streams.ingest.alerts import post_alertmanager_webhook, post_prometheus_alerts
from streams.ingest.audit_reads import AUDIT_READS, AuditReads
from streams.ingest.auth import TokenAuth, producer_tokens
from streams.ingest.errors import IngestError
from streams.ingest.events import post_events
from streams.ingest.pipeline import INGEST, Ingest
from streams.ingest.publisher import Publisher
from streams.ingest.scans import post_scan
from streams.ingest.scopes import load_scopes
from streams.ingest.sessions import load_session_rules
from streams.ingest.webhooks import post_webhook, webhook_secrets
from streams.metrics import EVENTS_REJECTED
from streams.metrics import render as render_shared_metrics
from streams.settings import IngestSettings, Settings

log = logging.getLogger("streams.ingest")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def build_ingest(settings: Settings, environ: Mapping[str, str] | None = None) -> Ingest:
    """Read tokens, secrets and session rules now; a bad value fails here, at start-up.

    ``environ`` (``os.environ`` by default) holds the per-producer token variables and
    each webhook provider's secret variable (``OPSLOOP_INGEST_WEBHOOK_SECRET_<NAME>``).
    """
    config = settings.ingest
    environ = os.environ if environ is None else environ
    tokens = producer_tokens(config.tokens.get_secret_value(), environ)
    rules = load_session_rules(settings.sessions_path())
    scopes = load_scopes(config.scopes_file or Path(settings.runbooks_dir) / "ingest-scopes.yaml", config.scopes)
    unknown = sorted(set(scopes) - set(tokens))
    if unknown:
        log.info("ingest scopes for producers without a token (ignored): %s", ", ".join(unknown))
    return Ingest(
        settings, config, TokenAuth(tokens), webhook_secrets(environ), rules, Publisher(settings, config), scopes
    )


# For opsloop_events_rejected_total{kind, reason} (streams.metrics, shared with the dashboard).
KIND_OF_ROUTE = {
    "prometheus": "telemetry",
    "alertmanager": "telemetry",
    "webhook": "webhook",
    "scan": "scan",
    "events": "any",
    "ack": "webhook",
    "slack": "webhook",
    **dict.fromkeys(silences_api.WRITE_ROUTES, "webhook"),
}
# Alertmanager's API (amtool's): a refusal's body is the reason as a JSON string, which amtool prints.
ALERTMANAGER_ROUTES = frozenset((*silences_api.ROUTES, *alerts_api.ROUTES))
REJECTION_REASONS = {
    400: "invalid",
    401: "auth",
    403: "auth",
    404: "not_found",
    408: "timeout",
    409: "replay",
    413: "too_large",
    415: "invalid",
    429: "backpressure",
    500: "error",
    503: "unavailable",
}


@web.middleware
async def answer_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    ingest = request.app[INGEST]
    route = request.match_info.route.name or "other"
    try:
        response = await handler(request)
    except IngestError as exc:
        body = exc.reason if route in ALERTMANAGER_ROUTES else exc.body()  # Alertmanager's API: a JSON string
        response = web.json_response(body, status=exc.status, headers=exc.headers)
        if exc.status in (408, 413, 415):  # the rest of the body is not read: close rather than drain it
            response.force_close()
        level = logging.WARNING if exc.status >= 500 else logging.INFO
        log.log(level, "%s %s -> %d %s", request.method, request.path, exc.status, exc.reason)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k in ("Allow",)}
        response = web.json_response({"error": exc.reason}, status=exc.status, headers=headers)
    except (
        ClientPayloadError,
        HttpProcessingError,
        ConnectionResetError,
    ) as exc:  # the body broke off: nothing of it echoed
        log.info("%s %s -> 400 body could not be read (%s)", request.method, request.path, type(exc).__name__)
        response = web.json_response({"error": "body: could not be read (broken or incomplete transfer)"}, status=400)
    except Exception:  # a bug: answer 500, keep serving, keep the traceback in the log
        log.exception("%s %s failed", request.method, request.path)
        response = web.json_response({"error": "internal error"}, status=500)
    ingest.metrics.requests.labels(route, str(response.status)).inc()
    if response.status in REJECTION_REASONS and route in KIND_OF_ROUTE:
        EVENTS_REJECTED.labels(KIND_OF_ROUTE[route], REJECTION_REASONS[response.status]).inc()
    return response


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "alive"})


async def readyz(request: web.Request) -> web.Response:
    ingest = request.app[INGEST]
    ready, detail = await ingest.publisher.readiness()
    return web.json_response({"status": "ready" if ready else "not ready", **detail}, status=200 if ready else 503)


async def metrics(request: web.Request) -> web.Response:
    ingest = request.app[INGEST]
    shared, content_type = render_shared_metrics()
    return web.Response(body=shared + generate_latest(ingest.metrics.registry), headers={"Content-Type": content_type})


def create_app(
    settings: Settings, config: IngestSettings | None = None, environ: Mapping[str, str] | None = None
) -> web.Application:
    """The ingest app of ``settings`` (``config``, when given, replaces its ``ingest`` section)."""
    if config is not None:
        settings = settings.model_copy(update={"ingest": config})
    ingest = build_ingest(settings, environ)
    app = web.Application(middlewares=[answer_errors])
    app[INGEST] = ingest
    app.router.add_post("/api/v2/alerts", post_prometheus_alerts, name="prometheus")
    app.router.add_post("/ingest/alertmanager", post_alertmanager_webhook, name="alertmanager")
    app.router.add_post("/ingest/webhook/{provider}", post_webhook, name="webhook")
    app.router.add_post("/ingest/scan", post_scan, name="scan")
    app.router.add_post("/ingest/events", post_events, name="events")
    app.router.add_get("/ingest/ack", get_ack, name="ack-page")
    app.router.add_post("/ingest/ack", post_ack, name="ack")
    slack_interactivity.register(app)
    app[AUDIT_READS] = AuditReads(settings.database_url.get_secret_value())  # opened on the first read
    silences_api.register(app)
    alerts_api.register(app)
    app.router.add_get("/healthz", healthz, name="healthz")
    app.router.add_get("/readyz", readyz, name="readyz")
    app.router.add_get("/metrics", metrics, name="metrics")

    async def start_publisher(app: web.Application) -> None:
        await app[INGEST].publisher.start()

    async def stop_publisher(app: web.Application) -> None:
        await app[INGEST].publisher.close()

    app.on_startup.append(start_publisher)
    app.on_cleanup.append(stop_publisher)
    return app
