"""The one delivery client every sink shares.

- one pooled aiohttp client session with connect / read timeouts (aiohttp rather than
  httpx: under a storm httpx's pool cost most of the sinks' CPU, scanning every pooled
  connection on each request; ``tests/sinks/bench_storm.py``); SMTP via the standard library
  in a thread (aiosmtplib is not a dependency and smtplib covers STARTTLS, TLS, AUTH);
- retries with tenacity: exponential backoff with full jitter
  (``wait_random_exponential``: uniform(0, min(cap, base·2ⁿ))), ``Retry-After`` honoured
  exactly on 429, a cap on attempts and on total time (``stop_before_delay``, so a
  wait that would overrun the budget is not started; an attempt the receiver answered
  with a Retry-After of a second or more counts against the time only);
- per destination (receiver): a rate limit (aiolimiter's leaky bucket), a pause
  for everyone after a 429, and a circuit breaker that *parks* the destination:
  its queue waits out the cool-down instead of hammering, the others do not notice;
- per receiving host: how many requests it takes at once, learned from its 503s
  (:mod:`agents.sinks.concurrency`); a request it refuses while others of ours are in
  flight there is retried at once in its line, not after a backoff;
- the ambiguous path: a read timeout means the request went out and its fate is
  unknown. A sink without idempotency (Slack, Teams, email) is not retried blindly:
  it is counted, paused, and tried exactly once more; a second unknown ends it as
  ``ambiguous``. Idempotent sinks (PagerDuty's dedup_key, the webhook's
  Idempotency-Key) retry as for any transient error.

The circuit breaker is written here (40 lines, a pure state machine on an injected
clock) rather than taken from aiobreaker/purgatory: those raise at once while
open, and a sink should instead wait (park) until the half-open probe, which needs
the time-to-reopen that they do not expose.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import smtplib
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiolimiter import AsyncLimiter
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_before_delay,
    wait_random_exponential,
)

from agents.sinks.base import (
    AmbiguousError,
    Channel,
    DeliveryError,
    HttpRequest,
    HttpResponse,
    LogRequest,
    PermanentError,
    Request,
    SmtpRequest,
    TransientError,
)
from agents.sinks.concurrency import AdaptiveConcurrency, RefusedInLine, is_shed
from agents.sinks.redact import redact, remember
from streams import metrics
from streams.model.receivers import MissingSecretError, RateLimit, Receiver, resolve_secrets
from streams.settings import SinkSettings

log = logging.getLogger(__name__)
# A Retry-After this long or longer paces the retries (the attempt is not counted against the cap); a shorter
# one, a receiver answering "Retry-After: 0" forever, is counted, so the cap still ends a tight loop.
MIN_PACED_S = 1.0
notifications = logging.getLogger("opsloop.notifications")


class ParkedError(TransientError):
    """The destination stays parked (breaker open, Retry-After) past this delivery's time budget."""


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 6
    max_total_s: float = 120.0
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    ambiguous_pause_s: float = 5.0
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 10.0
    breaker_threshold: int = 5
    breaker_cooldown_s: float = 30.0
    breaker_cooldown_max_s: float = 300.0

    @classmethod
    def from_settings(cls, s: SinkSettings) -> RetryPolicy:
        return cls(**{name: getattr(s, name) for name in cls.__dataclass_fields__})


