"""The cron scheduler: turns the slots of ``runbooks/schedules.yaml`` into timer events.

Each schedule is a session of its own (``<org>:schedule:<name>``), so exactly one
worker owns it: the one that owns the partition its key hashes to. That worker
promotes the schedule's latest slot (if within the catch-up window) as a
``timer.fired`` event with a deterministic id. Decide keeps the schedule's last slot
in the session state: a slot seen before is a repeat, older missed slots are coalesced
into the newest (and counted), a slot is skipped while the previous run may still be
running, and targets are dispatched ``stagger`` apart through timers. A schedule with
``enabled: false`` is never dispatched (the starter set ships that way).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Iterable
from typing import Any

from agents.runtime import Runtime
from agents.timers import Send, active_partitions
from streams.core.timers import PartitionClock, cron_event, due_slot
from streams.kafka.batchsend import partition_for_key
from streams.kafka.codec import Codec
from streams.kafka.producer import now_ms
from streams.model.runbooks import Schedule
from streams.settings import TimerSettings

log = logging.getLogger(__name__)


class Scheduler:
    """Dispatches due cron slots; :meth:`tick` is one pass (the faust timer calls it)."""

    def __init__(
        self,
        *,
        schedules: Iterable[Schedule],
        partitions: int,
        clock: PartitionClock,
        settings: TimerSettings,
        codec: Codec,
        send: Send,
    ) -> None:
        self.schedules = tuple(s for s in schedules if s.enabled)  # `enabled: false`: loaded, never dispatched
        self.owners = {s.name: partition_for_key(s.session_key.encode(), partitions) for s in self.schedules}
        self.clock, self.settings, self.codec, self.send = clock, settings, codec, send
        self.sent: set[tuple[str, int]] = set()

    async def tick(self, active: Iterable[int]) -> int:
        active = set(active)
        acks = []
        for schedule in self.schedules:
            partition = self.owners[schedule.name]
            if partition not in active:
                continue
            now = self.clock.now(partition, self.settings.clock, self.settings.idle_s)
            if now is None:
                continue
            slot = due_slot(schedule.cron, schedule.timezone, now, schedule.catch_up)
            if slot is None or (schedule.name, slot) in self.sent:
                continue
            event = cron_event(schedule.session_key, schedule.org, schedule.name, slot, now_ms())
            acks.append(await self.send(schedule.session_key.encode(), self.codec.encode("opsloop.Event", event)))
            self.sent.add((schedule.name, slot))
        if acks:
            await asyncio.gather(*acks)
            log.info("dispatched %d cron slots", len(acks))
        return len(acks)

    @classmethod
    def register(cls, rt: Runtime) -> Scheduler | None:
        if not any(s.enabled for s in rt.runbooks.schedules):
            return None
        topic = rt.physical("events.timer")

        async def send(key: bytes, value: bytes) -> Awaitable[Any]:
            return await rt.app.producer.send(topic, key, value, None, None, None)

        scheduler = cls(
            schedules=rt.runbooks.schedules,
            partitions=rt.specs["events.timer"].partitions,
            clock=rt.clock,
            settings=rt.settings.timers,
            codec=rt.codec,
            send=send,
        )

        @rt.app.timer(interval=max(rt.settings.timers.tick_s, 1.0), name="cron-scheduler")  # type: ignore[untyped-decorator]  # faust's App.timer is annotated as returning a bare Callable
        async def cron_scheduler() -> None:
            await scheduler.tick(active_partitions(rt))

        return scheduler
