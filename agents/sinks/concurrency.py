"""How many requests one receiving host is sent at once, learned from its answers.

Why: a receiver that sheds load answers 503 past what it serves at once, and the
destinations on it can have more lanes than that, all together (a team's webhook relay
behind several receivers, Slack's webhooks of many channels). Before this, each refused
request backed off on its own (exponential, with jitter): the lanes refused together
all slept, the receiver sat half idle, and the refusals came back with the next burst.
Measured on the bench's E2E slow receiver (0.1 s per answer, 503 past 8 in flight):
opsloop used it at ~0.6–0.8 of what it serves (deploy/bench/BENCHMARKS.md).

So each host (scheme, host name and port) has an :class:`AdaptiveConcurrency`, shared by
every destination there. It has no limit until the host first sheds a request
(:func:`is_shed`). Each refusal then sets the limit to one less than what was in flight
when it came (24 sent at once to a host that serves 4, 20 refused, leave a limit of 4),
and each request answered while the limit was the bound raises it by 1/limit, about one
more request per round trip. At the host's capacity that is one refusal in every
limit-or-so requests, and the lanes keep it busy. Requests past the limit wait their turn
in one line (first come, first served), whichever destination they are for. After
``reset_s`` without a refusal the host has no limit again. A host that never sheds is
never limited: the lanes, the breaker, the 429 pause and the rate limit work as they
did; this only sits in front of the send.

Per host rather than per destination, although everything else a destination has is its
own: a limit per destination starved the destinations on a shared host (tried: the first
to learn its share kept every place the host had, and the others' single requests were
refused until they ran out of attempts). A destination whose requests are all refused
(one path of a relay down) cuts the host's limit by one per refusal until its breaker
parks it, after ``breaker_threshold`` of them; the others' answers raise it again.

The increase is TCP congestion control's and Netflix concurrency-limits' AIMD; the
decrease is per refusal rather than a fraction per round trip, because a refusal counts
exactly one request too many (cutting by 0.9 per round trip took ~10 round trips to come
down from 24 lanes to 4, and the lanes ran out of attempts meanwhile). Written here (a
state machine on an injected clock and a waiting line) because those libraries are Java,
and asyncio's and aiolimiter's limiters have fixed sizes.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable

from agents.sinks.base import HttpResponse, TransientError


def is_shed(response: HttpResponse) -> bool:
    """An answer that says "too much at once": 503, or a 429 without ``Retry-After``. A 429 that says how long
    to wait is one client's rate limit (a Slack webhook's, per channel): that destination pauses for it
    (:class:`agents.sinks.delivery.Destination`), and the host's others need not slow down."""
    return response.status == 503 or (response.status == 429 and not response.headers.get("retry-after"))


class RefusedInLine(TransientError):
    """The host refused a request as one too many while others of ours were in flight to it.

    Retried at once, without a backoff and without counting as an attempt: the refusal cut
    the host's limit to what is still in flight, so the retry waits in the host's line
    until one of those is answered. A lane that slept a backoff instead sat idle while the
    host had room (measured: ``tests/sinks/bench_storm.py``). A refusal with none of ours in
    flight is the host's other load, and backs off as any 503.
    """

    def __init__(self, reason: str, *, http_status: int | None = None) -> None:
        super().__init__(reason, http_status=http_status, breaker=False)


class AdaptiveConcurrency:
    """One host's learned limit: :meth:`acquire` before a request, :meth:`release` after its answer."""

    def __init__(self, *, floor: int = 1, reset_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.floor, self.reset_s, self.clock = floor, reset_s, clock
        self.limit = math.inf  # none until the host first sheds a request
        self.in_flight = 0
        self.refusals = 0  # answers that cut the limit (for tests)
        self._refused_at = -math.inf
        self._waiting: deque[asyncio.Future[None]] = deque()

    @property
    def allowed(self) -> float:
        """Requests that may be in flight now (whole ones; ``inf`` when there is no limit)."""
        if self.limit != math.inf and self.clock() - self._refused_at > self.reset_s:
            self.limit = math.inf  # no refusal for a while: start over without a limit
        return self.limit if self.limit == math.inf else max(self.floor, int(self.limit))

    async def acquire(self) -> None:
        """Wait for a place (at once when one is free and nobody waits)."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        self._grant()
        if waiter.done():
            return
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():  # given a place, but the caller is gone: hand it on
                self.in_flight -= 1
                self._grant()
            raise

    def release(self, *, ok: bool = False, shed: bool = False) -> None:
        """A request is over: ``ok`` (answered 2xx), ``shed`` (refused as too much), or neither (another
        failure, which says nothing about the limit)."""
        was = self.in_flight
        self.in_flight -= 1
        if shed:
            self.limit = max(float(self.floor), min(self.limit, was - 1.0))
            self._refused_at = self.clock()
            self.refusals += 1
        elif ok and self.limit != math.inf and was >= self.allowed:
            self.limit += 1.0 / self.limit  # it was the bound and the host coped: one more per round trip
        self._grant()

    def _grant(self) -> None:
        """Give free places to the waiting, in order (a place is counted in flight from when it is given)."""
        while self._waiting and self.in_flight < self.allowed:
            waiter = self._waiting.popleft()
            if not waiter.done():  # not cancelled while it waited
                self.in_flight += 1
                waiter.set_result(None)
