"""Who is using the console: a login token, then a signed session cookie holding a CSRF token.

``OPSLOOP_UI_TOKENS="alice=<token>,bob=<token>"`` names each token (the name is who the
audit shows as the actor; the token is never rendered or logged);
``OPSLOOP_UI_TOKEN_ORGS="bob=acme|globex"`` limits a name to those orgs, as for the read
API (the same :class:`streams.api.auth.ApiAuth`, which compares in constant time).

The session cookie is ``<payload>.<hmac>``: base64 JSON of the name, a random CSRF token
and the expiry, signed with HMAC-SHA256 under ``OPSLOOP_UI_SECRET`` (or a random key per
process: a restart then logs everyone out). It is HttpOnly and SameSite=Strict.

Behind a single-sign-on proxy, :class:`ProxyAuth` logs in the user the proxy names in a
header, on connections from the configured proxy addresses only.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network

from streams.api.auth import (
    ORGS_VARIABLE,
    TOKENS_VARIABLE,
    ApiAuth,
    ApiTokenConfigError,
    AuthError,
    Reader,
    parse_orgs,
)
from streams.credentials import credential_bytes, same_credential, too_short

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


PROXY_HEADER_VARIABLE = "OPSLOOP_UI_PROXY_USER_HEADER"
PROXY_ADDRESSES_VARIABLE = "OPSLOOP_UI_TRUSTED_PROXIES"
PROXY_ORGS_VARIABLE = "OPSLOOP_UI_PROXY_ORGS"
_PROXY_USER = re.compile(r"[A-Za-z0-9._@+-]{1,128}")


@dataclass(frozen=True)
class ProxyAuth:
    """Log in whoever a trusted reverse proxy names in a header (SSO in front of the console).

    The header counts only on a connection *from* one of the configured proxy addresses
    (the TCP peer, never a forwarded-for header); from anywhere else it is ignored. A proxy
    user acts on ``OPSLOOP_UI_TOKEN_ORGS``'s orgs for that name if listed, else on
    ``OPSLOOP_UI_PROXY_ORGS`` (``*``: every org), which must be set, so no proxy user is
    unlimited by omission.
    """

    header: str
    networks: tuple[IPv4Network | IPv6Network, ...]
    default_orgs: frozenset[str] | None
    orgs: Mapping[str, frozenset[str]] = field(default_factory=dict)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> ProxyAuth | None:
        header = environ.get(PROXY_HEADER_VARIABLE, "").strip()
        addresses = environ.get(PROXY_ADDRESSES_VARIABLE, "").strip()
        if not header and not addresses:
            return None
        if not header or not addresses:
            raise ApiTokenConfigError(f"{PROXY_HEADER_VARIABLE} and {PROXY_ADDRESSES_VARIABLE} go together; set both")
        networks = []
        for entry in addresses.split(","):
            try:
                networks.append(ip_network(entry.strip(), strict=False))
            except ValueError:
                raise ApiTokenConfigError(
                    f"{PROXY_ADDRESSES_VARIABLE}: {entry.strip()!r} is not an address or network"
                ) from None
        orgs_spec = environ.get(PROXY_ORGS_VARIABLE, "").strip()
        if not orgs_spec:
            raise ApiTokenConfigError(f"{PROXY_ORGS_VARIABLE} must say which orgs a proxy user may act on (* for all)")
        default = None if orgs_spec == "*" else frozenset(o.strip() for o in orgs_spec.split("|") if o.strip())
        return cls(header, tuple(networks), default, parse_orgs(environ.get(UI_ORGS_VARIABLE, ""), UI_ORGS_VARIABLE))

    def reader(self, remote: str | None, headers: Mapping[str, str]) -> Reader | None:
        """The proxy's user for this request, or None (no header, or not from a proxy address)."""
        name = headers.get(self.header, "").strip()
        if not name or remote is None:
            return None
        try:
            peer = ip_address(remote)
        except ValueError:
            return None
        if not any(peer in network for network in self.networks):
            return None
        if not _PROXY_USER.fullmatch(name):
            raise AuthError(400, f"{self.header}: not a user name (letters, digits, . _ @ + -, at most 128)")
        return Reader(name, self.orgs.get(name, self.default_orgs))


class SessionSigner:
    def __init__(self, key: bytes | None = None) -> None:
        self._key = key or secrets.token_bytes(32)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> SessionSigner:
        secret = environ.get(SECRET_VARIABLE, "")
        if why := too_short(secret):
            raise ApiTokenConfigError(f"{SECRET_VARIABLE} {why}")
        return cls(hashlib.sha256(secret.encode()).digest() if secret else None)

    def _mac(self, payload: str) -> str:
        return hmac.new(self._key, credential_bytes(payload), hashlib.sha256).hexdigest()

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
        if not same_credential(mac, self._mac(payload)):
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
    offered_digest = hashlib.sha256(credential_bytes(offered)).digest()
    return same_credential(offered_digest, hashlib.sha256(credential_bytes(expected)).digest())
