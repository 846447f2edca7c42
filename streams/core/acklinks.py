"""Signed action links: HMAC-SHA256 over the session, the action, an expiry and a link id.

A notification carries an "Acknowledge" link (and, while a remediation waits for a
human, "Approve" / "Reject"). Following one reaches ingest (``/ingest/ack``, see
:mod:`streams.ingest.acklinks_page`): GET shows what the link will do and changes
nothing (chat clients and mail scanners prefetch links); the page's button POSTs the
signed fields back, and ingest checks them with :func:`verify_action_query` and
produces the event. Signing and checking are pure (the secret and the time are
arguments) so decide can put links into effects and stay replayable. The secret comes
from ``OPSLOOP_ACK_SECRET`` and never appears in a link, a record or a log line; only
the signature does.

Link shape: ``{base_url}?session=<key>&action=<action>&org=<org>&expires=<epoch ms>&jti=<link id>&episode=<n>&sig=<hex>``.
``jti`` makes each link one use: the event a link produces takes its id from it, so a
second POST is a duplicate (ingest answers "already used"; decide skips seen ids).
``episode`` (signed with the rest) names the incident the message told of: a session that
resolved and fired again is a new episode, and a link of the old message acts on nothing
(decide records it ``stale-action``). Without it, an Approve link of yesterday's incident,
still within its TTL, ran the remediation today's incident was waiting to have approved.
Links without an episode (the second version) and of the first version (``session``,
``expires``, ``sig`` only; an ack) still verify, and act on the session's current episode.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlencode

from pydantic import SecretStr

from streams.credentials import same_credential
from streams.errors import InvalidInputError
from streams.model.linkepisode import parse_episode
from streams.model.records import derived_id

ACK_TTL_MS = 24 * 3_600_000
ACTIONS = ("ack", "approve", "reject", "silence-1h", "silence-4h")
# What each action does, in the words a confirmation page and a chat update use.
ACTION_LABELS = {
    "ack": "Acknowledge",
    "approve": "Approve remediation",
    "reject": "Reject remediation",
    "silence-1h": "Silence for 1 hour",
    "silence-4h": "Silence for 4 hours",
}
SILENCE_MS = {"silence-1h": 3_600_000, "silence-4h": 4 * 3_600_000}


class AckLinkError(InvalidInputError, ValueError):
    """An ack link does not verify; ``reason`` is safe to show (it names no secret)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True)
class ActionLink:
    """The verified fields of a link; ``link_id`` is what makes it one use."""

    session: str
    action: str
    expires_at: int
    org: str = ""
    jti: str = ""
    sig: str = ""
    episode: int | None = None  # the incident the message told of (links before it: None)

    @property
    def link_id(self) -> str:
        return self.jti or self.sig[:32]


def _key(secret: str | bytes) -> bytes:
    if isinstance(secret, SecretStr):
        secret = secret.get_secret_value()
    key = secret.encode() if isinstance(secret, str) else bytes(secret)
    if not key:
        raise AckLinkError("no ack secret configured (OPSLOOP_ACK_SECRET)")
    return key


def _message(action: str, session_key: str, expires_at: int, jti: str, org: str, episode: int | None) -> bytes:
    if episode is not None:
        return json.dumps(
            ["v3", action, session_key, int(expires_at), jti, org, episode], separators=(",", ":")
        ).encode()
    if not jti and not org:  # the first link version: ack links without a link id
        return f"{action}\n{session_key}\n{int(expires_at)}".encode()
    return json.dumps(["v2", action, session_key, int(expires_at), jti, org], separators=(",", ":")).encode()


def sign_ack(
    session_key: str,
    expires_at: int,
    secret: str | bytes,
    action: str = "ack",
    jti: str = "",
    org: str = "",
    episode: int | None = None,
) -> str:
    """Hex HMAC-SHA256 of ``action``, ``session_key``, ``expires_at`` (epoch ms), ``jti``, ``org`` and ``episode``."""
    message = _message(action, session_key, expires_at, jti, org, episode)
    return hmac.new(_key(secret), message, hashlib.sha256).hexdigest()


def verify_ack(
    session_key: str,
    expires_at: int,
    signature: str,
    secret: str | bytes,
    now_ms: int,
    action: str = "ack",
    jti: str = "",
    org: str = "",
    episode: int | None = None,
) -> None:
    """Raise AckLinkError unless the signature is right (constant-time) and not expired."""
    expected = sign_ack(session_key, expires_at, secret, action, jti, org, episode)
    if not isinstance(signature, str) or not same_credential(expected, signature.lower()):
        raise AckLinkError("bad signature: the link was altered or is not from this opsloop")
    if now_ms > int(expires_at):
        raise AckLinkError("link expired")


def verify_action_query(params: Mapping[str, str], secret: str | bytes, now_ms: int) -> ActionLink:
    """Check a link's fields (query or form); returns them verified (AckLinkError otherwise)."""
    session, expires, sig = params.get("session"), params.get("expires"), params.get("sig")
    if not session or not expires or not sig:
        raise AckLinkError("missing session, expires or sig")
    action = params.get("action") or "ack"
    if action not in ACTIONS:
        raise AckLinkError(f"unknown action; expected one of {', '.join(ACTIONS)}")
    try:
        expires_at = int(expires)
    except ValueError:
        raise AckLinkError("expires is not epoch milliseconds") from None
    jti, org = params.get("jti") or "", params.get("org") or ""
    try:
        episode = parse_episode(params.get("episode"))
    except ValueError as exc:
        raise AckLinkError(str(exc)) from None
    verify_ack(session, expires_at, sig, secret, now_ms, action, jti, org, episode)
    return ActionLink(
        session=session, action=action, expires_at=expires_at, org=org, jti=jti, sig=sig.lower(), episode=episode
    )


def verify_ack_query(params: Mapping[str, str], secret: str | bytes, now_ms: int) -> str:
    """Check a link's query parameters; returns the session key (AckLinkError otherwise)."""
    return verify_action_query(params, secret, now_ms).session


def link_id(event_id: str, session_key: str, action: str) -> str:
    """A link's id (``jti``), derived from the event whose message carries it, so decide stays pure."""
    return derived_id("link", event_id, session_key, action)[:24]


def action_link(
    base_url: str,
    session_key: str,
    action: str,
    expires_at: int,
    secret: str | bytes,
    *,
    jti: str,
    org: str,
    episode: int | None = None,
) -> str:
    if action not in ACTIONS:
        raise AckLinkError(f"unknown action {action!r}")
    fields: dict[str, str | int] = {
        "session": session_key,
        "action": action,
        "org": org,
        "expires": int(expires_at),
        "jti": jti,
    }
    if episode is not None:
        fields["episode"] = episode
    fields["sig"] = sign_ack(session_key, expires_at, secret, action, jti, org, episode)
    query = urlencode(fields)
    return f"{base_url}{'&' if '?' in base_url else '?'}{query}"


def ack_link(base_url: str, session_key: str, expires_at: int, secret: str | bytes) -> str:
    """A link of the first version (no link id, no org): an ack, usable until it expires."""
    query = urlencode(
        {"session": session_key, "expires": int(expires_at), "sig": sign_ack(session_key, expires_at, secret)}
    )
    return f"{base_url}{'&' if '?' in base_url else '?'}{query}"
