"""Remediation: a runbook's HTTP action, called once, only when it is allowed.

A ``remediate`` effect names an action, its endpoint, method and parameters.
Two switches must both be on before anything is called. The runbook step says
``dry_run: false``, and the worker runs with ``OPSLOOP_SINK_REMEDIATION_ENABLED=true``.
Otherwise the dispatcher logs what it would have called and records a ``dry_run``
receipt. So a runbook set can ship with live steps and be tried on a worker that
cannot touch anything (the demo, a staging replica, a replay).

The request goes through the same delivery client as every notification. That
gives it the ledger (a restart or a redelivery does not call the action again),
retries with backoff, the circuit breaker and the dead letter with its reason. It
carries an ``Idempotency-Key`` (the effect id), so an endpoint can recognise the one
repeat the ledger cannot rule out: a timeout with an unknown outcome. The endpoint
is expected to deduplicate on that key, which is why the sink counts as idempotent.

Credentials come from the receiver named ``remediate`` in the routing file:
``secrets: {token: ENV_VAR}`` is sent as a bearer token, and
``secrets: {signing_key: ENV_VAR}`` signs the body as the webhook sink does. With
no such receiver, a built-in one sends neither. Each action gets its own
destination (``remediate:<action>``), so a hung endpoint holds back only its own
calls.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from agents.sinks.base import Channel, HttpRequest, PermanentError, check_status
from agents.sinks.channels.webhook import SIGNATURE_HEADER, sign
from streams.model.receivers import REMEDIATE_CHANNEL, ChannelSpec, Receiver

BODYLESS = ("GET", "DELETE")


def remediate_of(effect: Mapping[str, Any]) -> Mapping[str, Any]:
    r: Mapping[str, Any] | None = effect.get("remediate")
    if not r:
        raise PermanentError(f"effect {effect.get('effect_id')} of type remediate has no remediate part")
    return r


def held(action: Mapping[str, Any], enabled: bool) -> str | None:
    """Why this action must not be called (a dry run), or None when both switches allow it."""
    if action["dry_run"]:
        return "the runbook step is dry_run"
    if not enabled:
        return "remediation is disabled on this worker (OPSLOOP_SINK_REMEDIATION_ENABLED)"
    return None


def call_payload(effect: Mapping[str, Any]) -> dict[str, Any]:
    """What the action endpoint receives: the action, its parameters and where they came from."""
    r = remediate_of(effect)
    return {
        "action": r["action"],
        "params": dict(sorted(r["params"].items())),
        "effect_id": effect["effect_id"],
        "event_id": effect["event_id"],
        "session_key": effect["session_key"],
        "org": effect.get("org", "default"),
        "runbook": effect.get("runbook", ""),
        "approved": bool(r.get("requires_approval")),
        "requested_at": effect["created_at"],
    }


def render(effect: Mapping[str, Any], receiver: Receiver, secrets: Mapping[str, str]) -> HttpRequest:
    r = remediate_of(effect)
    if not r["endpoint"]:
        raise PermanentError(f"remediate {r['action']!r}: the runbook step has no endpoint")
    method = r["method"]  # upper case: the runbook loader checks it against HTTP_METHODS
    headers = {
        "Idempotency-Key": effect["effect_id"],
        "X-Opsloop-Action": r["action"],
        "X-Opsloop-Timestamp": str(effect["created_at"]),
    }
    url = r["endpoint"]
    if method in BODYLESS:  # parameters in the query string; the action's context in headers
        query = urlencode(sorted({**r["params"], "action": r["action"]}.items()))
        url = f"{url}{'&' if '?' in url else '?'}{query}"
        body = b""
    else:
        body = json.dumps(call_payload(effect), ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()
        headers["content-type"] = "application/json"
    if secrets.get("token"):
        headers["Authorization"] = f"Bearer {secrets['token']}"
    if secrets.get("signing_key"):
        headers[SIGNATURE_HEADER] = sign(secrets["signing_key"], body)
    retries, timeout_ms = int(r.get("retries", -1)), int(r.get("timeout_ms", 0))
    return HttpRequest(
        url=url,
        body=body,
        headers=headers,
        method=method,
        timeout_s=timeout_ms / 1000 if timeout_ms > 0 else None,
        max_attempts=retries + 1 if retries >= 0 else None,
    )


def describe(effect: Mapping[str, Any]) -> str:
    """One line for the log of a dry run: what would have been called."""
    r = remediate_of(effect)
    words = [
        r["method"],
        r["endpoint"] or "(no endpoint)",
        f"action={r['action']}",
        *(f"{k}={v}" for k, v in sorted(r["params"].items())),
        f"session={effect['session_key']}",
        f"effect={effect['effect_id']}",
    ]
    return " ".join(words)


# Credentials only; the endpoint comes from the runbook step.
SPEC = ChannelSpec(secret_only=("token", "signing_key"), optional=("token", "signing_key"))

CHANNEL = Channel(
    name=REMEDIATE_CHANNEL, spec=SPEC, render=render, check=check_status, idempotent=True, held=held, describe=describe
)
