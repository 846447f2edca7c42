"""Who is using the console: a login token, then a signed session cookie holding a CSRF token.

``OPSLOOP_UI_TOKENS="alice=<token>,bob=<token>"`` names each token (the name is who the
audit shows as the actor; the token is never rendered or logged);
``OPSLOOP_UI_TOKEN_ORGS="bob=acme|globex"`` limits a name to those orgs, as for the read
API (the same :class:`streams.api.auth.ApiAuth`, which compares in constant time).

The session cookie is ``<payload>.<hmac>``: base64 JSON of the name, a random CSRF token
and the expiry, signed with HMAC-SHA256 under ``OPSLOOP_UI_SECRET`` (or a random key per
process: a restart then logs everyone out). It is HttpOnly and SameSite=Strict.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass

from streams.api.auth import ORGS_VARIABLE, TOKENS_VARIABLE, ApiAuth, ApiTokenConfigError

UI_TOKENS_VARIABLE = "OPSLOOP_UI_TOKENS"
UI_ORGS_VARIABLE = "OPSLOOP_UI_TOKEN_ORGS"
SECRET_VARIABLE = "OPSLOOP_UI_SECRET"
COOKIE = "opsloop_session"
LOGIN_COOKIE = "opsloop_login"  # the login form's CSRF token (double submit: there is no session yet)
SESSION_S = 12 * 3600


@dataclass(frozen=True)
class Session:
    user: str
    csrf: str
    expires: int


def console_auth(environ: Mapping[str, str]) -> ApiAuth:
    """The console's tokens (``OPSLOOP_UI_TOKENS``), parsed and checked as the read API's are."""
    try:
        return ApiAuth.from_environ(
            {
                TOKENS_VARIABLE: environ.get(UI_TOKENS_VARIABLE, ""),
                ORGS_VARIABLE: environ.get(UI_ORGS_VARIABLE, ""),
            }
        )
    except ApiTokenConfigError as exc:
        message = str(exc).replace(TOKENS_VARIABLE, UI_TOKENS_VARIABLE).replace(ORGS_VARIABLE, UI_ORGS_VARIABLE)
        raise ApiTokenConfigError(message) from None


class SessionSigner:
    def __init__(self, key: bytes | None = None) -> None:
        self._key = key or secrets.token_bytes(32)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> SessionSigner:
        secret = environ.get(SECRET_VARIABLE, "")
        return cls(hashlib.sha256(secret.encode()).digest() if secret else None)

    def _mac(self, payload: str) -> str:
        return hmac.new(self._key, payload.encode(), hashlib.sha256).hexdigest()

    def issue(self, user: str, now: float | None = None) -> tuple[str, Session]:
        session = Session(user, secrets.token_urlsafe(32), int((now or time.time()) + SESSION_S))
        raw = json.dumps({"u": session.user, "c": session.csrf, "e": session.expires}, separators=(",", ":"))
        payload = base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")
        return f"{payload}.{self._mac(payload)}", session

    def read(self, cookie: str | None, now: float | None = None) -> Session | None:
        """The session a cookie carries, or None (absent, forged, malformed or expired)."""
        if not cookie or "." not in cookie:
            return None
        payload, _, mac = cookie.rpartition(".")
        if not hmac.compare_digest(mac.encode(), self._mac(payload).encode()):
            return None
        try:
            data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            session = Session(str(data["u"]), str(data["c"]), int(data["e"]))
        except (ValueError, KeyError, TypeError):
            return None
        return session if session.expires > (now or time.time()) else None


def same_token(offered: str | None, expected: str) -> bool:
    """CSRF check in constant time (digests of equal length)."""
    if not offered or not expected:
        return False
    return hmac.compare_digest(hashlib.sha256(offered.encode()).digest(), hashlib.sha256(expected.encode()).digest())
