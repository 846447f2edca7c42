"""Signed webhooks in: ``POST /ingest/webhook/{provider}``.

A provider is one entry of :data:`PROVIDERS`: its name, its signature header and
prefix, its parser. Its shared secret comes from the environment variable derived
from the name, ``OPSLOOP_INGEST_WEBHOOK_SECRET_<NAME>`` (``OPSLOOP_INGEST_WEBHOOK_SECRET_GITHUB``
for ``github``), read once when ingest starts (:func:`webhook_secrets`) and kept as a
``SecretStr``, so no repr, log line or error shows it. The provider signs the raw body
with HMAC-SHA256 in a header: GitHub ``X-Hub-Signature-256: sha256=<hex>``, PagerDuty
v3 ``X-PagerDuty-Signature: v1=<hex>[,v1=<hex>]``. The signature is checked over
the bytes as received, before any parsing. A provider not in :data:`PROVIDERS` is
404, as is a known one without a secret configured (it is not enabled).

* GitHub ``pull_request`` opened / synchronize / closed → ``pr.<action>`` in the
  session of the repository and number. Other GitHub events and actions (and the
  ``ping`` GitHub sends when a hook is created) are answered 202 ``ignored``.
* PagerDuty ``incident.acknowledged`` / ``incident.resolved`` → events of the same
  type; the session key is the incident's dedup key (``incident_key``), which
  opsloop's PagerDuty sink set to the session key when it paged, so the ack lands
  in the session that triggered it.

The event id derives from the provider's delivery id (``X-GitHub-Delivery``, the
PagerDuty event id), which a provider's redelivery keeps.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from pydantic import SecretStr

from streams.ingest.auth import verify_signature
from streams.ingest.errors import BadRequest, Conflict, NotFound
from streams.ingest.fields import integer, join, obj, parse_json, string, timestamp_ms
from streams.ingest.pipeline import INGEST, now
from streams.ingest.scopes import webhook_principal
from streams.ingest.sessions import SessionRule, make_facts, session_key
from streams.model.records import derived_id

PR_ACTIONS = ("opened", "synchronize", "closed")
PAGERDUTY_TYPES = ("incident.acknowledged", "incident.resolved")


@dataclass(frozen=True)
class Ignored:
    """A well-formed delivery opsloop does not act on (answered 202, nothing produced)."""

    reason: str


Parse = Callable[..., "dict[str, Any] | Ignored"]


SECRET_VARIABLE_PREFIX = "OPSLOOP_INGEST_WEBHOOK_SECRET_"
_PROVIDER_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class Provider:
    """One signed-webhook provider: all opsloop needs to know of it, secret variable included."""

    name: str  # the URL's {provider}; its secret is OPSLOOP_INGEST_WEBHOOK_SECRET_<NAME upper>
    signature_header: str
    signature_prefix: str
    parse: Parse
    types: tuple[str, ...] = ()  # the event types it produces (its scope)

    def __post_init__(self) -> None:
        if not _PROVIDER_NAME.match(self.name):
            raise ValueError(
                f"webhook provider name {self.name!r}: lower-case letters, digits and _ (it names an env var)"
            )

    @property
    def secret_variable(self) -> str:
        return secret_variable(self.name)


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if not value:
        raise BadRequest(name, "required header")
    return value


def _nested_string(m: Mapping[str, Any], *keys: str) -> str:
    """A string deep inside optional objects (``sender.login``); "" when any step is missing."""
    value: Any = m
    for key in keys:
        if not isinstance(value, Mapping):
            return ""
        value = value.get(key)
    return value if isinstance(value, str) else ""


def github_event(
    headers: Mapping[str, str], raw: bytes, body: Any, *, org: str, received_at: int, rules: Sequence[SessionRule]
) -> dict[str, Any] | Ignored:
    kind = _header(headers, "X-GitHub-Event")
    delivery = _header(headers, "X-GitHub-Delivery")
    body = obj(body, "body")
    if kind == "ping":
        return Ignored("ping: the hook is set up")
    if kind != "pull_request":
        return Ignored(f"github event {kind[:60]!r} is not handled (only pull_request)")
    action = string(body, "action", "")
    if action not in PR_ACTIONS:
        return Ignored(f"pull_request action {action[:60]!r} is not handled (only {', '.join(PR_ACTIONS)})")
    pr = obj(body.get("pull_request"), "pull_request")
    repo = obj(body.get("repository"), "repository")
    repository = string(repo, "full_name", "repository")
    number = integer(body, "number", "") if "number" in body else integer(pr, "number", "pull_request")
    event_type = f"pr.{action}"
    when = pr.get("closed_at") if action == "closed" else pr.get("updated_at")
    occurred_at = (
        timestamp_ms(when, join("pull_request", "closed_at" if action == "closed" else "updated_at")) or received_at
    )
    subject = f"{repository}#{number}"
    labels = {
        "repository": repository,
        "number": str(number),
        "action": action,
        "author": _nested_string(pr, "user", "login"),
        "base": _nested_string(pr, "base", "ref"),
        "head_sha": _nested_string(pr, "head", "sha"),
    }
    if action == "closed":
        labels["merged"] = "true" if pr.get("merged") is True else "false"
    labels = {k: v for k, v in labels.items() if v}
    url = string(pr, "html_url", "pull_request", required=False)
    annotations = {
        k: v for k, v in {"title": string(pr, "title", "pull_request", required=False), "url": url}.items() if v
    }
    facts = make_facts(
        org=org,
        kind="webhook",
        type=event_type,
        source="github",
        labels=labels,
        repository=repository,
        number=number,
        subject=subject,
    )
    return _webhook_event(
        provider="github",
        event_type=event_type,
        action=action,
        delivery_id=delivery,
        subject=subject,
        url=url,
        actor=_nested_string(body, "sender", "login"),
        raw=raw,
        org=org,
        occurred_at=occurred_at,
        received_at=received_at,
        labels=labels,
        annotations=annotations,
        facts=facts,
        rules=rules,
    )


def pagerduty_event(
    headers: Mapping[str, str], raw: bytes, body: Any, *, org: str, received_at: int, rules: Sequence[SessionRule]
) -> dict[str, Any] | Ignored:
    body = obj(body, "body")
    event = obj(body.get("event"), "event")
    event_type = string(event, "event_type", "event")
    delivery = string(event, "id", "event")
    if event_type not in PAGERDUTY_TYPES:
        return Ignored(f"pagerduty event {event_type[:60]!r} is not handled (only {', '.join(PAGERDUTY_TYPES)})")
    data = obj(event.get("data"), "event.data")
    incident_id = string(data, "id", "event.data")
    dedup_key = string(data, "incident_key", "event.data", required=False)
    occurred_at = timestamp_ms(event.get("occurred_at"), "event.occurred_at") or received_at
    action = event_type.split(".", 1)[1]
    subject = dedup_key or incident_id
    labels = {
        "incident_id": incident_id,
        "status": string(data, "status", "event.data", required=False),
        "urgency": string(data, "urgency", "event.data", required=False),
        "service": _nested_string(data, "service", "summary"),
    }
    if isinstance(data.get("number"), int):
        labels["incident_number"] = str(data["number"])
    labels = {k: v for k, v in labels.items() if v}
    url = string(data, "html_url", "event.data", required=False)
    annotations = {
        k: v for k, v in {"title": string(data, "title", "event.data", required=False), "url": url}.items() if v
    }
    facts = make_facts(
        org=org,
        kind="webhook",
        type=event_type,
        source="pagerduty",
        labels=labels,
        dedup_key=dedup_key,
        incident_id=incident_id,
        subject=subject,
    )
    return _webhook_event(
        provider="pagerduty",
        event_type=event_type,
        action=action,
        delivery_id=delivery,
        subject=subject,
        url=url,
        actor=_nested_string(event, "agent", "summary"),
        raw=raw,
        org=org,
        occurred_at=occurred_at,
        received_at=received_at,
        labels=labels,
        annotations=annotations,
        facts=facts,
        rules=rules,
    )


def _webhook_event(
    *,
    provider: str,
    event_type: str,
    action: str,
    delivery_id: str,
    subject: str,
    url: str,
    actor: str,
    raw: bytes,
    org: str,
    occurred_at: int,
    received_at: int,
    labels: dict[str, str],
    annotations: dict[str, str],
    facts: Mapping[str, str],
    rules: Sequence[SessionRule],
) -> dict[str, Any]:
    try:
        key, rule = session_key(rules, facts)
    except LookupError as exc:
        raise BadRequest("body", f"no session rule applies: {exc}") from None
    return {
        "event_id": derived_id("webhook", provider, delivery_id),
        "session_key": key,
        "session_rule": rule,
        "kind": "webhook",
        "type": event_type,
        "source": provider,
        "org": org,
        "occurred_at": occurred_at,
        "received_at": received_at,
        "labels": labels,
        "annotations": annotations,
        "payload": {
            "provider": provider,
            "action": action,
            "delivery_id": delivery_id,
            "subject": subject,
            "url": url,
            "actor": actor,
            "body_json": raw.decode("utf-8"),
        },
    }


# Adding a provider is one entry here (and its parser); its secret variable follows from the name.
PROVIDERS: dict[str, Provider] = {
    p.name: p
    for p in (
        Provider("github", "X-Hub-Signature-256", "sha256=", github_event, tuple(f"pr.{a}" for a in PR_ACTIONS)),
        Provider("pagerduty", "X-PagerDuty-Signature", "v1=", pagerduty_event, PAGERDUTY_TYPES),
    )
}


def secret_variable(provider: str) -> str:
    """The environment variable holding ``provider``'s HMAC secret."""
    return f"{SECRET_VARIABLE_PREFIX}{provider.upper()}"