class Breaker:
    """Closed → open after ``threshold`` consecutive failures → half-open after the
    cool-down (one probe) → closed on success, open again (cool-down doubled) on failure.

    With several requests to one destination at once (the dispatcher's lanes), "consecutive"
    means one vote per round trip: a failure of a request that started before the last
    counted outcome (success or failure) does not count, and no failure counts within
    ``alive_s`` of a success (the destination is up and shedding load: a 503 past its
    limit, answered at once while other requests are being served). Requests refused
    together by a receiver shedding load therefore back off and retry instead of parking
    the destination, while a destination that is down fails request after request, with
    no success between, and opens the breaker."""

    def __init__(
        self,
        threshold: int,
        cooldown_s: float,
        cooldown_max_s: float,
        clock: Callable[[], float] = time.monotonic,
        alive_s: float = 1.0,
    ) -> None:
        self.threshold, self.base_cooldown, self.max_cooldown, self.clock = threshold, cooldown_s, cooldown_max_s, clock
        self.failures = 0
        self.cooldown = cooldown_s
        self.open_until: float | None = None
        self.opened = 0  # times it opened (for metrics and tests)
        self._last = float("-inf")  # when the last outcome was counted
        self._last_ok = float("-inf")  # when the last success came
        self.alive_s = alive_s

    @property
    def state(self) -> str:
        if self.open_until is None:
            return "closed"
        return "open" if self.clock() < self.open_until else "half-open"

    def wait_s(self) -> float:
        """How long the destination stays parked (0: a request may go now)."""
        if self.open_until is None:
            return 0.0
        return max(0.0, self.open_until - self.clock())

    def success(self) -> None:
        self.failures, self.open_until, self.cooldown = 0, None, self.base_cooldown
        self._last = self._last_ok = self.clock()

    def failure(self, started: float | None = None) -> None:
        """Count a failed request (``started``: when it was sent; older than the last counted outcome: ignored)."""
        if started is not None and (started < self._last or self.clock() - self._last_ok < self.alive_s):
            return
        self._last = self.clock()
        if self.open_until is not None:  # the half-open probe failed: back off harder
            self.cooldown = min(self.cooldown * 2, self.max_cooldown)
            self.open_until = self.clock() + self.cooldown
            self.opened += 1
            return
        self.failures += 1
        if self.failures >= self.threshold:
            self.open_until = self.clock() + self.cooldown
            self.opened += 1


def make_limiter(rate: RateLimit | None) -> AsyncLimiter | None:
    if rate is None:
        return None
    if rate.count < 1:  # a bucket must hold at least one request
        return AsyncLimiter(1, rate.period_s / rate.count)
    return AsyncLimiter(rate.count, rate.period_s)


@dataclass
class Destination:
    """What one receiver shares across its deliveries: limit, pause, breaker."""

    receiver: Receiver
    sink: Channel
    breaker: Breaker
    limiter: AsyncLimiter | None = None
    paused_until: float = 0.0  # monotonic; set by a 429's Retry-After

    @property
    def name(self) -> str:
        return self.receiver.name


@dataclass
class Outcome:
    status: str  # delivered | dead | ambiguous
    attempts: int
    http_status: int | None = None
    error: str | None = None
    error_type: str = ""
    latency_ms: float = 0.0
    ambiguous: int = 0
    waits: list[float] = field(default_factory=list)  # the pauses between attempts (for tests and logs)
    refused_in_line: int = 0  # attempts a busy host refused while others were in flight (not counted)
    # attempts answered "later" with a Retry-After of a second or more (a 429): the receiver paces them, so they
    # count against the time budget, not the attempt cap (45 s of 429s with Retry-After: 2 dead-lettered urgent
    # pages after 6 attempts in 12 s, though the 120 s budget had room)
    paced: int = 0


@dataclass
class Flight:
    """Whether a request of this delivery may have reached the service.

    True from the moment a request goes out until a definite refusal comes back
    (a status, a refused connection); a success or an unknown outcome leaves it
    True. A delivery cancelled (worker shutdown) while it is False can give its
    ledger claim back: nothing can have landed.
    """

    may_have_landed: bool = False


