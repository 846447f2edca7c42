"""Reading topics in batches off the consumer faust already runs, without faust's per-record stream.

Why: faust's ``Stream`` and its ``take_events`` buffer handle each record on its own
(an ``await`` per record, processors, sensors, a buffer task) and a take buffer that is
not full waits out its whole window before it yields. In the worker's profile that path
was ~11 % of the CPU, and under a steady 50 % load the decide agent's batches came every
50 ms plus their handling: it fell behind with most of a core idle (deploy/bench/BENCHMARKS.md,
"The batch loop"). Here a channel of our own is subscribed on faust's conductor, so faust
keeps what it is good at (group membership, the fetch, offsets and commits, the tables
and their recovery, the web server), and a batch is whatever the channel holds when the
previous batch is done, up to a maximum: under load batches grow by themselves, at a
low rate a record is handled as soon as it arrives.

What faust's stream does per record that still has to happen (faust-streaming 0.15,
``Stream._c_aiter``), and happens here per batch:

- a record that arrives while flow control is suspended (a rebalance) or that was fetched
  in an older consumer-group generation is not handled but acknowledged; the redelivery
  guard (:mod:`streams.kafka.redelivery`) turns that acknowledgement into a release, so it
  is fetched and read again and the commit does not pass it;
- a record taken is tracked as unacknowledged, so a rebalance waits until the batch it is
  in has been handled (faust's ``wait_empty``) before the partition moves;
- each record is acknowledged only after its batch was handled; faust commits up to the
  highest contiguous acknowledged offset of each partition.

A batch whose handler raises is handled again in place, after a backoff (handlers are
idempotent by record id), until it succeeds; it is released instead (read again from the
committed offset) when a rebalance took its partitions meanwhile or the app stops. (It used
to be released at once: with no rebalance to re-read it, its records stayed undecided and the
commit stayed behind them until the worker restarted.)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from streams.kafka.compat import release_unacked

log = logging.getLogger(__name__)

LINGER_STEP_S = 0.01
RETRY_FIRST_S = 0.1  # a failed batch is handled again after this, doubling up to RETRY_MAX_S
RETRY_MAX_S = 5.0

Handler = Callable[[Sequence[Any]], Awaitable[None]]


def _stale(message: Any, active: bool, generation: int) -> bool:
    """Read while flow is suspended (a rebalance) or in an older consumer-group generation: not this
    worker's to handle now; released, it is read again from the committed offset."""
    return not active or message.generation_id != generation


class BatchReader:
    """Batches of faust events from ``topic`` (a faust topic, possibly of several topics) as they arrive."""

    def __init__(self, app: Any, topic: Any, *, max_batch: int, linger_s: float = 0.0) -> None:
        self.app = app
        self.max_batch = max(1, int(max_batch))
        self.linger_s = max(0.0, float(linger_s))
        # A channel of our own: the conductor hands it every record of the topic's partitions
        # this worker is assigned, and faust subscribes the topic because the channel is added.
        self.channel = topic.clone(is_iterator=True)
        app.topics.add(self.channel)
        self.queue = self.channel.queue

    async def next_batch(self) -> list[Any]:
        """The next non-empty batch of events to handle (waits for the first one)."""
        while True:
            events = [await self.queue.get()]
            self._drain_into(events)
            if self.linger_s and len(events) < self.max_batch:
                await self._linger(events)
            live = self._admit(events)
            if live:
                return live

    async def _linger(self, events: list[Any]) -> None:
        """Let a small batch grow for up to ``linger_s``, checking every 10 ms, so a full batch never waits."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.linger_s
        while len(events) < self.max_batch:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            await asyncio.sleep(min(remaining, LINGER_STEP_S))
            self._drain_into(events)

    def _drain_into(self, events: list[Any]) -> None:
        queue, limit = self.queue, self.max_batch
        while len(events) < limit and not queue.empty():
            events.append(queue.get_nowait())

    def _admit(self, events: Sequence[Any]) -> list[Any]:
        """The events to handle; the others (read during a rebalance, or in an older generation) are released."""
        app = self.app
        consumer = app.consumer
        active = app.flow_control.is_active()
        generation = app.consumer_generation_id
        acking = app.topics.acking_topics
        live = []
        for event in events:
            message = event.message
            if _stale(message, active, generation):
                message.ack(consumer)  # the guard releases it: read again, never counted toward the commit
                continue
            if message.topic in acking and not message.tracked:
                message.tracked = True
                consumer.track_message(message)
            live.append(event)
        # faust's own streams tell its monitor when a partition's events reach them; without it, events after
        # five quiet minutes logged "Stream has not started processing TP(...)" at ERROR while decided at once
        inbound = getattr(app.monitor, "stream_inbound_time", None)
        if inbound is not None and live:
            now = time.monotonic()
            for tp in {event.message.tp for event in live}:
                inbound[tp] = now
        return live

    def acknowledge(self, events: Sequence[Any]) -> None:
        consumer = self.app.consumer
        for event in events:
            event.message.ack(consumer)

    def release(self, events: Sequence[Any]) -> None:
        """Stop tracking ``events`` without acknowledging them: the commit stays behind them."""
        consumer = self.app.consumer
        for event in events:
            release_unacked(consumer, event.message)

    def _still_ours(self, events: Sequence[Any]) -> bool:
        """No rebalance since ``events`` were fetched: their partitions are still this worker's."""
        active, generation = self.app.flow_control.is_active(), self.app.consumer_generation_id
        return not any(_stale(e.message, active, generation) for e in events)

    async def run(self, handle: Handler) -> None:
        """Hand each batch to ``handle`` until the app stops; acknowledge it when ``handle`` returns."""
        while not self.app.should_stop:
            await self._until_handled(await self.next_batch(), handle)

    async def _until_handled(self, events: list[Any], handle: Handler) -> None:
        """Handle ``events`` until it succeeds, backing off between tries; release them if their partitions
        move or the app stops meanwhile (the new owner reads them from the committed offset)."""
        delay = RETRY_FIRST_S
        try:
            while True:
                try:
                    await handle(events)
                except asyncio.CancelledError:
                    raise
                except Exception:  # noqa: BLE001 - handled again (idempotent by record id); the worker goes on
                    log.exception("a batch of %d records failed; handling it again in %.1f s", len(events), delay)
                    await asyncio.sleep(delay)
                    delay = min(2 * delay, RETRY_MAX_S)
                    if self.app.should_stop or not self._still_ours(events):
                        log.warning("released a failed batch of %d records: to be read again", len(events))
                        self.release(events)
                        return
                    continue
                self.acknowledge(events)
                return
        except asyncio.CancelledError:
            self.release(events)
            raise