def webhook_secrets(environ: Mapping[str, str] | None = None) -> dict[str, SecretStr]:
    """The secret of every provider in :data:`PROVIDERS` that has one set (others are off).

    Read from ``environ`` (``os.environ`` by default) when called, which is once, when
    ingest starts; each value is a ``SecretStr`` and nothing here logs.
    """
    environ = os.environ if environ is None else environ
    found = {name: environ.get(provider.secret_variable, "") for name, provider in PROVIDERS.items()}
    return {name: SecretStr(value) for name, value in found.items() if value}


# -- view ------------------------------------------------------------------------------


async def post_webhook(request: web.Request) -> web.Response:
    ingest = request.app[INGEST]
    name = request.match_info["provider"]
    provider = PROVIDERS.get(name)
    if provider is None:
        raise NotFound(f"unknown webhook provider {name[:40]!r}; known: {', '.join(sorted(PROVIDERS))}")
    secret = ingest.webhook_secrets.get(name)
    if not secret:
        raise NotFound(f"webhook provider {name!r} is not enabled (set {provider.secret_variable})")
    raw = await ingest.read_body(request)
    verify_signature(
        secret.get_secret_value().encode(),
        raw,
        request.headers.get(provider.signature_header),
        header_name=provider.signature_header,
        prefix=provider.signature_prefix,
        max_signatures=ingest.config.max_signatures,
    )
    result = provider.parse(
        request.headers, raw, parse_json(raw), org=ingest.org(request), received_at=now(), rules=ingest.rules
    )
    endpoint = f"webhook:{name}"
    if isinstance(result, Ignored):
        ingest.metrics.events.labels(endpoint, "ignored").inc()
        return web.json_response({"status": "ignored", "reason": result.reason}, status=202)
    # Replay window: the signature covers the body, not GitHub's delivery id header, so the same
    # signed body re-posted under a new delivery id is a replay (a real redelivery keeps its id).
    digest = hashlib.sha256(name.encode() + b"\0" + raw).hexdigest()
    delivery = str(result["payload"]["delivery_id"])
    if digest in ingest.webhook_bodies and f"{digest}:{delivery}" not in ingest.webhook_deliveries:
        raise Conflict(f"this signed {name} delivery was already received under another delivery id (replay refused)")
    answer = await ingest.accept([ingest.finish(result, principal=webhook_principal(name, provider.types))], endpoint)
    ingest.webhook_bodies.add(digest)
    ingest.webhook_deliveries.add(f"{digest}:{delivery}")
    return answer
