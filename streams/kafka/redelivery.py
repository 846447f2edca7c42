"""Keeping faust at-least-once across rebalances: no record skipped, none committed unread.

faust (faust-streaming 0.15) loses records around a rebalance in three ways, all
seen in a decide worker restarted after SIGKILL (tests/decide/test_kill_restart_storm.py):

1. **Records fetched while it seeks.** After recovery, faust resumes the source
   partitions, then seeks them to their committed offsets, then resumes its flow
   control (which *clears* the stream queues). The consumer's fetch loop is already
   running during the seek, so records fetched in that window are put on queues that
   are cleared a moment later, while faust's read offsets have moved past them. The
   next record then looks like a gap in the log, faust counts the gap as acknowledged,
   and the commit moves over records no agent ever saw.
2. **Skipped records are acknowledged.** A stream that receives a record while flow
   is suspended, or one fetched in an older consumer-group generation, skips it and
   acknowledges it "so the lag does not grow". The next commit can then move past a
   record that will only be read again if the worker lives long enough to re-read it.
3. **Partitions nobody has committed.** ``seek_to_committed`` only seeks partitions
   whose committed offset is above zero. One without a commit (a worker killed before
   its first commit) keeps whatever position the fetcher reached before its records
   were dropped.

:func:`guard_redelivery` patches the one consumer instance of an app: a seek first
stops the fetch loop (recovery resumes it after clearing the queues, so everything
from the committed offset is fetched again), partitions without a commit are
rewound to their earliest offset (what ``auto.offset.reset=earliest`` promises), and
a skipped record's acknowledgement releases the record without counting it toward
the commit. Re-read records are harmless: agents are idempotent by record id
(decide skips seen event ids, the sinks' ledger delivers an effect id once).

This patches two public consumer methods (``perform_seek``, ``ack``) and reads faust
internals only through :mod:`streams.kafka.compat`, which checks the versions; the restart
tests fail if an upgrade changes them.
"""

from __future__ import annotations

import logging
import weakref
from typing import Any

import faust

from streams.kafka.compat import committed_offsets, release_unacked

log = logging.getLogger(__name__)

_GUARDED: weakref.WeakSet[Any] = weakref.WeakSet()  # consumers already guarded (a consumer is patched once)


def guard_redelivery(app: faust.App) -> None:
    """Install the three guards on ``app``'s consumer (once; before the worker starts)."""
    consumer = app.consumer
    if consumer in _GUARDED:
        return
    _GUARDED.add(consumer)
    acks_enabled_for = app.topics.acks_enabled_for
    seek_committed = consumer.perform_seek
    ack = consumer.ack

    def source_partitions() -> list[Any]:
        changelogs = set(app.tables.changelog_topics)
        return [tp for tp in consumer.assignment() if tp.topic not in changelogs and acks_enabled_for(tp.topic)]

    async def perform_seek() -> None:
        # Nothing fetched from here on reaches a queue that recovery is about to clear;
        # recovery calls resume_flow() once the queues are cleared.
        consumer.stop_flow()
        await seek_committed()
        committed = committed_offsets(consumer)  # what seek_committed just read
        never = [tp for tp in source_partitions() if not committed.get(tp)]
        if never:
            earliest = await consumer.earliest_offsets(*never)
            for tp in never:
                await consumer.seek(tp, earliest.get(tp) or 0)
            log.info("rewound %d partitions without a committed offset to their earliest offset", len(never))

    def guarded_ack(message: Any) -> bool:
        skipped = not app.flow_control.is_active() or message.generation_id != app.consumer_generation_id
        if skipped and acks_enabled_for(message.topic):
            # Released (no rebalance waits on it), not counted: it is fetched and read again.
            release_unacked(consumer, message)
            return False
        return ack(message)

    consumer.perform_seek = perform_seek  # type: ignore[method-assign]
    consumer.ack = guarded_ack  # type: ignore[method-assign]
