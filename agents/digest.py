"""The daily digest agent: per-org counts of the decide agent's decisions and of ``deliveries``, sent once a day.

Three parts, all in the worker (the pure code is :mod:`streams.core.digest`):

1. **collect** repartitions what is counted by org: one ``opsloop.DigestDelta`` per org per
   batch on ``digest.counts`` (keyed by org, declared in topics.yaml like every topic),
   carrying small items (outcome or status, channel, session, time, and a source topic /
   partition / offset). One record per org per batch rather than faust's ``group_by`` (a
   produce per record). Two sources:

   - *decisions*, from the decide agent's own batch (:class:`DecisionDeltas`): the records
     it decided, each with the position of the event it was decided from (an
     ``events.*`` topic, partition and offset). The deltas go out in the same produce as
     the decisions and are acknowledged before decide writes its state and acknowledges
     its batch, so a counted event is never lost to a crash. The digest does not read
     ``decisions`` back (issue 17: it was ~8 % of the worker, a second record read and
     decoded per event); replays and the projector still do.
   - *deliveries*, read back in batches from ``deliveries`` (receipts of the sinks, one
     per effect). A delivery carries no org; it is the session key's ``<org>:`` prefix.
2. **fold** folds each delta into the ``digests`` table (changelog-backed, keyed by
   org, co-partitioned with ``digest.counts``): :class:`~streams.core.digest.DigestCounts`
   per *local* day of the org, the last day sent, and per source partition the highest
   offset folded. This is the windowed table: faust's tumbling windows align to the UTC
   epoch, not to an org's midnight in its own time zone, so the window key is the
   org's local calendar day, and days older than ``KEEP_DAYS`` are pruned.
   *Idempotency*: a source record seen again has an offset at or below the folded mark
   and is skipped, exactly: a receipt the collector re-reads after a crash or a
   rebalance, and an event decide re-reads and decides again (a crash between its
   produce and its state write, a rebalance, a batch that failed): the records decided
   from it again are not counted again, whatever the second decision says, because
   their items carry the event's position, not the new records'. (Before issue 17 the
   digest counted ``decisions`` records, and such a re-decided event twice. Deltas of that
   time, with ``decisions`` positions, still fold; on the day of an upgrade the old workers'
   lag at shutdown can be missed or counted twice once, as README says.)
   Deliveries are not over-counted either: a redelivered outbox record is ``skipped``
   by the sinks' ledger, which is not counted.
3. **ticker** (every ``OPSLOOP_TIMER_TICK_S``) looks at the orgs of the ``digest.counts``
   partitions this worker owns; when an org's local hour has come on the day after a
   day with traffic, or at once for an older day with traffic that no worker was up
   to send (:func:`~streams.core.digest.due_digest`; oldest first, as far back as the table
   keeps), and every event and receipt written before then has been counted and folded
   (:class:`Barrier`), it routes the digest's labels
   through the routing tree, sends one notify effect per receiver to ``outbox`` (the
   sinks deliver it like any other), then writes a *sent* mark to ``digest.counts``
   that the fold records, so the day is sent once. Effect ids derive from org, day and
   receiver: a digest sent twice (the partition moved before the mark was folded) is
   one delivery at the sinks' ledger.

The clock is the timers' (:mod:`streams.core.timers`, ``OPSLOOP_TIMER_CLOCK``): per
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
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from typing import Any

import faust
from faust.types import TP

from agents.runtime import Runtime
from streams.core.digest import (
    DELTA_BYTES,
    SOURCE_TOPICS,
    DigestCounts,
    caught_up,
    delta,
    digest_effects,
    digest_item,
    due_digest,
    fold_delta,
    group_items,
    split_items,
)
from streams.core.timers import PartitionClock
from streams.kafka.batches import BatchReader
from streams.kafka.codec import Codec, CodecError
from streams.model.digest_config import DigestConfig
from streams.model.records import EVENT_TOPICS, MAX_TIME_MS
from streams.model.routing import Routing
from streams.settings import TimerSettings

log = logging.getLogger(__name__)

COUNTS_TOPIC = "digest.counts"
TABLE = "digests"
COLLECT_MAX = 2000  # records per collect batch: one delta per org per batch
COLLECT_WITHIN_S = 1.0
BARRIER_CHECK_S = 1.0  # how often a held digest asks the group's committed offsets

Send = Callable[[bytes, bytes], Awaitable[Awaitable[Any]]]  # (key, value) -> a future of the broker's ack
Offsets = Callable[[], Awaitable[dict[tuple[str, int], int]]]
Ends = Callable[[list[TP]], Awaitable[dict[tuple[str, int], int]]]


class DigestAgent:
    """Collect, fold and send the daily digest; each part is a method the faust shell calls."""

    def __init__(
        self,
        *,
        config: DigestConfig,
        routing: Routing,
        codec: Codec,
        prefix: str,
        table: MutableMapping[str, Any],
        timers: TimerSettings,
        source_tps: list[TP],
        schemas: Mapping[str, str],
        send_counts: Send,
        send_effect: Send,
        committed: Offsets,
        ends: Ends,
    ) -> None:
        self.config, self.routing, self.codec, self.prefix = config, routing, codec, prefix
        self.table, self.timers = table, timers
        self.clock = PartitionClock()  # per digest.counts partition, fed by the fold, read by the ticker
        self.source_tps = source_tps
        self.schemas = dict(schemas)  # source topic (unprefixed) -> the value schema topics.yaml gives it
        self.send_counts, self.send_effect = send_counts, send_effect
        self.committed, self.ends = committed, ends
        self.counts_name = prefix + COUNTS_TOPIC
        self.sent: set[tuple[str, str]] = set()  # (org, day) sent by this process, until the fold records the mark
        self.barrier = Barrier()

    def decoded(self, messages: Iterable[Any]) -> list[tuple[str, int, int, dict[str, Any]]]:
        out = []
        prefix = self.prefix
        for m in messages:
            topic = m.topic[len(prefix) :] if m.topic.startswith(prefix) else m.topic
            try:
                # as its topic's schema: a well-formed record of another type (a decision written to
                # deliveries) failed the whole batch again and again on the fields it lacks
                out.append((topic, m.partition, m.offset, self.codec.decode(m.value, expect=self.schemas.get(topic))))
            except CodecError as exc:  # the sinks write this topic: a bug or a stray producer, not input
                log.warning("digest: skipping undecodable %s[%d]@%d: %s", m.topic, m.partition, m.offset, exc)
        return out

    async def collect(self, messages: Iterable[Any]) -> None:
        """One delta per org of a batch of deliveries, to digest.counts."""
        for org, items in group_items(self.decoded(messages), self.config.enabled).items():
            await self.send_counts(org.encode(), self.codec.encode("opsloop.DigestDelta", delta(org, items)))

    def fold(self, m: Any) -> None:
        """Fold one digest.counts record into the org's counts (no await between the read and the write)."""
        try:
            record = self.codec.decode(m.value, expect="opsloop.DigestDelta")
        except CodecError as exc:
            log.warning("digest: skipping undecodable %s[%d]@%d: %s", m.topic, m.partition, m.offset, exc)
            return
        org, items = record["org"], record["items"]
        if any(not 0 <= item["at"] <= MAX_TIME_MS for item in items):
            # before the clock sees it: a time no calendar names moved the partition's event-time clock
            # past every day, and each fold after it failed (a record no opsloop process writes)
            log.warning("digest: skipping %s[%d]@%d: an item's time is no day", m.topic, m.partition, m.offset)
            return
        for item in items:
            self.clock.observe(m.partition, item["at"])
        now = self.clock.now(m.partition, self.timers.clock, self.timers.idle_s)
        self.table[org] = fold_delta(
            self.table.get(org), record, tz=self.config.for_org(org).timezone, partition=m.partition, now_ms=now
        )

    def due_now(self, active: set[int]) -> dict[tuple[str, str], tuple[int, DigestCounts, int]]:
        """(org, day) -> (partition, counts, now) of the digests due on the partitions this worker owns."""
        out = {}
        for org, state in list(self.table.items()):
            if not state or state.get("p") not in active or not self.config.enabled(org):
                continue
            now = self.clock.now(state["p"], self.timers.clock, self.timers.idle_s)
            if now is None:
                continue
            cfg = self.config.for_org(org)
            found = due_digest(state, now, cfg.hour, cfg.timezone)
            if found is not None and (org, found[0]) not in self.sent:
                out[(org, found[0])] = (state["p"], found[1], now)
        return out

    async def released(self, due: dict[tuple[str, str], Any]) -> set[tuple[str, str]]:
        """The due digests whose records are all folded; see :class:`Barrier`."""
        barrier = self.barrier
        mono = time.monotonic()
        if barrier.due is None:
            barrier.start(set(due), await self.ends(self.source_tps), mono)
        elif mono - barrier.checked < BARRIER_CHECK_S:
            return set()
        barrier.checked = mono
        assert barrier.due is not None  # started above
        offsets = await self.committed()
        if not caught_up(offsets, barrier.sources):
            return set()
        if barrier.counts is None:
            barrier.due = {k for k in barrier.due if k in due}  # the others are no longer due (sent, moved)
            barrier.counts = await self.ends(
                [TP(self.counts_name, p) for p in sorted({due[k][0] for k in barrier.due})]
            )
            offsets = await self.committed()
        if not caught_up(offsets, barrier.counts):
            return set()
        out = barrier.due
        barrier.reset()
        return out

    async def tick(self, active: set[int]) -> None:
        """Send the digests that are due and released, then mark them sent."""
        due = self.due_now(active) if active else {}
        if not due:
            self.barrier.reset()
            return
        try:
            ready = await self.released(due)
        except Exception as exc:  # noqa: BLE001 - a broker hiccup: the next tick asks again
            log.warning("digest: cannot read the group's offsets (%s: %s); retrying", type(exc).__name__, exc)
            self.barrier.checked = time.monotonic()
            return
        if not ready:
            return
        for (org, day), (_p, counts, now) in sorted(self.due_now(active).items()):  # the counts as folded now
            if (org, day) not in ready:
                continue
            effects = digest_effects(org, day, counts, self.routing, created_at=now)
            acks = [
                await self.send_effect(e["session_key"].encode(), self.codec.encode("opsloop.Effect", e))
                for e in effects
            ]
            await asyncio.gather(*acks)  # the digest is in outbox before the mark says it was sent
            await self.send_counts(org.encode(), self.codec.encode("opsloop.DigestDelta", delta(org, [], sent_day=day)))
            self.sent.add((org, day))
            log.info(
                "digest: sent %s for %s (%d events) to %s",
                day,
                org,
                counts.events,
                ", ".join(e["notify"]["receiver"] for e in effects),
            )
        if len(self.sent) > 10_000:
            self.sent.clear()  # the fold's marks are the record; this only spares re-sends between ticks

    @classmethod
    def register(cls, rt: Runtime) -> DigestAgent | None:
        settings, app = rt.settings, rt.app
        config = rt.runbooks.digest
        if not config.any_enabled:
            log.info("digest: no org gets a digest (%s)", config.path or "defaults")
            return None
        prefix = settings.topic_prefix
        counts_topic, outbox = rt.topic(COUNTS_TOPIC), rt.topic("outbox")
        # org -> {"p": partition, "last_sent": day, "hwm": {"topic:partition": offset}, "days": {day: counts}}
        table = app.Table(TABLE, default=None, partitions=rt.specs[COUNTS_TOPIC].partitions)
        sources = app.topic(
            *(prefix + t for t in SOURCE_TOPICS),
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
        )

        async def committed() -> dict[tuple[str, int], int]:
            """The consumer group's committed offsets (all workers'): how far collect and fold have got."""
            from aiokafka.admin import AIOKafkaAdminClient

            admin = AIOKafkaAdminClient(**settings.kafka_client_config())
            await admin.start()
            try:
                return {
                    (tp.topic, tp.partition): meta.offset
                    for tp, meta in (await admin.list_consumer_group_offsets(settings.app_id)).items()
                }
            finally:
                await admin.close()

        async def ends(tps: list[TP]) -> dict[tuple[str, int], int]:
            return {(tp.topic, tp.partition): int(end) for tp, end in (await app.consumer.highwaters(*tps)).items()}

        agent = cls(
            config=config,
            routing=rt.runbooks.routing,
            codec=rt.codec,
            prefix=prefix,
            table=table,
            timers=settings.timers,
            # what the Barrier waits for: the events decide counts from, and the receipts collect reads
            source_tps=[
                TP(prefix + t, p) for t in (*EVENT_TOPICS, *SOURCE_TOPICS) for p in range(rt.specs[t].partitions)
            ],
            schemas={t: rt.specs[t].value_schema for t in SOURCE_TOPICS},
            send_counts=lambda key, value: counts_topic.send(key=key, value=value),
            send_effect=lambda key, value: outbox.send(key=key, value=value),
            committed=committed,
            ends=ends,
        )

        # Batches off faust's consumer, as the decide agent reads (streams/kafka/batches.py): the
        # digest reads every receipt, so faust's per-record stream would cost per record.
        collector = BatchReader(app, sources, max_batch=COLLECT_MAX, linger_s=COLLECT_WITHIN_S)

        @app.task  # type: ignore[untyped-decorator]  # faust's App.task is annotated as returning a bare Callable
        async def collect() -> None:
            await collector.run(lambda batch: agent.collect(ev.message for ev in batch))

        @app.agent(counts_topic, name="digest-fold")
        async def fold(stream: faust.StreamT[Any]) -> None:
            async for event in stream.events():
                m = event.message
                try:
                    agent.fold(m)
                except Exception:  # noqa: BLE001 - one record's bug must not crash (and restart) the fold
                    log.exception("digest: %s[%d]@%d not counted", m.topic, m.partition, m.offset)

        @app.timer(interval=settings.timers.tick_s, name="digest-ticker")  # type: ignore[untyped-decorator]  # faust's App.timer is annotated as returning a bare Callable
        async def ticker() -> None:
            if app.rebalancing or getattr(app, "in_recovery", False):
                return  # the table may be half restored: wait for the partitions to settle
            await agent.tick({tp.partition for tp in app.assignor.assigned_actives() if tp.topic == agent.counts_name})

        return agent


