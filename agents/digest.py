"""The daily digest agent: per-org counts from ``decisions`` and ``deliveries``, sent once a day.

Three parts, all in the worker (the pure code is :mod:`streams.digest`):

1. **collect** reads ``decisions`` (keyed by session) and ``deliveries`` (keyed by
   effect id) in batches and repartitions them by org: one ``opsloop.DigestDelta`` per
   org per batch on ``digest.counts`` (keyed by org, declared in topics.yaml like every
   topic), carrying small items (outcome or status, channel, session, time, and the
   source topic / partition / offset). One record per org per batch rather than faust's
   ``group_by`` (a produce per record): the digest reads every decision and receipt
   once, but does not produce each one again.
   Deliveries carry no org; it is the session key's ``<org>:`` prefix.
2. **fold** folds each delta into the ``digests`` table (changelog-backed, keyed by
   org, co-partitioned with ``digest.counts``): :class:`~streams.digest.DigestCounts`
   per *local* day of the org, the last day sent, and per source partition the highest
   offset folded. This is the windowed table: faust's tumbling windows align to the UTC
   epoch, not to an org's midnight in its own time zone, so the window key is the
   org's local calendar day, and days older than ``KEEP_DAYS`` are pruned.
   *Idempotency*: a source record seen again (the collector or the fold re-reading
   after a crash or a rebalance) has an offset at or below the folded mark and is
   skipped, exactly. Not caught: a decision the decide agent itself emitted twice
   (a crash between its produce and its state write re-decides those events with the
   same ids); such copies are counted again, so a day can be over-counted by at most
   what decide re-processes after a crash (the records since its last commit).
   Deliveries are not over-counted that way: a redelivered outbox record is
   ``skipped`` by the sinks' ledger, which is not counted.
3. **ticker** (every ``OPSLOOP_TIMER_TICK_S``) looks at the orgs of the ``digest.counts``
   partitions this worker owns; when an org's local hour has come on the day after a
   day with traffic, or at once for an older day with traffic that no worker was up
   to send (:func:`~streams.digest.due_digest`; oldest first, as far back as the table
   keeps), and every record written before then has been folded (:class:`Barrier`), it routes the digest's labels
   through the routing tree, sends one notify effect per receiver to ``outbox`` (the
   sinks deliver it like any other), then writes a *sent* mark to ``digest.counts``
   that the fold records, so the day is sent once. Effect ids derive from org, day and
   receiver: a digest sent twice (the partition moved before the mark was folded) is
   one delivery at the sinks' ledger.

The clock is the timers' (:mod:`streams.timers`, ``OPSLOOP_TIMER_CLOCK``): per
``digest.counts`` partition, the watermark of the ``decided_at`` / ``completed_at``
times folded (``event``: deterministic, tests move it by sending events), the wall
clock (``wall``), or the watermark while busy and the wall clock once idle (``hybrid``,
the default). A day's records written after its digest came due are late: counted in
the table, not sent again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import faust
from faust.types import TP

from agents.sinks.channels import specs as channel_specs
from streams.app import Opsloop
from streams.codec import CodecError
from streams.digest import (
    SOURCE_TOPICS, DigestCounts, caught_up, delta, digest_effects, due_digest, fold_delta, group_items,
)
from streams.runbooks import RunbookSet, load_runbook_set
from streams.timers import PartitionClock, TimerSettings

log = logging.getLogger(__name__)

COUNTS_TOPIC = "digest.counts"
TABLE = "digests"
COLLECT_MAX = 2000  # records per collect batch: one delta per org per batch
COLLECT_WITHIN_S = 1.0
BARRIER_CHECK_S = 1.0  # how often a held digest asks the group's committed offsets


def register(ops: Opsloop, runbooks: RunbookSet | None = None) -> None:
    from agents.decide import runbooks_for

    app, codec, settings = ops.app, ops.codec, ops.settings
    rset = runbooks or runbooks_for(app) or load_runbook_set(settings.runbooks_dir, channels=channel_specs())  # ConfigError stops the worker
    config, routing = rset.digest, rset.routing
    if not config.any_enabled:
        log.info("digest: no org gets a digest (%s)", config.path or "defaults")
        return
    tset = TimerSettings()
    clock = PartitionClock()  # per digest.counts partition, fed by the fold, read by the ticker
    prefix = settings.topic_prefix
    counts_name = prefix + COUNTS_TOPIC
    counts_topic, outbox = ops.topic(COUNTS_TOPIC), ops.topic("outbox")
    # org -> {"p": partition, "last_sent": day, "hwm": {"topic:partition": offset}, "days": {day: counts}}
    table = app.Table(TABLE, default=None, partitions=ops.specs[COUNTS_TOPIC].partitions)
    ops.tables[TABLE] = table
    sources = app.topic(*(prefix + t for t in SOURCE_TOPICS), key_type=bytes, value_type=bytes,
                        key_serializer="raw", value_serializer="raw")

    def decoded(events: list[faust.EventT]) -> list[tuple[str, int, int, dict[str, Any]]]:
        out = []
        for ev in events:
            m = ev.message
            topic = m.topic[len(prefix):] if m.topic.startswith(prefix) else m.topic
            try:
                out.append((topic, m.partition, m.offset, codec.decode(m.value)))
            except CodecError as exc:  # the decide agent and the sinks write these topics: a bug, not input
                log.warning("digest: skipping undecodable %s[%d]@%d: %s", m.topic, m.partition, m.offset, exc)
        return out

    @app.agent(sources, name="digest-collect")
    async def collect(stream: faust.StreamT) -> None:
        async for batch in stream.take_events(COLLECT_MAX, within=COLLECT_WITHIN_S):
            for org, items in group_items(decoded(batch), config.enabled).items():
                await counts_topic.send(key=org.encode(), value=codec.encode("opsloop.DigestDelta", delta(org, items)))

    @app.agent(counts_topic, name="digest-fold")
    async def fold(stream: faust.StreamT) -> None:
        async for event in stream.events():
            m = event.message
            try:
                record = codec.decode(m.value, expect="opsloop.DigestDelta")
            except CodecError as exc:
                log.warning("digest: skipping undecodable %s[%d]@%d: %s", m.topic, m.partition, m.offset, exc)
                continue
            org = record["org"]
            for item in record["items"]:
                clock.observe(m.partition, item["at"])
            now = clock.now(m.partition, tset.clock, tset.idle_s)
            # no await between the read and the write: one org's value, one changelog record
            table[org] = fold_delta(table.get(org), record, tz=config.for_org(org).timezone, partition=m.partition,
                                    now_ms=now)

    sent: set[tuple[str, str]] = set()  # (org, day) sent by this process, until the fold records the mark
    source_tps = [TP(prefix + t, p) for t in SOURCE_TOPICS for p in range(ops.specs[t].partitions)]
    barrier = Barrier()

    def due_now(active: set[int]) -> dict[tuple[str, str], tuple[int, DigestCounts, int]]:
        """(org, day) -> (partition, counts, now) of the digests due on the partitions this worker owns."""
        out = {}
        for org, state in list(table.items()):
            if not state or state.get("p") not in active or not config.enabled(org):
                continue
            now = clock.now(state["p"], tset.clock, tset.idle_s)
            if now is None:
                continue
            cfg = config.for_org(org)
            found = due_digest(state, now, cfg.hour, cfg.timezone)
            if found is not None and (org, found[0]) not in sent:
                out[(org, found[0])] = (state["p"], found[1], now)
        return out

    async def committed() -> dict[tuple[str, int], int]:
        """The consumer group's committed offsets (all workers'): how far collect and fold have got."""
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(**settings.kafka_client_config())
        await admin.start()
        try:
            return {(tp.topic, tp.partition): meta.offset
                    for tp, meta in (await admin.list_consumer_group_offsets(settings.app_id)).items()}
        finally:
            await admin.close()

    async def ends(tps: list[TP]) -> dict[tuple[str, int], int]:
        return {(tp.topic, tp.partition): int(end) for tp, end in (await app.consumer.highwaters(*tps)).items()}

    async def released(due: dict[tuple[str, str], Any]) -> set[tuple[str, str]]:
        """The due digests whose records are all folded; see :class:`Barrier`."""
        mono = time.monotonic()
        if barrier.due is None:
            barrier.start(set(due), await ends(source_tps), mono)
        elif mono - barrier.checked < BARRIER_CHECK_S:
            return set()
        barrier.checked = mono
        offsets = await committed()
        if not caught_up(offsets, barrier.sources):
            return set()
        if barrier.counts is None:
            barrier.due = {k for k in barrier.due if k in due}  # the others are no longer due (sent, moved)
            barrier.counts = await ends([TP(counts_name, p) for p in sorted({due[k][0] for k in barrier.due})])
            offsets = await committed()
        if not caught_up(offsets, barrier.counts):
            return set()
        out = barrier.due
        barrier.reset()
        return out

    @app.timer(interval=tset.tick_s, name="digest-ticker")
    async def ticker() -> None:
        if app.rebalancing or getattr(app, "in_recovery", False):
            return  # the table may be half restored: wait for the partitions to settle
        active = {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == counts_name}
        due = due_now(active) if active else {}
        if not due:
            barrier.reset()
            return
        try:
            ready = await released(due)
        except Exception as exc:  # noqa: BLE001 - a broker hiccup: the next tick asks again
            log.warning("digest: cannot read the group's offsets (%s: %s); retrying", type(exc).__name__, exc)
            barrier.checked = time.monotonic()
            return
        if not ready:
            return
        for (org, day), (_p, counts, now) in sorted(due_now(active).items()):  # the counts as folded now
            if (org, day) not in ready:
                continue
            effects = digest_effects(org, day, counts, routing, created_at=now)
            acks = [await outbox.send(key=e["session_key"].encode(), value=codec.encode("opsloop.Effect", e)) for e in effects]
            await asyncio.gather(*acks)  # the digest is in outbox before the mark says it was sent
            await counts_topic.send(key=org.encode(), value=codec.encode("opsloop.DigestDelta", delta(org, [], sent_day=day)))
            sent.add((org, day))
            log.info("digest: sent %s for %s (%d events) to %s", day, org, counts.events,
                     ", ".join(e["notify"]["receiver"] for e in effects))
        if len(sent) > 10_000:
            sent.clear()  # the fold's marks are the record; this only spares re-sends between ticks


class Barrier:
    """Holds due digests until every record written before they came due is folded.

    The clock is the newest time folded, and ``digest.counts`` merges many source
    partitions: with a backlog (a worker catching up after an outage) one partition's
    records of the next morning can be folded before another's of the day itself, and
    the digest would go out short. So when digests come due, the end offsets of every
    ``decisions`` and ``deliveries`` partition are noted; once the consumer group (every
    worker's collector) has committed past them, the deltas they yielded are in
    ``digest.counts`` (faust flushes the producer before it commits), whose end offsets
    are noted in turn; once the group has committed past those too, the fold has them
    all and the digests go out with the counts as folded then. Idle partitions do not
    hold anything back (their committed offset is their end). A record of the day that
    is written after its digest came due is late: counted in the table, not sent.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.due: set[tuple[str, str]] | None = None
        self.sources: dict[tuple[str, int], int] = {}
        self.counts: dict[tuple[str, int], int] | None = None
        self.checked = 0.0

    def start(self, due: set[tuple[str, str]], sources: dict[tuple[str, int], int], now: float) -> None:
        self.due, self.sources, self.counts, self.checked = due, sources, None, now - BARRIER_CHECK_S
