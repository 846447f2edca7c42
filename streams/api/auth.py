"""Who may read: bearer tokens from ``OPSLOOP_API_TOKENS``, optionally limited to some orgs.

``OPSLOOP_API_TOKENS="alice=<token>,console=<token>"`` names each token; the name is
what logs show, never the token. ``OPSLOOP_API_TOKEN_ORGS="console=acme|globex"``
limits a name to those orgs: it sees only their incidents and silences, and not the
dead letters (which may hold any org's records). Both are read once, when the app is
built. Every check compares against every configured token with
``hmac.compare_digest`` (no early exit), so timing tells nothing about any token.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass

from streams.credentials import credential_bytes, too_short
from streams.errors import InvalidInputError, OpsloopError

TOKENS_VARIABLE = "OPSLOOP_API_TOKENS"
ORGS_VARIABLE = "OPSLOOP_API_TOKEN_ORGS"


class ApiTokenConfigError(InvalidInputError, ValueError):
    """OPSLOOP_API_TOKENS / OPSLOOP_API_TOKEN_ORGS is malformed; the message names the entry, never a token."""


class AuthError(OpsloopError):
    """A request is refused: 401 (who are you?) or 403 (not for you); the reason is safe to send."""

    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True)
class Reader:
    name: str
    orgs: frozenset[str] | None  # None: every org

    def may_read_org(self, org: str) -> bool:
        return self.orgs is None or org in self.orgs

    def require_all_orgs(self, what: str) -> None:
        if self.orgs is not None:
            raise AuthError(403, f"token {self.name!r} is limited to some orgs and may not read {what}")

    def require_org(self, org: str) -> None:
        if not self.may_read_org(org):
            raise AuthError(403, f"token {self.name!r} may not read org {org!r}")

    def require_session_org(self, session_key: str) -> None:
        """A session key names its org (``<org>:...``): another org's key is refused before any lookup, so the
        answer does not tell whether that org has such a session (a 404 for a key it lacked, a 403 for one it
        had, did)."""
        head, sep, _ = session_key.partition(":")
        if sep and head:
            self.require_org(head)


def parse_orgs(spec: str, variable: str) -> dict[str, frozenset[str]]:
    """``name=org1|org2,...`` → each name's orgs (ApiTokenConfigError names the bad entry)."""
    return {name: frozenset(o.strip() for o in value.split("|") if o.strip()) for name, value in _pairs(spec, variable)}


def _pairs(spec: str, variable: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for position, entry in enumerate(spec.split(","), 1):
        entry = entry.strip()
        if not entry:
            continue
        name, sep, value = entry.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name or not value:
            raise ApiTokenConfigError(f"{variable} entry {position}: expected name=value")
        if name in dict(out):
            raise ApiTokenConfigError(f"{variable} entry {position}: {name!r} listed twice")
        out.append((name, value))
    return out


class ApiAuth:
    """Checks ``Authorization: Bearer <token>`` and returns who is reading."""

    def __init__(self, tokens: Mapping[str, str], orgs: Mapping[str, frozenset[str]] | None = None) -> None:
        orgs = orgs or {}
        unknown = sorted(set(orgs) - set(tokens))
        if unknown:
            raise ApiTokenConfigError(f"{ORGS_VARIABLE}: {unknown[0]!r} has no token in {TOKENS_VARIABLE}")
        # digests of equal length: compare_digest's time then depends on neither token's length
        self._secrets = list(tokens.values())
        self._tokens = [(hashlib.sha256(t.encode()).digest(), Reader(n, orgs.get(n))) for n, t in tokens.items()]

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> ApiAuth:
        tokens = dict(_pairs(environ.get(TOKENS_VARIABLE, ""), TOKENS_VARIABLE))
        if not tokens:
            raise ApiTokenConfigError(f"{TOKENS_VARIABLE} is empty: the read API needs at least one name=token")
        for name, token in tokens.items():
            if why := too_short(token):
                raise ApiTokenConfigError(f"{TOKENS_VARIABLE}: {name!r}: the token {why}")
        return cls(tokens, parse_orgs(environ.get(ORGS_VARIABLE, ""), ORGS_VARIABLE))

    def secrets(self) -> list[str]:
        """The tokens, for the log filter to mask (streams.logs.register_secrets)."""
        return list(self._secrets)

    @property
    def names(self) -> list[str]:
        return sorted(r.name for _, r in self._tokens)

    def reader(self, name: str) -> Reader | None:
        """The reader configured under ``name`` (a console session keeps the name, not the token)."""
        return next((r for _, r in self._tokens if r.name == name), None)

    def check(self, authorization: str | None) -> Reader:
        if not authorization:
            raise AuthError(401, "missing Authorization: Bearer <token>")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError(401, "Authorization must be 'Bearer <token>'")
        offered = hashlib.sha256(credential_bytes(token.strip())).digest()
        found = None
        for digest, reader in self._tokens:  # every token compared, no early exit
            if hmac.compare_digest(offered, digest):
                found = reader
        if found is None:
            raise AuthError(401, "unknown token")
        return found
