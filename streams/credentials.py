"""How long a credential opsloop checks or signs with must be: at least 16 characters.

Why: nothing counts wrong guesses (ingest, the read API and the console answer each one at once), and a
signing key can be searched offline from one thing it signed: with a 6-character ``OPSLOOP_ACK_SECRET``,
one Acknowledge link from a chat channel is enough to find the key and sign an Approve link that runs any
session's remediation. So the producers', readers' and console's tokens and the action links' and the
console's signing keys are refused when a process starts if they are shorter, naming the variable (never
the value). Secrets a provider chooses (GitHub's webhook secret, Slack's signing secret) are theirs.
"""

from __future__ import annotations

import hmac

MIN_CHARS = 16
HOW = "for example: python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"


def too_short(value: str) -> str | None:
    """Why ``value`` is too short to be a credential (None: long enough, or empty, i.e. not set)."""
    if value and len(value) < MIN_CHARS:
        return f"is {len(value)} characters; use at least {MIN_CHARS} ({HOW})"
    return None


def credential_bytes(value: str | bytes) -> bytes:
    """A presented credential as bytes, whatever the request carried: aiohttp decodes a header's non-UTF-8 byte
    as a lone surrogate, and ``.encode()`` of it (or ``hmac.compare_digest`` of non-ASCII text) raised, a 500
    with a traceback on every door that checks one, where a wrong credential is a 401 or 403."""
    return value if isinstance(value, bytes) else value.encode("utf-8", "surrogatepass")


def same_credential(given: str | bytes, expected: str | bytes) -> bool:
    """Constant-time equality of a presented credential (token, signature, MAC) with the expected one."""
    return hmac.compare_digest(credential_bytes(given), credential_bytes(expected))
