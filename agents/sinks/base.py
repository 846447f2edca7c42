"""The sink contract: a channel is a settings schema, a pure formatter and a judge of the answer.

A :class:`Channel` declares what a receiver of it must configure (a
:class:`streams.model.receivers.ChannelSpec`), turns a notify effect and its receiver into a
request (HTTP, SMTP or a log line) and judges the service's answer. It does no I/O:
the shared delivery client (``agents.sinks.delivery``) sends, retries, rate-limits
and parks destinations; the dispatcher (``agents.sinks.dispatch``) owns the ledger,
the receipts and the dead letters. Adding a channel is one module in
``agents/sinks/channels/`` defining ``CHANNEL``; the registry there finds it. This
module imports no channel.

Outcomes are exceptions carrying what the retry policy needs:
:class:`TransientError` (retry, maybe after ``retry_after``), :class:`PermanentError`
(dead-letter now), :class:`AmbiguousError` (sent, outcome unknown).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from streams.errors import DeliveryError as DeliveryError  # re-exported: the channels' error base
from streams.model.receivers import ChannelSpec, Receiver
from streams.model.taxonomy import SEVERITIES

# Severity of an effect → a colour, shared by the chat formatters.
SEVERITY_COLOURS = dict(zip(SEVERITIES, ("#439FE0", "#ECB22E", "#E8912D", "#E01E5A"), strict=True))
TRUNCATION_MARK = "… [truncated]"


class TransientError(DeliveryError):
    """Worth retrying: 408, 429, 5xx, a refused connection, a connect timeout."""

    def __init__(
        self, reason: str, *, http_status: int | None = None, retry_after: float | None = None, breaker: bool = True
    ) -> None:
        super().__init__(reason, http_status=http_status)
        self.retry_after = retry_after
        self.breaker = breaker  # counts against the destination's health (429 does not)


class PermanentError(DeliveryError):
    """Retrying cannot help: a 4xx other than 408/429, a rejected payload, bad config."""


class AmbiguousError(DeliveryError):
    """The request went out but no answer came (read timeout): it may have landed."""


@dataclass(frozen=True)
class HttpRequest:
    url: str
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    method: str = "POST"
    timeout_s: float | None = None  # this request's connect / read timeout (None: the client's)
    max_attempts: int | None = None  # this request's attempt cap (None: the retry policy's)

    def __repr__(self) -> str:  # the URL and body may hold secrets (webhook URL, routing key)
        return f"HttpRequest({self.method}, {len(self.body)} bytes)"


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: Mapping[str, str]
    text: str


@dataclass(frozen=True)
class SmtpRequest:
    message: EmailMessage
    host: str
    port: int
    security: str  # starttls | tls | none
    username: str | None = None
    password: str | None = None
    timeout_s: float = 10.0
    ca_file: str | None = None

    def __repr__(self) -> str:
        return f"SmtpRequest({self.host}:{self.port}, {self.security})"


@dataclass(frozen=True)
class LogRequest:
    line: str


Request = HttpRequest | SmtpRequest | LogRequest
Render = Callable[[Mapping[str, Any], Receiver, Mapping[str, str]], Request]
Check = Callable[[HttpResponse], None]


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    import time
    from email.utils import parsedate_to_datetime

    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def check_status(response: HttpResponse) -> None:
    """The HTTP rules every sink shares: 2xx ok; 408/429/5xx retry; other 4xx permanent."""
    status = response.status
    if 200 <= status < 300:
        return
    snippet = response.text[:300]
    if status == 429:
        raise TransientError(
            f"HTTP 429 rate limited: {snippet}",
            http_status=status,
            retry_after=parse_retry_after(response.headers.get("retry-after")),
            breaker=False,
        )
    if status == 408 or status >= 500:
        raise TransientError(f"HTTP {status}: {snippet}", http_status=status)
    raise PermanentError(f"HTTP {status}: {snippet}", http_status=status)


@dataclass(frozen=True)
class Channel:
    """One channel: its receivers' settings schema, a pure formatter and a pure judge of the answer.

    ``spec``: what a receiver of this channel configures (required, secret-only and
    optional settings, the default rate limit, the check of the values); the routing
    loaders validate receivers against it.

    ``idempotent``: the service deduplicates a repeated request (PagerDuty by
    dedup_key; the generic webhook carries an Idempotency-Key), so an unknown
    outcome may be retried freely. Slack, Teams and email may not.
    """

    name: str
    spec: ChannelSpec
    render: Render
    check: Check = check_status
    idempotent: bool = False
    # Deliver once through the ledger. Only a sink whose repeat is harmless and local
    # (the log line) skips it, so it costs no SQL round trips at the volume of every effect.
    ledger: bool = True
    # Actions only (remediate): why an effect must not be called (a dry run), given whether
    # this worker allows live calls; None when it may be called. ``describe`` is its log line.
    held: Callable[[Mapping[str, Any], bool], str | None] | None = None
    describe: Callable[[Mapping[str, Any]], str] = lambda effect: str(effect.get("effect_id", ""))

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise TypeError(f"Channel.name must be a non-empty string, got {self.name!r}")
        if not isinstance(self.spec, ChannelSpec):
            raise TypeError(f"channel {self.name!r}: spec must be a ChannelSpec, got {type(self.spec).__name__}")
        for attr in ("render", "check"):
            if not callable(getattr(self, attr)):
                raise TypeError(f"channel {self.name!r}: {attr} must be callable")
        if self.spec.check_settings is not None and not callable(self.spec.check_settings):
            raise TypeError(f"channel {self.name!r}: spec.check_settings must be callable")


def trim(text: str, limit: int) -> str:
    """Cut ``text`` to ``limit`` characters with a visible marker, never rejecting it."""
    if len(text) <= limit:
        return text
    return text[: max(0, limit - len(TRUNCATION_MARK))] + TRUNCATION_MARK


def notify_of(effect: Mapping[str, Any]) -> Mapping[str, Any]:
    notify: Mapping[str, Any] | None = effect.get("notify")
    if not notify:
        raise PermanentError(f"effect {effect.get('effect_id')} of type notify has no notify part")
    return notify