class Deliverer:
    """Sends one effect to one destination with the policy above. Start once, share it."""

    def __init__(
        self,
        policy: RetryPolicy,
        *,
        environ: Mapping[str, str] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy
        self.environ = os.environ if environ is None else environ
        self.sleep = sleep
        self.clock = clock
        self._http: aiohttp.ClientSession | None = None
        self._hosts: dict[tuple[str, str, int | None], AdaptiveConcurrency] = {}

    def host_limit(self, url: str) -> AdaptiveConcurrency:
        """What the host ``url`` points at takes at once (:mod:`agents.sinks.concurrency`), shared by every
        destination there."""
        parts = urlsplit(url)
        key = (parts.scheme.lower(), (parts.hostname or "").lower(), parts.port)
        limit = self._hosts.get(key)
        if limit is None:
            limit = self._hosts[key] = AdaptiveConcurrency(clock=self.clock)
        return limit

    async def start(self) -> Deliverer:
        self._http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=200, keepalive_timeout=30.0),
            timeout=self._timeout(None),
            headers={"user-agent": "opsloop-sink/0.1"},
            auto_decompress=True,
        )
        return self

    def _timeout(self, request_s: float | None) -> aiohttp.ClientTimeout:
        """Connect and read timeouts (a request's own, capped for the connect, or the policy's); waiting for a
        pooled connection is bounded too, by connect + read."""
        p = self.policy
        read = request_s if request_s is not None else p.read_timeout_s
        connect = min(request_s, p.connect_timeout_s) if request_s is not None else p.connect_timeout_s
        return aiohttp.ClientTimeout(total=None, connect=connect + read, sock_connect=connect, sock_read=read)

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    def destination(self, receiver: Receiver, sink: Channel) -> Destination:
        p = self.policy
        return Destination(
            receiver=receiver,
            sink=sink,
            limiter=make_limiter(receiver.rate_limit),
            breaker=Breaker(p.breaker_threshold, p.breaker_cooldown_s, p.breaker_cooldown_max_s, self.clock),
        )

    # -- one delivery ----------------------------------------------------------

    async def deliver(
        self,
        effect: Mapping[str, Any],
        dest: Destination,
        *,
        stale: bool = False,
        on_ambiguous: Callable[[], Awaitable[None]] | None = None,
        flight: Flight | None = None,
    ) -> Outcome:
        """Deliver with retries; never raises for a delivery problem, returns the outcome."""
        started = self.clock()
        try:
            secrets = resolve_secrets(dest.receiver, self.environ)
            remember(secrets.values())
            request = dest.sink.render(effect, dest.receiver, secrets)
        except MissingSecretError as exc:
            return Outcome("dead", 0, error=str(exc), error_type=type(exc).__name__)
        except PermanentError as exc:
            return Outcome("dead", 0, error=redact(exc.reason), error_type=type(exc).__name__)
        except (KeyError, TypeError, ValueError) as exc:  # an effect the formatter cannot render
            return Outcome(
                "dead", 0, error=redact(f"cannot render: {type(exc).__name__}: {exc}"), error_type="RenderError"
            )
        outcome = Outcome("delivered", 0)
        flight = flight if flight is not None else Flight()
        if stale:
            flight.may_have_landed = True  # the dead owner's send may have
        idempotent = dest.sink.idempotent
        max_attempts = self.policy.max_attempts
        if isinstance(request, HttpRequest) and request.max_attempts is not None:
            max_attempts = max(1, request.max_attempts)  # a runbook action's own retries
        if stale and not idempotent:
            # A dead process claimed this and may have sent it: the ambiguous path.
            outcome.ambiguous += 1
            if on_ambiguous is not None:
                await on_ambiguous()
            await self.sleep(self.policy.ambiguous_pause_s)
            max_attempts = 1

        def should_retry(exc: BaseException) -> bool:
            if isinstance(exc, AmbiguousError):
                return idempotent or outcome.ambiguous <= 1
            return isinstance(exc, TransientError) and not isinstance(exc, ParkedError)

        jitter = wait_random_exponential(multiplier=self.policy.backoff_base_s, max=self.policy.backoff_max_s)

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            if isinstance(exc, RefusedInLine):
                return 0.0  # the host's line paces it
            if isinstance(exc, TransientError) and exc.retry_after is not None:
                return exc.retry_after
            if isinstance(exc, AmbiguousError) and not idempotent:
                return self.policy.ambiguous_pause_s
            return jitter(state)

        out_of_time = stop_before_delay(self.policy.max_total_s)

        def stop(state: RetryCallState) -> bool:
            return outcome.attempts - outcome.refused_in_line - outcome.paced >= max_attempts or out_of_time(state)

        async def before_sleep(state: RetryCallState) -> None:
            outcome.waits.append(state.upcoming_sleep)
            exc = state.outcome.exception() if state.outcome else None
            log.log(
                logging.DEBUG if isinstance(exc, RefusedInLine) else logging.INFO,
                "sink %s: attempt %d for %s failed (%s); retrying in %.2fs",
                dest.name,
                state.attempt_number,
                effect["effect_id"],
                redact(str(exc)),
                state.upcoming_sleep,
            )

        retrying = AsyncRetrying(
            stop=stop,
            wait=wait,
            retry=retry_if_exception(should_retry),
            sleep=self.sleep,
            reraise=True,
            before_sleep=before_sleep,
        )
        deadline = started + self.policy.max_total_s
        try:
            async for attempt in retrying:
                with attempt:
                    outcome.attempts += 1
                    try:
                        outcome.http_status = await self._attempt(request, dest, deadline, flight)
                    except AmbiguousError:
                        if not idempotent:
                            outcome.ambiguous += 1
                            if on_ambiguous is not None:
                                await on_ambiguous()
                        raise
                    except DeliveryError as exc:
                        outcome.http_status = exc.http_status
                        outcome.refused_in_line += isinstance(exc, RefusedInLine)
                        paced = isinstance(exc, TransientError) and (exc.retry_after or 0) >= MIN_PACED_S
                        outcome.paced += paced and max_attempts > 1  # a step's "retries: 0" stays one try
                        raise
        except AmbiguousError as exc:
            outcome.status = "dead" if idempotent else "ambiguous"
            outcome.error = self._final_reason(exc, outcome, started)
            outcome.error_type = type(exc).__name__
        except DeliveryError as exc:
            outcome.status = "dead"
            outcome.error = self._final_reason(exc, outcome, started)
            outcome.error_type = type(exc).__name__
        else:
            if outcome.ambiguous:
                outcome.error = (
                    f"delivered after {outcome.ambiguous} timeout(s) with unknown outcome: may be duplicated"
                )
        outcome.latency_ms = (self.clock() - started) * 1000
        return outcome

    def _final_reason(self, exc: DeliveryError, outcome: Outcome, started: float) -> str:
        reason = exc.reason
        if (
            isinstance(exc, TransientError)
            and exc.retry_after is not None
            and self.clock() + exc.retry_after > started + self.policy.max_total_s
        ):
            reason = f"{reason} (Retry-After {exc.retry_after:.0f}s is past the time budget)"
        if not isinstance(exc, PermanentError):
            reason = f"gave up after {outcome.attempts} attempt(s) in {self.clock() - started:.1f}s: {reason}"
        return redact(reason)

    async def _attempt(self, request: Request, dest: Destination, deadline: float, flight: Flight) -> int | None:
        await self._ready(dest, deadline)
        host = self.host_limit(request.url) if isinstance(request, HttpRequest) else None
        if host is not None:
            await self._slot(host, dest, deadline)
        landed_before = flight.may_have_landed
        flight.may_have_landed = True
        sent_at = self.clock()
        try:
            if isinstance(request, HttpRequest) and host is not None:
                status = await self._exchange(request, dest, host)
            elif isinstance(request, SmtpRequest):
                status = await asyncio.to_thread(send_smtp, request)
            elif isinstance(request, LogRequest):
                notifications.info("%s: %s", dest.name, request.line)
                status = None
            else:  # pragma: no cover - a new request type without a transport
                raise PermanentError(f"no transport for {type(request).__name__}")
        except (TransientError, PermanentError) as exc:
            flight.may_have_landed = landed_before  # a definite "not delivered"
            if isinstance(exc, TransientError) and exc.breaker:
                dest.breaker.failure(sent_at)
            raise
        except AmbiguousError:
            dest.breaker.failure(sent_at)
            raise
        dest.breaker.success()
        return status

    async def _exchange(self, request: HttpRequest, dest: Destination, host: AdaptiveConcurrency) -> int:
        """One HTTP request and its answer, judged by the channel; the host learns from the answer."""
        answered = shed = False
        try:
            response = await self._send_http(request)
            shed = is_shed(response)
            dest.sink.check(response)
            answered = True
            return response.status
        except TransientError as exc:
            if exc.retry_after is not None:
                dest.paused_until = max(dest.paused_until, self.clock() + exc.retry_after)
            if shed and host.in_flight > 1:  # others of ours are at the host: their answers free its next place
                raise RefusedInLine(exc.reason, http_status=exc.http_status) from None
            raise
        finally:
            host.release(ok=answered, shed=shed)
            learned = host.allowed
            metrics.SINK_CONCURRENCY.labels(receiver=dest.name).set(0 if learned == math.inf else learned)

    async def _ready(self, dest: Destination, deadline: float) -> None:
        """Wait for the destination: 429 pause, parked breaker, rate limit (all bounded by the deadline)."""
        wait = max(dest.paused_until - self.clock(), dest.breaker.wait_s())
        if wait > 0:
            if self.clock() + wait > deadline:
                state = "parked (circuit open)" if dest.breaker.wait_s() > 0 else "paused by Retry-After"
                raise ParkedError(
                    f"destination {dest.name} {state} for {wait:.1f}s more, past the time budget", breaker=False
                )
            await self.sleep(wait)
        if dest.limiter is not None:
            await dest.limiter.acquire()

    async def _slot(self, host: AdaptiveConcurrency, dest: Destination, deadline: float) -> None:
        """A place among the requests the destination's host takes at once (bounded by the deadline)."""
        try:
            async with asyncio.timeout(max(0.0, deadline - self.clock())):
                await host.acquire()
        except TimeoutError:
            raise ParkedError(
                f"destination {dest.name}: its host takes {host.allowed:.0f} request(s) at once and "
                "none came free within the time budget",
                breaker=False,
            ) from None

    async def _send_http(self, request: HttpRequest) -> HttpResponse:
        assert self._http is not None, "Deliverer.start() first"
        sent = False  # past the connection: from here a lost answer is an unknown outcome
        try:
            async with self._http.request(
                request.method,
                request.url,
                data=request.body,
                headers=dict(request.headers),
                timeout=self._timeout(request.timeout_s),
                allow_redirects=False,
            ) as response:
                sent = True
                body = await response.read()
                try:
                    text = body.decode(response.charset or "utf-8", "replace")
                except LookupError:  # a charset Python does not know
                    text = body.decode("utf-8", "replace")
                return HttpResponse(status=response.status, headers=response.headers, text=text)
        except (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError) as exc:
            raise PermanentError(f"invalid URL: {redact(str(exc))}") from None
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            raise TransientError(f"{type(exc).__name__}: {redact(str(exc)) or 'cannot connect'}") from None
        except (
            aiohttp.SocketTimeoutError,
            aiohttp.ServerDisconnectedError,
            aiohttp.ClientPayloadError,
            aiohttp.ClientOSError,
            TimeoutError,
        ) as exc:
            raise AmbiguousError(
                f"{type(exc).__name__} after sending (outcome unknown): {redact(str(exc)) or 'no answer'}"
            ) from None
        except aiohttp.ClientError as exc:
            if sent:
                raise AmbiguousError(
                    f"{type(exc).__name__} after sending (outcome unknown): {redact(str(exc))}"
                ) from None
            raise TransientError(f"{type(exc).__name__}: {redact(str(exc))}") from None


