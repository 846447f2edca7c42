"""Generic webhook: the effect as JSON, signed with HMAC-SHA256.

Headers: ``X-Event-Type`` (``opsloop.notify.<action>`` unless the receiver sets
one), ``X-Severity``, ``X-Opsloop-Signature-256: sha256=<hex>`` over the exact body
bytes (GitHub's scheme, so existing verifiers work), ``X-Opsloop-Timestamp``, and an
``Idempotency-Key`` (the effect id) a receiver can deduplicate on; with that key the
sink counts as idempotent and an unknown outcome may be retried.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

from agents.sinks.base import Channel, HttpRequest, check_status, notify_of
from streams.model.receivers import ChannelSpec, Receiver

SIGNATURE_HEADER = "X-Opsloop-Signature-256"


def sign(key: str, body: bytes) -> str:
    return "sha256=" + hmac.new(key.encode(), body, hashlib.sha256).hexdigest()


def verify(key: str, body: bytes, signature: str) -> bool:
    """What a receiver does (and the tests' fake receiver): constant-time compare."""
    return hmac.compare_digest(sign(key, body), signature or "")


def render(effect: Mapping[str, Any], receiver: Receiver, secrets: Mapping[str, str]) -> HttpRequest:
    n = notify_of(effect)
    body = json.dumps(effect, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()
    url = secrets.get("url") or receiver.setting("url")
    headers = {
        "content-type": "application/json",
        "X-Event-Type": receiver.setting("event_type") or f"opsloop.notify.{n.get('action') or 'trigger'}",
        "X-Severity": n["severity"],
        "X-Opsloop-Timestamp": str(effect["created_at"]),
        "Idempotency-Key": effect["effect_id"],
        SIGNATURE_HEADER: sign(secrets["signing_key"], body),
    }
    return HttpRequest(url=url, body=body, headers=headers)


# ``url`` must be http(s): the loader checks that for every channel with a url setting.
SPEC = ChannelSpec(required=("url", "signing_key"), secret_only=("signing_key",), optional=("event_type",))

CHANNEL = Channel(name="webhook", spec=SPEC, render=render, check=check_status, idempotent=True)
