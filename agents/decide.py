"""The decide agent: the thin shell around :func:`streams.core.decide.decide`.

Per micro-batch from the events.* topics (:meth:`DecideAgent.handle`):

1. decode every record (one that does not decode goes to events.dlq with its reason,
   origin and bytes, and the batch goes on);
2. classify the whole batch in one call (timer events need no verdict); if the model
   fails on a batch, the keyword rules answer for it and the records say so;
3. fold each event in order into its session's state (:meth:`DecideAgent.decide_batch`),
   read from the ``sessions`` table once per batch and kept in a batch-local cache (a
   session with many events in one batch is read and written once); decide also folds
   the session's timers that came due before the event, so their records and effects
   go out first;
4. send the effects a sink acts on (notify, remediate) to ``outbox`` and the decision
   records, which carry the timer effects (:mod:`streams.model.effects`), to ``decisions`` (one
   produce batch per partition) and wait for Kafka to acknowledge them, and only
   then write each session's state and the writes its last decision implies (the
   pending-timer index, the silences and the inhibiting alerts: see
   :mod:`streams.core.tables`). A crash can then lose a state write but never an effect: the
   re-processed events yield the same effect ids, which the sinks' ledger delivers
   once, and events whose state was written are skipped as seen. The daily digest's
   counts of the batch's decisions go out in the same produce (one ``digest.counts``
   record per org, :class:`agents.digest.DecisionDeltas`), so they too are acknowledged
   before the state is written; the digest never reads ``decisions`` back.

Nothing else lives here: the gates, the runbooks and the timers are pure code in streams/.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from agents.digest import COUNTS_TOPIC, DecisionDeltas
from agents.runtime import LOOP_SLICE, Classify, Runtime, in_slices, verdicts_of
from streams import metrics
from streams.core.decide import TIMER_VERDICT, Context, Decision, Verdict, configured_context, decide
from streams.core.inhibition import InhibitorIndex
from streams.core.state import DecodedStates, decode_state, encode_state
from streams.core.tables import SilenceCache, SilenceChange, apply_writes, context_from_tables
from streams.core.timers import PartitionClock
from streams.errors import InvalidInputError
from streams.kafka.batches import BatchReader
from streams.kafka.batchsend import ChangelogRows, ChangelogSends, PartitionBatcher
from streams.kafka.codec import Codec, CodecError
from streams.kafka.compat import kafka_producer, set_current_event
from streams.kafka.deadletter import dead_letter
from streams.kafka.producer import now_ms
from streams.kafka.tracked import Changes, watch_table
from streams.model.effects import to_outbox
from streams.model.records import InvalidEventError, check_keyed
from streams.settings import Settings

log = logging.getLogger(__name__)

# A batch is decoded, classified, folded and written in slices (agents.runtime.LOOP_SLICE), a turn of
# the event loop between them: the consumer's next fetch is also read and sent while the batch is
# decided rather than after it (its records would wait for the whole batch, then arrive all at once
# as the next one). One classifier call per slice: ~50 us a call since classifier.model.TokenColumns.
DECIDE_SLICE = LOOP_SLICE


class Out(Protocol):
    """Where a batch's records go: one produce batch per partition (:class:`streams.kafka.batchsend.PartitionBatcher`)."""

    def add(self, topic: str, key: bytes, value: bytes) -> None: ...

    async def flush(self) -> None: ...


@dataclass
class Batch:
    """What one micro-batch decided, before anything is written."""

    last: dict[str, Decision] = field(
        default_factory=dict
    )  # each session's last decision (its state is the one to keep)
    owner: dict[str, Any] = field(default_factory=dict)  # each session's last event (its partition takes the write)
    silence_changes: dict[str, list[SilenceChange]] = field(default_factory=dict)
    observed: list[tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]] = field(default_factory=list)
    failed: list[tuple[Any, Exception]] = field(default_factory=list)  # (message, why): for the dead-letter topic
    decided: list[tuple[Any, list[dict[str, Any]]]] = field(default_factory=list)  # (message, its decision records)
    # each session's events decided so far, with their contexts (to fold again after a failed fold)
    folded: dict[str, list[tuple[Mapping[str, Any], Context]]] = field(default_factory=dict)


