"""What every endpoint shares after parsing: finish the events, drop duplicates, publish, answer.

:class:`Ingest` is the per-application state (auth, session rules, the publisher,
the duplicate memory, metrics); views get it from ``request.app[INGEST]``.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from aiohttp import web
from pydantic import SecretStr

from streams.ingest.auth import TokenAuth
from streams.ingest.errors import (
    BadRequest,
    BrokerUnavailable,
    PayloadTooLarge,
    RequestTimeout,
    RetryLater,
    UnsupportedMediaType,
)
from streams.ingest.fields import check_label, clip_annotations, join
from streams.ingest.idempotency import Claims, RecentIds
from streams.ingest.metrics import IngestMetrics
from streams.ingest.publisher import Publisher, Ready
from streams.ingest.scopes import DEFAULT_SCOPE, Principal, Scope, authorize
from streams.ingest.sessions import SESSION_KEY_MAX, SessionRule
from streams.kafka.codec import Codec, CodecError, default_codec
from streams.kafka.producer import MAX_EVENT_BYTES, now_ms
from streams.metrics import observe_ingested
from streams.model.records import CONTROL_CHARS, InvalidEventError, check_org_name, topic_for, validate_event
from streams.settings import IngestSettings, Settings

INGEST: web.AppKey[Ingest] = web.AppKey("ingest")
# The sender's occurred_at (epoch ms, as text), kept when it was after ingest's receive time.
SENT_AT_ANNOTATION = "opsloop_sent_occurred_at"


def not_after_arrival(event: dict[str, Any]) -> None:
    """An event time after ingest received the event is taken as the receive time (in place).

    Why: decide runs a session on its events' time and never moves a session's clock back, and its
    timers (group waits, escalation steps, verifications) are fired by the wall clock. One alert with a
    startsAt ahead of the wall clock (a sender's clock ahead, or a hostile year 9999) held every later
    timer of its session until the wall clock caught up: accepted, and never notified. Nothing can have
    happened after it arrived; the sender's own time is kept in the ``opsloop_sent_occurred_at`` annotation
    (and, for an alert, in its payload's starts_at / ends_at).
    """
    received = event.get("received_at") or 0
    if received and event["occurred_at"] > received:
        event["annotations"] = {**(event.get("annotations") or {}), SENT_AT_ANNOTATION: str(event["occurred_at"])}
        event["occurred_at"] = received


@dataclass
class Ingest:
    settings: Settings
    config: IngestSettings
    auth: TokenAuth
    webhook_secrets: Mapping[str, SecretStr]  # provider -> HMAC secret (streams.ingest.webhooks.webhook_secrets)
    rules: Sequence[SessionRule]
    publisher: Publisher
    scopes: Mapping[str, Scope] = field(default_factory=dict)
    metrics: IngestMetrics = field(default_factory=IngestMetrics)
    codec: Codec = field(default_factory=default_codec)
    recent: RecentIds = field(init=False)
    claims: Claims = field(default_factory=Claims)
    webhook_bodies: RecentIds = field(init=False)
    webhook_deliveries: RecentIds = field(init=False)

    def __post_init__(self) -> None:
        self.recent = RecentIds(self.config.dedupe_capacity, self.config.dedupe_ttl_s)
        self.webhook_bodies = RecentIds(self.config.dedupe_capacity, self.config.webhook_replay_window_s)
        self.webhook_deliveries = RecentIds(self.config.dedupe_capacity, self.config.webhook_replay_window_s)

    # -- request helpers --------------------------------------------------------

    def org(self, request: web.Request, principal: Principal | None = None) -> str:
        """The org of a post that does not name one per event: ``?org=``, else the one org the token may write
        (a Prometheus given an org's token needs no ``?org=``: its posts were 403 "may not write to org
        'default'"), else the default."""
        sole = principal.scope.sole_org if principal is not None else None
        return request.query.get("org") or sole or self.config.default_org

    def authenticate(self, request: web.Request) -> Principal:
        """The producer behind the bearer token, with its scope (the default scope when none is configured)."""
        name = self.auth.check(request.headers.get("Authorization"))
        return Principal(name, "token", self.scopes.get(name, DEFAULT_SCOPE))

    def check_length(self, request: web.Request) -> None:
        """413 from the Content-Length header alone, before authenticating or reading."""
        length = request.content_length
        if length is not None and length > self.config.max_body_bytes:
            raise PayloadTooLarge(f"body of {length} bytes exceeds the limit of {self.config.max_body_bytes} bytes")

    def check_content_type(self, request: web.Request, form: bool = False) -> None:
        """415 unless the body is declared JSON (``application/json`` or ``application/*+json``, any charset),
        or, for an endpoint that takes a form (Slack's interactivity), ``application/x-www-form-urlencoded``."""
        declared = request.headers.get("Content-Type", "")
        mime = declared.split(";", 1)[0].strip().lower()
        if form:
            if mime != "application/x-www-form-urlencoded":
                raise UnsupportedMediaType(
                    "Content-Type: expected application/x-www-form-urlencoded" + ("" if declared else " (none sent)")
                )
        elif mime != "application/json" and not (mime.startswith("application/") and mime.endswith("+json")):
            raise UnsupportedMediaType("Content-Type: expected application/json" + ("" if declared else " (none sent)"))
        charset = request.charset
        if charset and charset.lower().replace("-", "") != "utf8":
            raise UnsupportedMediaType("Content-Type: expected charset utf-8")

    async def read_body(self, request: web.Request, *, form: bool = False) -> bytes:
        """The raw body (decompressed), refusing more than the limit even without a Content-Length.

        Every read waits at most ``read_timeout_s`` and the whole body ``body_timeout_s``
        (408: a slow sender cannot hold a connection open). ``Content-Encoding: gzip``
        or ``deflate`` is decompressed here, incrementally, with a running limit on the
        output, so a decompression bomb costs at most ``max_body_bytes`` of work (413)
        and a broken stream is a 400; any other encoding is 415.
        """
        self.check_length(request)
        self.check_content_type(request, form)
        encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("identity", "", "gzip", "x-gzip", "deflate"):
            raise UnsupportedMediaType("Content-Encoding: expected gzip, deflate or none")
        inflate: zlib._Decompress | _Deflate | None = None
        if encoding in ("gzip", "x-gzip"):
            inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            inflate = _Deflate()
        limit = self.config.max_body_bytes
        deadline = time.monotonic() + self.config.body_timeout_s
        chunks, size = [], 0
        while True:
            wait = min(self.config.read_timeout_s, deadline - time.monotonic())
            try:
                if wait <= 0:
                    raise TimeoutError
                chunk = await asyncio.wait_for(request.content.read(65536), wait)
            except TimeoutError:
                raise RequestTimeout(
                    f"body not received within {self.config.read_timeout_s:g} s per read / "
                    f"{self.config.body_timeout_s:g} s in all"
                ) from None
            if not chunk:
                break
            if inflate is not None:
                try:
                    chunk = inflate.decompress(chunk, limit + 1 - size)
                    if inflate.unconsumed_tail:
                        raise PayloadTooLarge(f"decompressed body exceeds the limit of {limit} bytes")
                except zlib.error:
                    raise BadRequest("body", f"not valid {encoding} data") from None
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"body exceeds the limit of {limit} bytes")
            chunks.append(chunk)
        if inflate is not None and not inflate.eof:
            raise BadRequest("body", f"truncated {encoding} data")
        return b"".join(chunks)

    # -- the shared tail ----------------------------------------------------------

    def finish(self, raw: Mapping[str, Any], path: str = "", *, principal: Principal) -> Ready:
        """Check ``principal`` may write it (403), stamp who produced it, validate, encode once; a 4xx here, never a 503 later.

        An event whose id was accepted already (a retried post; an Alertmanager webhook sending its group's
        alerts again; a producer posting the same alert, startsAt and endsAt again) is not encoded: :meth:`accept`
        answers it ``duplicate`` and publishes nothing. Its first copy was encoded and published; encoding the
        copies was a quarter of ingest's CPU in E2E, whose posts are four in five such copies
        (deploy/bench/BENCHMARKS.md). Prometheus's own re-sends move endsAt, so they are new events."""
        raw = dict(raw)
        if "annotations" in raw:
            raw["annotations"] = clip_annotations(raw["annotations"])
        check_bounds(raw, path)
        authorize(principal, raw)
        try:
            event = validate_event(raw)
        except InvalidEventError as exc:
            raise BadRequest(join(path, exc.field), exc.reason) from None
        not_after_arrival(event)
        ready = Ready(event, topic_for(event), event["session_key"].encode(), None, path)
        return ready if ready.event_id in self.recent else self.with_value(ready)

    def with_value(self, ready: Ready) -> Ready:
        """``ready`` with its value, encoded (a 400 or 413 naming its path if it does not fit)."""
        if ready.value is not None:
            return ready
        event, path = ready.event, ready.path
        try:
            value = self.codec.encode("opsloop.Event", event)
        except CodecError:
            raise BadRequest(
                join(path, "payload"), f"does not fit the {event['kind']} payload record of opsloop.Event"
            ) from None
        if len(value) > MAX_EVENT_BYTES:
            raise PayloadTooLarge(
                f"{path or 'event'} encodes to {len(value)} bytes; the limit per event is {MAX_EVENT_BYTES}"
            )
        return replace(ready, value=value)

    async def accept(self, events: Sequence[Ready], endpoint: str) -> web.Response:
        """Publish what is new, wait for what a concurrent post is publishing, answer (:meth:`take`'s body)."""
        return web.json_response(await self.take(events, endpoint))

    async def take(self, events: Sequence[Ready], endpoint: str) -> dict[str, Any]:
        """Publish what is new, wait for what a concurrent post is publishing; the answer's body:

        ``{"status": "accepted"|"duplicate", "accepted": n, "duplicates": m, "event_ids": [...]}``
        """
        fresh: list[Ready] = []
        waits = []
        duplicates = 0
        seen: set[str] = set()
        for ready in events:
            eid = ready.event_id
            if eid in seen or eid in self.recent:
                duplicates += 1
            elif (pending := self.claims.get(eid)) is not None:
                waits.append(pending)
            else:  # not encoded by finish: its id has been forgotten since (age, capacity): new after all
                fresh.append(self.with_value(ready))
            seen.add(eid)
        for ready in fresh:
            self.claims.claim(ready.event_id)
        error: BaseException | None = None
        started = time.perf_counter()
        self.metrics.in_flight.inc(len(fresh))
        try:
            if fresh:
                await self.publisher.publish(fresh)
        except BaseException as exc:
            error = exc
            raise
        finally:
            self.metrics.in_flight.dec(len(fresh))
            for ready in fresh:
                if error is None:
                    self.recent.add(ready.event_id)
                self.claims.release(ready.event_id, error)
        if fresh:
            self.metrics.publish_seconds.observe(time.perf_counter() - started)
        for pending in waits:
            outcome = await pending
            if isinstance(outcome, RetryLater):  # the original post's 503 / 429, as a fresh exception
                raise type(outcome)(outcome.reason, outcome.retry_after)
            if outcome is not None:
                raise BrokerUnavailable("Kafka did not acknowledge; retry later", self.config.retry_after_s)
            duplicates += 1
        self.metrics.events.labels(endpoint, "accepted").inc(len(fresh))
        for ready in fresh:  # the shared catalogue counter (bounds the client-chosen `source`)
            observe_ingested(ready.event["kind"], ready.event["source"])
        self.metrics.events.labels(endpoint, "duplicate").inc(duplicates)
        return {
            "status": "accepted" if fresh else "duplicate",
            "accepted": len(fresh),
            "duplicates": duplicates,
            "event_ids": [ready.event_id for ready in events],
        }


# The audit columns these fields land in (streams/audit/models.py): longer would stop nothing
# now (the projector dead-letters), but is refused here so the producer learns at once.
FIELD_LIMITS = {
    "event_id": 128,
    "session_key": SESSION_KEY_MAX,
    "org": 128,
    "kind": 32,
    "type": 128,
    "source": 128,
    "session_rule": 128,
}


def check_bounds(event: Mapping[str, Any], path: str) -> None:
    """400 naming the field for an identifier too long or with control characters, or a bad label."""
    for name, limit in FIELD_LIMITS.items():
        value = event.get(name)
        if not isinstance(value, str):
            continue
        if len(value) > limit:
            raise BadRequest(join(path, name), f"{len(value)} characters; at most {limit}")
        if CONTROL_CHARS.search(value):
            raise BadRequest(join(path, name), "contains a control character")
    org = event.get("org")
    if isinstance(org, str):
        try:
            check_org_name(org)
        except InvalidEventError as exc:
            raise BadRequest(join(path, exc.field), exc.reason) from None
    for name in ("labels", "annotations"):
        values = event.get(name)
        if isinstance(values, Mapping):
            for key, value in values.items():
                check_label(key, value, join(path, name))


class _Deflate:
    """HTTP ``deflate``: zlib-wrapped as the RFC says, raw deflate as some clients send."""

    def __init__(self) -> None:
        self._inner: Any = None

    def decompress(self, data: bytes, max_length: int) -> bytes:
        if self._inner is None:
            wbits = (
                zlib.MAX_WBITS
                if len(data) >= 2 and (data[0] & 0x0F) == 8 and (data[0] << 8 | data[1]) % 31 == 0
                else -zlib.MAX_WBITS
            )
            self._inner = zlib.decompressobj(wbits)
        out: bytes = self._inner.decompress(data, max_length)
        return out

    @property
    def unconsumed_tail(self) -> bytes:
        return self._inner.unconsumed_tail if self._inner is not None else b""

    @property
    def eof(self) -> bool:
        return self._inner is not None and self._inner.eof


def now() -> int:
    """Ingest's clock (epoch ms): received_at, and "is endsAt in the past?"."""
    return now_ms()