def send_smtp(request: SmtpRequest) -> int:
    """Blocking SMTP send (run in a thread). Timeouts before DATA retry; during DATA are ambiguous."""
    context = ssl.create_default_context(cafile=request.ca_file) if request.security != "none" else None
    stage = "connect"
    try:
        if request.security == "tls":
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                request.host, request.port, timeout=request.timeout_s, context=context
            )
        else:
            smtp = smtplib.SMTP(request.host, request.port, timeout=request.timeout_s)
        with smtp:
            smtp.ehlo()
            if request.security == "starttls":
                stage = "starttls"
                smtp.starttls(context=context)
                smtp.ehlo()
            if request.username:
                stage = "auth"
                smtp.login(request.username, request.password or "")
            stage = "envelope"
            refused = smtp.send_message(request.message)  # MAIL, RCPT, DATA
            if refused:
                raise PermanentError(f"SMTP refused recipients: {', '.join(sorted(refused))}")
            return 250
    except smtplib.SMTPAuthenticationError as exc:
        raise PermanentError(f"SMTP authentication failed ({exc.smtp_code})", http_status=None) from None
    except smtplib.SMTPResponseException as exc:
        text = f"SMTP {exc.smtp_code} at {stage}: {exc.smtp_error.decode(errors='replace') if isinstance(exc.smtp_error, bytes) else exc.smtp_error}"
        if 400 <= exc.smtp_code < 500:
            raise TransientError(text) from None
        raise PermanentError(text) from None
    except smtplib.SMTPRecipientsRefused as exc:
        raise PermanentError(f"SMTP refused all recipients: {', '.join(sorted(exc.recipients))}") from None
    except TimeoutError as exc:
        if stage == "envelope":
            raise AmbiguousError(f"SMTP timeout while sending (outcome unknown): {exc}") from None
        raise TransientError(f"SMTP timeout at {stage}: {exc}") from None
    except ssl.SSLError as exc:
        raise PermanentError(f"SMTP TLS failed at {stage}: {exc.reason or exc}") from None
    except (smtplib.SMTPServerDisconnected, ConnectionError, OSError) as exc:
        if stage == "envelope" and isinstance(exc, smtplib.SMTPServerDisconnected):
            raise AmbiguousError(f"SMTP server disconnected while sending (outcome unknown): {exc}") from None
        raise TransientError(f"SMTP {type(exc).__name__} at {stage}: {exc}") from None
