"""Secret values out of every log line, record and error message the sinks produce.

Secrets are resolved only at delivery time, but an exception text, a library's
log line (httpx logs each request URL, and a Slack webhook URL *is* the secret) or a
service's error echo can still carry one. Every value the sinks resolve is
registered with the process-wide masking of :mod:`streams.logs` (the filter on
every handler), together with the token path of a secret URL, since a re-encoded
URL in a message still contains it; :func:`redact` cleans the error strings that
go into receipts and dead letters.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from streams.logs import SECRETS, register_secrets

MIN_PATH = 8  # a URL path shorter than this is not a token ("/", "/hook")


def remember(values: Iterable[str]) -> None:
    """Mask these secret values (and the path of a secret URL) from now on."""
    fresh: list[str] = []
    for value in values:
        if not value:
            continue
        fresh.append(value)
        if value.startswith(("http://", "https://")):
            path = urlsplit(value).path
            if len(path) >= MIN_PATH:
                fresh.append(path)
    register_secrets(*fresh)


def redact(text: str) -> str:
    return SECRETS.mask(text) if text else text
