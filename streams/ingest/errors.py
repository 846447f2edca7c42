"""What ingest answers when it will not take a post: one exception per HTTP status.

Views and the pure parsers raise these; one middleware (:mod:`streams.ingest.app`)
turns them into ``{"error": "<reason>"}`` JSON with the status and headers
(``Retry-After``, ``WWW-Authenticate``). Reasons name the field at fault and never
contain a token, a signature or a secret.
"""

from __future__ import annotations

from typing import Any

from streams.errors import OpsloopError


class IngestError(OpsloopError):
    """A post ingest refuses; ``status`` is the HTTP status it answers with."""

    status = 500

    def __init__(self, reason: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {"error": self.reason}


class BadRequest(IngestError):
    """Malformed JSON, a wrong type or a missing field; ``field`` is its path (``alerts[0].labels``)."""

    status = 400

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        super().__init__(f"{field}: {reason}" if field else reason)


class Unauthorized(IngestError):
    status = 401

    def __init__(self, reason: str, scheme: str = "Bearer") -> None:
        super().__init__(reason, headers={"WWW-Authenticate": f'{scheme} realm="opsloop-ingest"'} if scheme else None)


class Forbidden(IngestError):
    status = 403


class NotFound(IngestError):
    status = 404


class PayloadTooLarge(IngestError):
    status = 413


class RequestTimeout(IngestError):
    status = 408


class UnsupportedMediaType(IngestError):
    status = 415


class Conflict(IngestError):
    """A signed webhook delivery seen before under another delivery id (a replay)."""

    status = 409


class RetryLater(IngestError):
    """A refusal the client should retry after ``retry_after`` seconds."""

    def __init__(self, reason: str, retry_after: int) -> None:
        super().__init__(reason, headers={"Retry-After": str(int(retry_after))})
        self.retry_after = retry_after

    def body(self) -> dict[str, Any]:
        return {"error": self.reason, "retry_after": self.retry_after}


class Backpressure(RetryLater):
    """Too many events are waiting for Kafka's acknowledgement."""

    status = 429


class BrokerUnavailable(RetryLater):
    """Kafka did not acknowledge in time (or cannot be reached); nothing was accepted."""

    status = 503
