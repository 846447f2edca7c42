"""Signed acknowledge links: HMAC-SHA256 over the session and an expiry.

A notification carries an "Acknowledge" link; clicking it reaches the ingest
endpoint, which checks the signature and the expiry with :func:`verify_ack` and
emits an ``ack`` event for the session. Signing and checking are pure (the secret and
the time are arguments) so decide can put links into effects and stay replayable.
The secret comes from ``OPSLOOP_ACK_SECRET`` and never appears in a link, a record or
a log line; only the signature does.

Link shape: ``{base_url}?session=<session key>&expires=<epoch ms>&sig=<hex>``.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Mapping
from urllib.parse import urlencode

from pydantic import SecretStr

from streams.errors import InvalidInputError

ACK_TTL_MS = 24 * 3_600_000


class AckLinkError(InvalidInputError, ValueError):
    """An ack link does not verify; ``reason`` is safe to show (it names no secret)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def _key(secret: str | bytes) -> bytes:
    if isinstance(secret, SecretStr):
        secret = secret.get_secret_value()
    key = secret.encode() if isinstance(secret, str) else bytes(secret)
    if not key:
        raise AckLinkError("no ack secret configured (OPSLOOP_ACK_SECRET)")
    return key


def sign_ack(session_key: str, expires_at: int, secret: str | bytes, action: str = "ack") -> str:
    """Hex HMAC-SHA256 of ``action``, ``session_key`` and ``expires_at`` (epoch ms)."""
    message = f"{action}\n{session_key}\n{int(expires_at)}".encode()
    return hmac.new(_key(secret), message, hashlib.sha256).hexdigest()


def verify_ack(session_key: str, expires_at: int, signature: str, secret: str | bytes, now_ms: int,
               action: str = "ack") -> None:
    """Raise AckLinkError unless the signature is right (constant-time) and not expired."""
    expected = sign_ack(session_key, expires_at, secret, action)
    if not isinstance(signature, str) or not hmac.compare_digest(expected, signature.lower()):
        raise AckLinkError("bad signature")
    if now_ms > int(expires_at):
        raise AckLinkError("link expired")


def verify_ack_query(params: Mapping[str, str], secret: str | bytes, now_ms: int) -> str:
    """Check a link's query parameters; returns the session key (AckLinkError otherwise)."""
    session, expires, sig = params.get("session"), params.get("expires"), params.get("sig")
    if not session or not expires or not sig:
        raise AckLinkError("missing session, expires or sig")
    try:
        expires_at = int(expires)
    except ValueError:
        raise AckLinkError("expires is not epoch milliseconds") from None
    verify_ack(session, expires_at, sig, secret, now_ms)
    return session


def ack_link(base_url: str, session_key: str, expires_at: int, secret: str | bytes) -> str:
    query = urlencode({"session": session_key, "expires": int(expires_at), "sig": sign_ack(session_key, expires_at, secret)})
    return f"{base_url}{'&' if '?' in base_url else '?'}{query}"
