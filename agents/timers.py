"""The ticker: promotes the due timers of the partitions this worker owns into events.timer.

Every ``OPSLOOP_TIMER_TICK_S`` it scans the ``timers`` table (an index of the
sessions that have pending timers, written by the decide agent), keeps the entries of
partitions it owns as active, judges each against that partition's clock (see
:mod:`streams.timers`: event time, wall time or the hybrid default) and appends a
``timer.fired`` event per due timer, keyed by the session so it lands on the session's
partition. The event id is derived from session, timer id and due time: a timer
promoted twice (this worker restarted, or the partition moved before decide consumed
the first event) is one event to decide, which skips ids it has seen and timers that
are no longer pending. Decide removes a fired timer from the session's state, which
removes it from the index.
"""

from __future__ import annotations

import asyncio
import logging
import time

from streams import metrics
from streams.app import Opsloop
from streams.producer import now_ms
from streams.timers import TimerSettings, due_timers, timer_event
from streams.topics import EVENT_TOPICS

log = logging.getLogger(__name__)

REPROMOTE_AFTER_S = 30.0  # a promoted timer still pending after this is promoted again (same event id)


def active_partitions(ops: Opsloop) -> set[int]:
    """Partitions of the event topics this worker owns as active (not standby)."""
    topics = {ops.settings.topic_prefix + t for t in EVENT_TOPICS}
    return {tp.partition for tp in ops.app.assignor.assigned_actives() if tp.topic in topics}


def register(ops: Opsloop) -> None:
    from agents.decide import clock_for

    app, codec = ops.app, ops.codec
    tset = TimerSettings()
    timers = ops.tables["timers"]
    clock = clock_for(app)
    topic = ops.settings.topic_prefix + "events.timer"
    promoted: dict[tuple[str, str, int], float] = {}

    @app.timer(interval=tset.tick_s, name="timer-ticker")
    async def ticker() -> None:
        active = active_partitions(ops)
        if not active:
            return
        entries = list(timers.items())
        metrics.TIMERS_PENDING.set(sum(len(e.get("t") or {}) for _, e in entries if e and e.get("p") in active))
        due = due_timers(entries, lambda p: clock.now(p, tset.clock, tset.idle_s), active)
        mono = time.monotonic()
        sends = []
        for session, org, timer_id, spec in due:
            mark = (session, timer_id, int(spec["at"]))
            if mono - promoted.get(mark, -REPROMOTE_AFTER_S) < REPROMOTE_AFTER_S:
                continue
            value = codec.encode("opsloop.Event", timer_event(session, org, timer_id, spec, now_ms()))
            sends.append(await app.producer.send(topic, session.encode(), value, None, None, None))
            promoted[mark] = mono
        if sends:
            await asyncio.gather(*sends)
            log.info("promoted %d due timers", len(sends))
        for mark, at in list(promoted.items()):
            if mono - at > 10 * REPROMOTE_AFTER_S:
                del promoted[mark]
