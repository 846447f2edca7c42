"""The ticker: promotes the due timers of the partitions this worker owns into events.timer.

Every ``OPSLOOP_TIMER_TICK_S`` it scans the ``timers`` table (an index of the
sessions that have pending timers, written by the decide agent), keeps the entries of
partitions it owns as active, judges each against that partition's clock (see
:mod:`streams.core.timers`: event time, wall time or the hybrid default) and appends a
``timer.fired`` event per due timer, keyed by the session so it lands on the session's
partition. The event id is derived from session, timer id and due time: a timer
promoted twice (this worker restarted, or the partition moved before decide consumed
the first event) is one event to decide, which skips ids it has seen and timers that
are no longer pending. Decide removes a fired timer from the session's state, which
removes it from the index.

The ticker does not read the whole table each tick: a :class:`~streams.core.timer_index.TimerIndex`
(heaps by due time per partition) is fed the rows that changed since the last tick
(:func:`streams.kafka.tracked.watch_table`; a plain-dict table is diffed), and a tick
that comes while the previous one still runs is skipped, not stacked.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from agents.runtime import LOOP_SLICE, Runtime, in_slices
from streams import metrics
from streams.core.timer_index import TimerIndex
from streams.core.timers import PartitionClock, timer_event
from streams.kafka.catalogue import EVENT_TOPICS
from streams.kafka.codec import Codec
from streams.kafka.producer import now_ms
from streams.kafka.tracked import Changes, watch_table
from streams.settings import TimerSettings

log = logging.getLogger(__name__)

REPROMOTE_AFTER_S = 30.0  # a promoted timer still pending after this is promoted again (same event id)
# Due timers promoted per turn of the event loop (a storm brings thousands due at once; see LOOP_SLICE).
PROMOTE_SLICE = LOOP_SLICE

Send = Callable[[bytes, bytes], Awaitable[Awaitable[Any]]]  # (key, value) -> a future of the broker's ack


def active_partitions(rt: Runtime) -> set[int]:
    """Partitions of the event topics this worker owns as active (not standby)."""
    topics = {rt.physical(t) for t in EVENT_TOPICS}
    return {tp.partition for tp in rt.app.assignor.assigned_actives() if tp.topic in topics}


class Ticker:
    """Promotes due timers; :meth:`tick` is one pass (the faust timer calls it)."""

    def __init__(
        self, *, timers: Mapping[str, Any], clock: PartitionClock, settings: TimerSettings, codec: Codec, send: Send
    ) -> None:
        self.timers, self.clock, self.settings, self.codec, self.send = timers, clock, settings, codec, send
        self.promoted: dict[tuple[str, str, int], float] = {}
        self.index = TimerIndex()
        self._changes: Changes | None = None
        self._watched = False
        self.running = False
        self.skipped = 0  # ticks skipped because the previous one was still running

    def _sync(self) -> None:
        if not self._watched:
            self._changes, self._watched = watch_table(self.timers), True
        self.index.sync(self.timers, self._changes.drain() if self._changes is not None else None)

    async def tick(self, active: Iterable[int], *, mono: float | None = None) -> int:
        """Promote what is due on the ``active`` partitions; returns how many timers were sent
        (0 at once when the previous tick is still running)."""
        if self.running:
            self.skipped += 1
            log.debug("timer tick skipped: the previous one is still running")
            return 0
        self.running = True
        try:
            return await self._tick(set(active), mono)
        finally:
            self.running = False

    async def _tick(self, active: set[int], mono: float | None) -> int:
        if not active:
            return 0
        tset = self.settings
        self._sync()
        metrics.TIMERS_PENDING.set(self.index.pending(active))
        due = self.index.due(active, lambda p: self.clock.now(p, tset.clock, tset.idle_s))
        mono = time.monotonic() if mono is None else mono
        acks = []
        async for chunk in in_slices(due, PROMOTE_SLICE):  # a storm's due notices: the lanes get turns between
            for session, org, timer_id, spec in chunk:
                mark = (session, timer_id, int(spec["at"]))
                if mono - self.promoted.get(mark, -REPROMOTE_AFTER_S) < REPROMOTE_AFTER_S:
                    continue
                value = self.codec.encode("opsloop.Event", timer_event(session, org, timer_id, spec, now_ms()))
                acks.append(await self.send(session.encode(), value))
                self.promoted.pop(mark, None)  # re-inserted at the end: the marks stay in the order they were promoted
                self.promoted[mark] = mono
        if acks:
            await asyncio.gather(*acks)
            log.info("promoted %d due timers", len(acks))
        self._forget_promoted(mono)
        return len(acks)

    def _forget_promoted(self, mono: float) -> None:
        """Drop the marks promoted long ago, oldest first, stopping at the first recent one: a tick costs what
        expires, not what a storm left behind (after 100,000 timers a full scan was most of an idle worker's CPU)."""
        expired = []
        for mark, at in self.promoted.items():
            if mono - at <= 10 * REPROMOTE_AFTER_S:
                break
            expired.append(mark)
        for mark in expired:
            del self.promoted[mark]

    @classmethod
    def register(cls, rt: Runtime) -> Ticker:
        topic = rt.physical("events.timer")

        async def send(key: bytes, value: bytes) -> Awaitable[Any]:
            return await rt.app.producer.send(topic, key, value, None, None, None)

        ticker = cls(timers=rt.tables.timers, clock=rt.clock, settings=rt.settings.timers, codec=rt.codec, send=send)

        @rt.app.timer(interval=rt.settings.timers.tick_s, name="timer-ticker")  # type: ignore[untyped-decorator]  # faust's App.timer is annotated as returning a bare Callable
        async def timer_ticker() -> None:
            await ticker.tick(active_partitions(rt))

        return ticker