def refold(state: Mapping[str, Any] | None, events: Sequence[tuple[Mapping[str, Any], Context]]) -> Any:
    """The state ``events`` (each with the context it was decided in) fold ``state`` into, copied from it."""
    for event, ctx in events:
        state = decide(state, event, ctx).state
    return state


class DecideAgent:
    """One per worker; :meth:`register` puts it on the faust app."""

    def __init__(
        self,
        *,
        settings: Settings,
        codec: Codec,
        runbooks: Any,
        classify: Classify,
        tables: Any,
        clock: PartitionClock,
        partitions: Mapping[str, int],
        dead_letters: Callable[[bytes | None, bytes], Any],
        digest: DecisionDeltas | None = None,
    ) -> None:
        self.settings, self.codec, self.clock = settings, codec, clock
        self.tables = tables
        self._classify = classify
        self._fallback: Classify | None = None
        self.base = configured_context(runbooks, settings.ack)
        self.silence_cache = SilenceCache()
        self.inhibitor_index = InhibitorIndex(self.base.runbooks.routing.inhibit_rules)
        self._inhibitor_changes: Changes | None = None
        self._inhibitor_watched = False
        self.outbox_topic = settings.topic_prefix + "outbox"
        self.decisions_topic = settings.topic_prefix + "decisions"
        self.partitions = dict(partitions)  # physical topic -> partition count, for the batcher
        self._send_dead_letter = dead_letters
        self.digest = digest  # None when no org gets a digest
        self.decoded = DecodedStates()

    @classmethod
    def from_runtime(cls, rt: Runtime) -> DecideAgent:
        dlq = rt.topic("events.dlq")
        return cls(
            settings=rt.settings,
            codec=rt.codec,
            runbooks=rt.runbooks,
            classify=rt.classify,
            tables=rt.tables,
            clock=rt.clock,
            partitions={rt.physical(t): rt.specs[t].partitions for t in ("outbox", "decisions", COUNTS_TOPIC)},
            dead_letters=lambda key, value: dlq.send(key=key, value=value),
            digest=DecisionDeltas.from_runtime(rt),
        )

    # -- the pure-ish middle ------------------------------------------------------------

    def context(self) -> Context:
        """The batch's context: the silences and other sessions' inhibiting alerts as the tables hold them now.

        The inhibitors come as an index kept across batches: only the sessions whose
        table rows changed since the last call are re-indexed (a plain-dict table is
        diffed instead). Called once per slice of a batch (``DECIDE_SLICE``): decide_batch
        does not await, so the index cannot change under a slice; between slices the
        global table may have applied changelog records, which the next slice sees, as
        the next batch would.
        """
        if self._inhibitor_changes is None and not self._inhibitor_watched:
            self._inhibitor_changes = watch_table(self.tables.inhibitors)
            self._inhibitor_watched = True
        changed = self._inhibitor_changes.drain() if self._inhibitor_changes is not None else None
        return context_from_tables(
            self.base,
            silences=self.tables.silences,
            inhibitors=self.tables.inhibitors,
            cache=self.silence_cache,
            index=self.inhibitor_index,
            changed=changed,
        )

    def classify(self, events: list[dict[str, Any]]) -> list[Verdict]:
        """One classifier call per batch; if the model fails on a batch, the keyword rules answer it (flagged)."""
        try:
            return self._classify(events)
        except Exception:  # noqa: BLE001 - a model bug must not stop decisions; logged, and flagged in each record
            log.exception("classifier failed on a batch of %d events; the keyword rules decide it", len(events))
            if self._fallback is None:
                from classifier.keyword import KeywordClassifier

                self._fallback = verdicts_of(KeywordClassifier(), fallback=True)
            return self._fallback(events)

    def verdicts(self, items: Sequence[tuple[Any, dict[str, Any]]]) -> Iterator[Verdict]:
        """The classifier's verdicts for ``items`` that are not timers, in order, from one call for all of them."""
        to_classify = [event for _, event in items if event["kind"] != "timer"]
        return iter(self.classify(to_classify) if to_classify else ())

    def decide_batch(
        self,
        items: Sequence[tuple[Any, dict[str, Any]]],
        sessions: Mapping[str, Any],
        out: Out,
        batch: Batch | None = None,
    ) -> Batch:
        """Fold decoded events in order (one classifier call for them); their records go to ``out``; nothing is
        written to a table. Given the ``batch`` an earlier slice of the same micro-batch returned, carries on from it."""
        verdicts = self.verdicts(items)
        base = self.context()
        batch = Batch() if batch is None else batch
        folded = batch.folded
        for ev, event in items:
            verdict = TIMER_VERDICT if event["kind"] == "timer" else next(verdicts)
            session = event["session_key"]
            ctx = replace(base, verdict=verdict)
            # The table's state is decoded into a fresh object (or, held as it is, copied by decide);
            # a later event of the same session in this batch is folded into the state the
            # previous one returned (nothing else holds it).
            owned = session in batch.last
            if owned:
                prior: Any = batch.last[session].state
            else:
                prior, owned = self.decoded.take(session, sessions.get(session))
            try:
                result = decide(prior, event, ctx, owned=owned)
                # timers that came due before this event were folded first: their records go first
                # only what a sink acts on: timer effects ride on their decision record (streams/model/effects.py)
                values = [self.codec.encode("opsloop.Effect", e) for e in result.all_effects if to_outbox(e)]
                records = [self.codec.encode("opsloop.Decision", r) for r in result.all_records]
            except Exception as exc:  # a bug or an event decide cannot fold: keep it, keep going
                if not isinstance(exc, InvalidInputError):  # a bad event is the dead letter's reason, not a bug
                    log.exception("decide failed for %s", event.get("event_id"))
                batch.failed.append((ev.message, exc))
                if session in batch.last:  # the failed fold may have changed the state in place: fold it again
                    batch.last[session] = replace(
                        batch.last[session], state=refold(decode_state(sessions.get(session))[0], folded[session])
                    )
                continue
            folded.setdefault(session, []).append((event, ctx))
            batch.last[session] = result
            batch.owner[session] = ev
            if result.silence is not None:
                batch.silence_changes.setdefault(session, []).append(result.silence)
            elif result.silence_error:
                log.warning("silence event %s ignored: %s", event["event_id"], result.silence_error)
            key = ev.message.key or session.encode()
            for value in values:
                out.add(self.outbox_topic, key, value)
            for record in records:
                out.add(self.decisions_topic, key, record)
            batch.decided.append((ev.message, result.all_records))
            self.clock.observe(ev.message.partition, event["occurred_at"])
            for fired in result.fired:
                batch.observed.append((fired.event, fired.record, fired.effects))
            batch.observed.append((event, result.record, result.effects))
        return batch

    def write(
        self, stream: Any, batch: Batch, sends: ChangelogSends | None = None, keys: Sequence[str] | None = None
    ) -> None:
        """Each session's state and the writes its last decision implies (of the sessions ``keys``, given: a slice
        of the batch's, see DECIDE_SLICE). No ``await`` in here.

        Faust tables, given ``sends``: each row goes to the table's store at once and its
        changelog record (serialized as faust would; for the source event's partition, a
        global table's for its key's) to ``sends``, for the caller to hand to the producer
        (:class:`~streams.kafka.batchsend.ChangelogRows`). Otherwise through the tables
        themselves: a faust table picks a write's changelog partition from the stream's current
        event, which is pointed at each session's event and restored before returning."""
        tables = self.tables
        keys = list(batch.last) if keys is None else keys
        if sends is not None and hasattr(tables.sessions, "changelog_topic"):
            sessions, timers = ChangelogRows(tables.sessions, sends), ChangelogRows(tables.timers, sends)
            inhibitors, silences = ChangelogRows(tables.inhibitors, sends), ChangelogRows(tables.silences, sends)
            for session in keys:
                result = batch.last[session]
                partition = batch.owner[session].message.partition
                sessions.partition = timers.partition = partition
                sessions[session] = value = encode_state(result.state)
                self.decoded.keep(session, value, result.state)
                writes = replace(result.writes, silences=tuple(batch.silence_changes.get(session, ())))
                apply_writes(writes, partition=partition, timers=timers, inhibitors=inhibitors, silences=silences)
            return
        original = stream.current_event
        try:
            for session in keys:
                result, ev = batch.last[session], batch.owner[session]
                set_current_event(stream, ev)
                tables.sessions[session] = value = encode_state(result.state)
                self.decoded.keep(session, value, result.state)
                writes = replace(result.writes, silences=tuple(batch.silence_changes.get(session, ())))
                apply_writes(
                    writes,
                    partition=ev.message.partition,
                    timers=tables.timers,
                    inhibitors=tables.inhibitors,
                    silences=tables.silences,
                )
        finally:
            set_current_event(stream, original)

    # -- the shell -----------------------------------------------------------------------

    async def dead_letter(self, message: Any, exc: Exception) -> None:
        record = dead_letter(
            reason=str(exc),
            error=exc,
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            key=message.key,
            value=message.value,
            failed_at=now_ms(),
            stage="decide",
        )
        await self._send_dead_letter(message.key, self.codec.encode("opsloop.DeadLetter", record))
        metrics.observe_dead_letter("events.dlq", "decide")
        log.warning("dead-lettered %s[%d]@%d: %s", message.topic, message.partition, message.offset, exc)

    async def handle(self, stream: Any, events: Sequence[Any], out: Out) -> None:
        """One micro-batch of faust events: decode, decide, produce and wait, then write the tables."""
        good: list[tuple[Any, dict[str, Any]]] = []
        async for chunk in in_slices(events, DECIDE_SLICE):
            for ev in chunk:
                try:
                    event = self.codec.decode(ev.message.value, expect="opsloop.Event")
                    check_keyed(ev.message.key, event)
                    good.append((ev, event))
                except (CodecError, InvalidEventError) as exc:
                    await self.dead_letter(ev.message, exc)
        if not good:
            return
        if len(events) > DECIDE_SLICE:
            await asyncio.sleep(0)  # between the last slice decoded and the first folded
        batch = Batch()
        async for items in in_slices(good, DECIDE_SLICE):
            self.decide_batch(items, self.tables.sessions, out, batch)
        digest = self.digest
        if digest is not None:
            digest.add(batch.decided)
        for message, error in batch.failed:
            await self.dead_letter(message, error)
        # effects (and the digest's counts) durable before the state that remembers them; an org's
        # counts past one record go out one after another (see DecisionDeltas)
        if digest is not None:
            for n, chunk in enumerate(digest.rounds()):
                if n:
                    await out.flush()
                for key, value in chunk:
                    out.add(digest.topic, key, value)
        await out.flush()
        if digest is not None:
            digest.sent()
        if isinstance(out, PartitionBatcher):
            async for keys in in_slices(list(batch.last), DECIDE_SLICE):
                sends = ChangelogSends()
                self.write(stream, batch, sends, keys)
                # the rows' changelog records: waited for by the next batch's flush, or by faust's
                # flush of the producer before it commits offsets (as faust's own changelog sends are)
                await sends.send(out)
        else:
            self.write(stream, batch)
        metrics.observe_decisions(batch.observed, time.time())

    def register(self, rt: Runtime) -> BatchReader:
        """Run the agent as a batch loop on faust's consumer (:mod:`streams.kafka.batches`): a batch is what
        arrived while the previous one was handled, up to ``OPSLOOP_DECIDE_BATCH_MAX``."""
        settings = self.settings
        reader = BatchReader(
            rt.app, rt.topic("events"), max_batch=settings.decide_batch_max, linger_s=settings.decide_batch_within_s
        )

        @rt.app.task  # type: ignore[untyped-decorator]  # faust's App.task is annotated as returning a bare Callable
        async def decide_loop() -> None:
            out = PartitionBatcher(kafka_producer(rt.app), self.partitions)
            await reader.run(lambda events: self.handle(None, events, out))

        return reader
