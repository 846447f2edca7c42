"""Answering a retried post ``duplicate`` without producing it again.

Event ids are deterministic (an alert's fingerprint + startsAt + status, a webhook's
delivery id, a client's Idempotency-Key), so a retry carries the same id as the
original. Across restarts the decide agent is the backstop: it skips ids a session
has seen. Within one ingest process :class:`RecentIds` remembers what Kafka already
acknowledged (bounded in size and age) and :class:`Claims` makes a concurrent retry
wait for the original's outcome instead of racing it to the broker.

A 40-line OrderedDict is used rather than a cache library: it needs exactly
"contains, add, evict oldest / expired", and no dependency does that smaller.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable


class RecentIds:
    """Ids accepted in the last ``ttl_s`` seconds, at most ``capacity`` of them (oldest evicted)."""

    def __init__(self, capacity: int, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = capacity
        self.ttl_s = ttl_s
        self._clock = clock
        self._ids: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, event_id: str) -> bool:
        added = self._ids.get(event_id)
        if added is None:
            return False
        if self._clock() - added > self.ttl_s:
            del self._ids[event_id]
            return False
        return True

    def add(self, event_id: str) -> None:
        now = self._clock()
        self._ids[event_id] = now
        self._ids.move_to_end(event_id)
        while len(self._ids) > self.capacity:
            self._ids.popitem(last=False)
        # expire from the old end; amortised O(1) per add
        while self._ids:
            oldest, added = next(iter(self._ids.items()))
            if now - added <= self.ttl_s:
                break
            del self._ids[oldest]


class Claims:
    """Event ids being produced right now; a second post of one waits for the first.

    The future resolves to None (the original was acknowledged) or to the exception
    the original got (so the retry answers the same 503 / 429).
    """

    def __init__(self) -> None:
        self._pending: dict[str, asyncio.Future[BaseException | None]] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def get(self, event_id: str) -> asyncio.Future[BaseException | None] | None:
        return self._pending.get(event_id)

    def claim(self, event_id: str) -> None:
        self._pending[event_id] = asyncio.get_running_loop().create_future()

    def release(self, event_id: str, error: BaseException | None) -> None:
        fut = self._pending.pop(event_id, None)
        if fut is not None and not fut.done():
            fut.set_result(error)
