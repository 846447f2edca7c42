"""Who may post: bearer tokens per producer, HMAC signatures per webhook provider.

Tokens come from ``OPSLOOP_INGEST_TOKENS`` as ``name=token`` pairs separated by
commas (``prometheus=...,alertmanager=...,scanner=...``), so a deployment can rotate
the set in one place, and from ``OPSLOOP_INGEST_TOKEN_<NAME>=<token>`` variables, one
per producer, which is what an ``.env`` file or a secret store maps most easily
(``OPSLOOP_INGEST_TOKEN_ALERTMANAGER`` → producer ``alertmanager``). The name is what
logs and metrics show instead of the token. Every comparison is ``hmac.compare_digest``
against every configured token (no early exit), so neither the token nor which
producer's token is closest leaks through timing. Nothing here logs, and no error
message repeats what the client sent.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from streams.credentials import credential_bytes, same_credential, too_short
from streams.errors import InvalidInputError
from streams.ingest.errors import Forbidden, Unauthorized


class TokenConfigError(InvalidInputError, ValueError):
    """OPSLOOP_INGEST_TOKENS is malformed; the message names the entry, never its token."""


def parse_tokens(spec: str) -> dict[str, bytes]:
    """``"a=tok1, b=tok2"`` → ``{"a": b"tok1", "b": b"tok2"}``."""
    tokens: dict[str, bytes] = {}
    for position, entry in enumerate(spec.split(","), 1):
        entry = entry.strip()
        if not entry:
            continue
        name, sep, token = entry.partition("=")
        name, token = name.strip(), token.strip()
        if not sep or not name or not token:
            raise TokenConfigError(
                f"OPSLOOP_INGEST_TOKENS entry {position}: expected name=token"
                + (f" (producer {name!r} has an empty token)" if sep and name else "")
            )
        if name in tokens:
            raise TokenConfigError(f"OPSLOOP_INGEST_TOKENS entry {position}: producer {name!r} listed twice")
        if why := too_short(token):
            raise TokenConfigError(f"OPSLOOP_INGEST_TOKENS entry {position}: producer {name!r}: the token {why}")
        tokens[name] = token.encode()
    return tokens


TOKEN_VARIABLE_PREFIX = "OPSLOOP_INGEST_TOKEN_"


def producer_tokens(spec: str, environ: Mapping[str, str]) -> dict[str, bytes]:
    """The list in OPSLOOP_INGEST_TOKENS plus every OPSLOOP_INGEST_TOKEN_<NAME> variable."""
    tokens = parse_tokens(spec)
    for variable, token in sorted(environ.items()):
        if not variable.startswith(TOKEN_VARIABLE_PREFIX) or variable.endswith("_FILE"):
            continue
        name = variable[len(TOKEN_VARIABLE_PREFIX) :].lower()
        token = token.strip()
        if not name or not token:
            raise TokenConfigError(
                f"{variable}: empty token" if name else f"{variable}: no producer name after the prefix"
            )
        if name in tokens:
            raise TokenConfigError(f"{variable}: producer {name!r} also has a token in OPSLOOP_INGEST_TOKENS")
        if why := too_short(token):
            raise TokenConfigError(f"{variable}: the token {why}")
        tokens[name] = token.encode()
    return tokens


class TokenAuth:
    """Checks ``Authorization: Bearer <token>`` and returns the producer's name."""

    def __init__(self, tokens: Mapping[str, bytes]) -> None:
        self._tokens = dict(tokens)

    @property
    def producers(self) -> list[str]:
        return sorted(self._tokens)

    def secrets(self) -> list[str]:
        """Each token, for the log filter to mask (streams.logs.register_secrets), as the read API's are."""
        return [token.decode() for token in self._tokens.values()]

    def check(self, authorization: str | None) -> str:
        if not authorization:
            raise Unauthorized("missing bearer token (Authorization: Bearer <token>)")
        scheme, _, presented = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            raise Unauthorized("expected Authorization: Bearer <token>")
        given = credential_bytes(presented.strip())
        matched = None
        for name, token in self._tokens.items():  # all of them, always: constant time in the match
            if hmac.compare_digest(given, token) and matched is None:
                matched = name
        if matched is None:
            raise Forbidden("invalid token")
        return matched


def hmac_sha256(secret: bytes, body: bytes) -> str:
    return hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify_signature(
    secret: bytes, body: bytes, header: str | None, *, header_name: str, prefix: str, max_signatures: int = 4
) -> None:
    """Check an HMAC-SHA256 signature header over the raw body.

    ``header`` may carry several comma-separated signatures (PagerDuty sends two while
    a secret is being rotated); one match is enough. 401 when the header is missing,
    403 when no signature matches.
    """
    if not header:
        raise Unauthorized(f"missing signature header {header_name}", scheme="")
    candidates = header.split(",")
    if len(candidates) > max_signatures or len(header) > max_signatures * 80:
        # PagerDuty sends one, two while a secret rotates: a long list is someone guessing.
        raise Forbidden(f"{header_name} carries {len(candidates)} signatures; at most {max_signatures} are accepted")
    expected = hmac_sha256(secret, body).encode()
    ok = False
    for candidate in candidates:
        candidate = candidate.strip()
        if candidate.startswith(prefix) and same_credential(candidate[len(prefix) :].strip().lower(), expected):
            ok = True
    if not ok:
        raise Forbidden(f"signature in {header_name} does not match the body")