class Barrier:
    """Holds due digests until every record written before they came due is folded.

    The clock is the newest time folded, and ``digest.counts`` merges many source
    partitions: with a backlog (a worker catching up after an outage) one partition's
    records of the next morning can be folded before another's of the day itself, and
    the digest would go out short. So when digests come due, the end offsets of every
    ``events.*`` and ``deliveries`` partition are noted; once the consumer group (every
    worker's decide agent and collector) has committed past them, the deltas they yielded
    are in ``digest.counts`` (decide's are acknowledged before its batch is; faust
    flushes the producer before it commits the collector's), whose end offsets are noted
    in turn; once the group has committed past those too, the fold has them all and the
    digests go out with the counts as folded then. Idle partitions do not hold anything
    back (their committed offset is their end). An event of the day that is written
    after its digest came due is late: folded before the digest's sent mark, it is counted in
    that day's row (not sent); after it, in today's (``fold_delta``). A late receipt is not sent.
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


class DecisionDeltas:
    """The decide agent's side of the digest: one DigestDelta per org per decide batch, from its own records.

    Each decision record becomes an item carrying the position of the event it was decided
    from (:func:`~streams.core.digest.digest_item`), so an event decided again is not
    counted again (the fold's marks). The decide agent adds :meth:`rounds` to its produce
    and calls :meth:`sent` once Kafka acknowledged them, before it writes its state.

    Items wait in :attr:`carry` until then: a batch whose produce failed is handled again by
    the batch loop (:mod:`streams.kafka.batches`), or, if a rebalance took its partitions
    meanwhile, released to be read again while this worker's other batches go on; either way
    its items ride with the next batch's (in the same record per org, so they land first or
    together) and are dropped only once acknowledged. An org's items past ``DELTA_BYTES`` (a
    batch of very long session keys) are split between events, the n-th part in the n-th round, each round produced after the
    previous one was acknowledged: a part's marks never pass a part that did not land.
    """

    def __init__(self, *, enabled: Callable[[str], bool], codec: Codec, prefix: str, topic: str) -> None:
        self.enabled, self.codec, self.prefix, self.topic = enabled, codec, prefix, topic
        self.carry: dict[str, list[dict[str, Any]]] = {}  # org -> items not yet acknowledged on digest.counts
        self.budget = DELTA_BYTES

    @classmethod
    def from_runtime(cls, rt: Runtime) -> DecisionDeltas | None:
        """None when no org gets a digest (:meth:`DigestAgent.register` registers nothing either)."""
        config = rt.runbooks.digest
        if not config.any_enabled:
            return None
        return cls(
            enabled=config.enabled, codec=rt.codec, prefix=rt.settings.topic_prefix, topic=rt.physical(COUNTS_TOPIC)
        )

    def add(self, decided: Iterable[tuple[Any, Iterable[Mapping[str, Any]]]]) -> None:
        """Count a batch's (source message, decision records). With items still carried, an event at or
        below a carried position of its partition is one read again (a rebalance): the carry counts it."""
        carry, prefix, enabled = self.carry, self.prefix, self.enabled
        carried: dict[tuple[str, int], int] = {}
        for items in carry.values():
            for item in items:
                src = (item["topic"], item["partition"])
                carried[src] = max(carried.get(src, -1), item["offset"])
        for message, records in decided:
            topic = message.topic[len(prefix) :] if message.topic.startswith(prefix) else message.topic
            if carried and message.offset <= carried.get((topic, message.partition), -1):
                continue
            for record in records:
                found = digest_item(topic, message.partition, message.offset, record)
                if found is not None and enabled(found[0]):
                    carry.setdefault(found[0], []).append(found[1])

    def rounds(self) -> list[list[tuple[bytes, bytes]]]:
        """(key, value) records for digest.counts: the n-th list holds the n-th part of each org's items."""
        out: list[list[tuple[bytes, bytes]]] = []
        for org, items in self.carry.items():
            key = org.encode()
            for n, part in enumerate(split_items(items, self.budget)):
                if n == len(out):
                    out.append([])
                out[n].append((key, self.codec.encode("opsloop.DigestDelta", delta(org, part))))
        return out

    def sent(self) -> None:
        """Kafka acknowledged every record of :meth:`rounds`."""
        self.carry = {}
