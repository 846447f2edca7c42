"""The cron scheduler: turns the slots of ``runbooks/schedules.yaml`` into timer events.

Each schedule is a session of its own (``<org>:schedule:<name>``), so exactly one
worker owns it: the one that owns the partition its key hashes to. That worker
promotes the schedule's latest slot (if within the catch-up window) as a
``timer.fired`` event with a deterministic id. Decide keeps the schedule's last slot
in the session state: a slot seen before is a repeat, older missed slots are coalesced
into the newest (and counted), a slot is skipped while the previous run may still be
running, and targets are dispatched ``stagger`` apart through timers.
"""

from __future__ import annotations

import asyncio
import logging

from streams.app import Opsloop
from streams.batchsend import partition_for_key
from streams.producer import now_ms
from streams.timers import TimerSettings, cron_event, due_slot

log = logging.getLogger(__name__)


def register(ops: Opsloop) -> None:
    from agents.decide import clock_for, runbooks_for
    from agents.timers import active_partitions

    app, codec = ops.app, ops.codec
    rset = runbooks_for(app)
    if rset is None or not rset.schedules:
        return
    tset = TimerSettings()
    clock = clock_for(app)
    topic = ops.settings.topic_prefix + "events.timer"
    partitions = ops.specs["events.timer"].partitions
    owners = {s.name: partition_for_key(s.session_key.encode(), partitions) for s in rset.schedules}
    sent: set[tuple[str, int]] = set()

    @app.timer(interval=max(tset.tick_s, 1.0), name="cron-scheduler")
    async def scheduler() -> None:
        active = active_partitions(ops)
        sends = []
        for schedule in rset.schedules:
            partition = owners[schedule.name]
            if partition not in active:
                continue
            now = clock.now(partition, tset.clock, tset.idle_s)
            if now is None:
                continue
            slot = due_slot(schedule.cron, schedule.timezone, now, schedule.catch_up)
            if slot is None or (schedule.name, slot) in sent:
                continue
            event = cron_event(schedule.session_key, schedule.org, schedule.name, slot, now_ms())
            sends.append(await app.producer.send(topic, schedule.session_key.encode(),
                                                 codec.encode("opsloop.Event", event), None, None, None))
            sent.add((schedule.name, slot))
        if sends:
            await asyncio.gather(*sends)
            log.info("dispatched %d cron slots", len(sends))
