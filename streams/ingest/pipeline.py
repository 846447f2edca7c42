"""What every endpoint shares after parsing: finish the events, drop duplicates, publish, answer.

:class:`Ingest` is the per-application state (auth, session rules, the publisher,
the duplicate memory, metrics); views get it from ``request.app[INGEST]``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from aiohttp import web

from streams.codec import Codec, CodecError, default_codec
from streams.ingest.auth import TokenAuth
from streams.ingest.scopes import DEFAULT_SCOPE, Principal, Scope, authorize
from streams.ingest.errors import BadRequest, BrokerUnavailable, PayloadTooLarge, RetryLater
from streams.ingest.fields import join
from streams.ingest.idempotency import Claims, RecentIds
from streams.ingest.metrics import IngestMetrics
from streams.ingest.publisher import Publisher, Ready
from streams.ingest.sessions import SessionRule
from streams.ingest.settings import IngestSettings
from streams.metrics import observe_ingested
from streams.producer import now_ms
from streams.records import InvalidEventError, topic_for, validate_event
from streams.settings import Settings

# A record must fit Kafka's default max.request.size (1 MiB) with room for the batch header.
MAX_RECORD_BYTES = 1_000_000

INGEST: web.AppKey["Ingest"] = web.AppKey("ingest")


@dataclass
class Ingest:
    settings: Settings
    config: IngestSettings
    auth: TokenAuth
    webhook_secrets: Mapping[str, bytes]
    rules: Sequence[SessionRule]
    publisher: Publisher
    scopes: Mapping[str, Scope] = field(default_factory=dict)
    metrics: IngestMetrics = field(default_factory=IngestMetrics)
    codec: Codec = field(default_factory=default_codec)
    recent: RecentIds = field(init=False)
    claims: Claims = field(default_factory=Claims)

    def __post_init__(self) -> None:
        self.recent = RecentIds(self.config.dedupe_capacity, self.config.dedupe_ttl_s)

    # -- request helpers --------------------------------------------------------

    def org(self, request: web.Request) -> str:
        """The org of a post that does not name one per event: ``?org=`` or the default."""
        return request.query.get("org") or self.config.default_org

    def authenticate(self, request: web.Request) -> Principal:
        """The producer behind the bearer token, with its scope (the default scope when none is configured)."""
        name = self.auth.check(request.headers.get("Authorization"))
        return Principal(name, "token", self.scopes.get(name, DEFAULT_SCOPE))

    def check_length(self, request: web.Request) -> None:
        """413 from the Content-Length header alone, before authenticating or reading."""
        length = request.content_length
        if length is not None and length > self.config.max_body_bytes:
            raise PayloadTooLarge(f"body of {length} bytes exceeds the limit of {self.config.max_body_bytes} bytes")

    async def read_body(self, request: web.Request) -> bytes:
        """The raw body, refusing more than the limit even without a Content-Length."""
        self.check_length(request)
        limit = self.config.max_body_bytes
        chunks, size = [], 0
        while True:
            chunk = await request.content.read(65536)
            if not chunk:
                break
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"body exceeds the limit of {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    # -- the shared tail ----------------------------------------------------------

    def finish(self, raw: Mapping[str, Any], path: str = "", *, principal: Principal) -> Ready:
        """Check ``principal`` may write it (403), stamp who produced it, validate, encode once; a 4xx here, never a 503 later."""
        raw = dict(raw)
        authorize(principal, raw)
        try:
            event = validate_event(raw)
        except InvalidEventError as exc:
            raise BadRequest(join(path, exc.field), exc.reason) from None
        try:
            value = self.codec.encode("opsloop.Event", event)
        except CodecError:
            raise BadRequest(join(path, "payload"), f"does not fit the {event['kind']} payload record of opsloop.Event") from None
        if len(value) > MAX_RECORD_BYTES:
            raise PayloadTooLarge(f"{path or 'event'} encodes to {len(value)} bytes; the limit per event is {MAX_RECORD_BYTES}")
        return Ready(event, topic_for(event), event["session_key"].encode(), value)

    async def accept(self, events: Sequence[Ready], endpoint: str) -> web.Response:
        """Publish what is new, wait for what a concurrent post is publishing, answer.

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
            else:
                fresh.append(ready)
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
        body = {
            "status": "accepted" if fresh else "duplicate",
            "accepted": len(fresh),
            "duplicates": duplicates,
            "event_ids": [ready.event_id for ready in events],
        }
        return web.json_response(body)


def now() -> int:
    """Ingest's clock (epoch ms): received_at, and "is endsAt in the past?"."""
    return now_ms()
