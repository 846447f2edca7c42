"""The decide agent: the thin shell around :func:`streams.decide.decide`.

Per micro-batch from the events.* topics:

1. decode every record (one that does not decode goes to events.dlq with its reason,
   origin and bytes, and the batch goes on);
2. classify the whole batch in one call (timer events need no verdict); if the model
   fails on a batch, the keyword rules answer for it and the records say so;
3. fold each event in order into its session's state, read from the ``sessions``
   table once per batch and kept in a batch-local cache (a session with many events
   in one batch is read and written once); decide also folds the session's timers
   that came due before the event, so their records and effects go out first;
4. send the effects to ``outbox`` and the decision records to ``decisions`` (one
   produce batch per partition) and wait for Kafka to acknowledge them, and only
   then write the states back (and the pending-timer index, the silences and the
   inhibiting alerts). A crash can then lose a state write but never an effect: the
   re-processed events yield the same effect ids, which the sinks' ledger delivers
   once, and events whose state was written are skipped as seen.

The runbook set is loaded when the worker starts; a broken set stops the start with
file:line. Nothing else lives here: the gates, the runbooks and the timers are pure
code in streams/.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import weakref
from dataclasses import replace
from typing import Any, Callable, Mapping, Sequence

import faust

from agents.sinks.channels import specs as channel_specs
from streams import metrics
from streams.acklinks import AckSettings
from streams.app import Opsloop
from streams.batchsend import PartitionBatcher
from streams.codec import CodecError
from streams.deadletter import dead_letter
from streams.decide import TIMER_VERDICT, Context, Verdict, decide
from streams.incident import firing_labels
from streams.policy import inhibition_sources
from streams.producer import now_ms
from streams.runbooks import RunbookSet, load_runbook_set
from streams.silences import SILENCE_CREATED, SILENCE_TYPES, Silence, SilenceError, silence_from_event, silence_from_json
from streams.timers import PartitionClock, timers_entry

log = logging.getLogger(__name__)

Classify = Callable[[Sequence[dict[str, Any]]], list[Verdict]]

# One clock per app: the decide agent feeds it, the ticker (agents/timers.py) reads it.
_CLOCKS: "weakref.WeakKeyDictionary[faust.App, PartitionClock]" = weakref.WeakKeyDictionary()
# The runbook set the decide agent loaded, for the scheduler (one load per worker).
_RUNBOOKS: "weakref.WeakKeyDictionary[faust.App, RunbookSet]" = weakref.WeakKeyDictionary()


def clock_for(app: faust.App) -> PartitionClock:
    clock = _CLOCKS.get(app)
    if clock is None:
        clock = _CLOCKS[app] = PartitionClock()
    return clock


def runbooks_for(app: faust.App) -> RunbookSet | None:
    return _RUNBOOKS.get(app)


def load_classify() -> tuple[Classify, str]:
    """The classifier's batched predict as a Classify; the keyword rules while the model is unavailable."""
    try:
        from classifier import load_classifier

        clf = load_classifier()
        source = "model"
    except Exception as exc:  # noqa: BLE001 - logged, and every decision record names the version used
        from classifier.keyword import KeywordClassifier

        log.warning("classifier model unavailable (%s: %s); using the keyword rules", type(exc).__name__, exc)
        clf, source = KeywordClassifier(), "keyword"

    def classify(events: Sequence[dict[str, Any]]) -> list[Verdict]:
        return [
            Verdict(category=p.category, severity=p.severity, confidence=float(p.category_p), classifier=p.model_version,
                    fallback=bool(p.fallback), severity_confidence=float(p.severity_p))
            for p in clf.predict_batch(events)
        ]

    return classify, source


def set_current_event(stream: faust.StreamT, event: faust.EventT | None) -> None:
    """Point faust's current event at ``event`` before writing a table.

    A faust table picks the changelog partition (and store partition) of a write
    from the stream's current event; after a take_events() batch that is the last
    event taken, which may belong to another partition. Setting it per session keeps
    each session's state on its own partition. (faust has no public API for this.)

    Only ever inside a section without ``await``, restoring the original after:
    take_events() fills its next batch from the stream's current event while the
    agent awaits, so a current event left pointing at an old one would replace the
    next event taken (events lost, others taken twice).
    """
    stream._set_current_event(event)  # noqa: SLF001


def ensure_changelogs(ops: Opsloop, tables: Sequence[faust.TableT]) -> None:
    """Create global tables' changelog topics before the worker joins its group.

    faust's leader assigns partitions before it declares a global table's changelog
    topic; on a fresh cluster the topic is then missing from the assignment and the
    worker waits forever for its recovery. Creating the topics first (idempotent) avoids
    that. Runs only while no event loop is running (``opsloop worker`` builds the app
    before starting its loop); elsewhere faust declares them itself.
    """
    try:
        loop = asyncio.get_event_loop()
    except RuntimeError:
        return
    if loop.is_running():
        return
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    replication = int(ops.app.conf.topic_replication_factor)
    topics = [NewTopic(t.changelog_topic.get_topic_name(), 1, replication, topic_configs={"cleanup.policy": "compact"})
              for t in tables]

    async def create() -> None:
        admin = AIOKafkaAdminClient(**ops.settings.kafka_client_config())
        await admin.start()
        try:
            for topic in topics:
                try:
                    await admin.create_topics([topic])
                except TopicAlreadyExistsError:
                    pass
        finally:
            await admin.close()

    loop.run_until_complete(create())


class SilenceCache:
    """Parsed silences of the global table, re-parsed only when a value changes."""

    def __init__(self) -> None:
        self._parsed: dict[str, tuple[str, Silence]] = {}

    def snapshot(self, table: Mapping[str, str]) -> tuple[Silence, ...]:
        out = []
        for sid, raw in sorted(table.items()):
            cached = self._parsed.get(sid)
            if cached is None or cached[0] != raw:
                try:
                    cached = (raw, silence_from_json(json.loads(raw)))
                except (SilenceError, ValueError) as exc:
                    log.warning("ignoring an unreadable silence %s: %s", sid, exc)
                    continue
                self._parsed[sid] = cached
            out.append(cached[1])
        return tuple(out)


def register(ops: Opsloop, classify: Classify | None = None, runbooks: RunbookSet | None = None) -> faust.types.AgentT:
    app, codec, settings = ops.app, ops.codec, ops.settings
    rset = runbooks or load_runbook_set(settings.runbooks_dir, channels=channel_specs())  # ConfigError (file:line) stops the worker
    _RUNBOOKS[app] = rset
    if classify is None:
        classify, _ = load_classify()
    ack = AckSettings()
    ack_secret = ack.secret.get_secret_value()
    ack_ttl_ms = ack.ttl_s * 1000
    log.info("decide: runbook set %s (%d runbooks) from %s", rset.version, len(rset.runbooks), rset.directory or "built in")

    partitions = ops.specs["events.telemetry"].partitions
    # JSON state keyed by session key; the changelog partition follows the source event's
    # partition (see set_current_event), so state is co-partitioned with the events.
    sessions = app.Table("sessions", default=None, partitions=partitions)
    # The ticker's index: session key -> {"p": partition, "org": org, "t": {timer_id: spec}}.
    timers = app.Table("timers", default=None, partitions=partitions)
    # Every worker needs all silences and all inhibiting alerts: global tables (one
    # partition, as faust advises for global tables with several workers).
    silences = app.GlobalTable("silences", default=None, partitions=1, use_partitioner=True, recovery_buffer_size=1)
    inhibitors = app.GlobalTable("inhibitors", default=None, partitions=1, use_partitioner=True, recovery_buffer_size=1)
    ensure_changelogs(ops, [silences, inhibitors])
    ops.tables.update(sessions=sessions, timers=timers, silences=silences, inhibitors=inhibitors)
    clock = clock_for(app)
    silence_cache = SilenceCache()
    prefix = settings.topic_prefix
    outbox_topic, decisions_topic = prefix + "outbox", prefix + "decisions"
    dlq = ops.topic("events.dlq")
    inhibit_rules = rset.routing.inhibit_rules

    async def dead_letter_event(message: Any, exc: Exception) -> None:
        record = dead_letter(
            reason=str(exc), error=exc, topic=message.topic, partition=message.partition,
            offset=message.offset, key=message.key, value=message.value, failed_at=now_ms(), stage="decide",
        )
        await dlq.send(key=message.key, value=codec.encode("opsloop.DeadLetter", record))
        metrics.observe_dead_letter("events.dlq", "decide")
        log.warning("dead-lettered %s[%d]@%d: %s", message.topic, message.partition, message.offset, exc)

    def context_for_batch() -> Context:
        inhibiting = tuple(
            (key, labels) for key, value in sorted(inhibitors.items()) if value for labels in value
        ) if inhibit_rules else ()
        return Context(runbooks=rset, silences=silence_cache.snapshot({k: v for k, v in silences.items() if v}),
                       inhibitors=inhibiting, ack_base_url=ack.base_url, ack_secret=ack_secret, ack_ttl_ms=ack_ttl_ms)

    def keep_silence(event: dict[str, Any]) -> None:
        try:
            etype, silence, sid = silence_from_event(event)
        except SilenceError as exc:
            log.warning("silence event %s ignored: %s", event["event_id"], exc)
            return
        if etype == SILENCE_CREATED and silence is not None:
            silences[sid] = json.dumps(silence.to_json(), sort_keys=True)
        elif sid in silences:
            del silences[sid]

    def write_states(stream: faust.StreamT, states: Mapping[str, Any], owner: Mapping[str, faust.EventT],
                     orgs: Mapping[str, str]) -> None:
        """Session states, the pending-timer index and inhibiting alerts (no await: see set_current_event)."""
        for session, state in states.items():
            ev = owner[session]
            set_current_event(stream, ev)
            sessions[session] = state
            entry = timers_entry(state, ev.message.partition, orgs[session])
            if entry is not None:
                if timers.get(session) != entry:
                    timers[session] = entry
            elif session in timers:
                del timers[session]
            if inhibit_rules:
                sources = inhibition_sources(firing_labels(state, orgs[session]), inhibit_rules)
                if (inhibitors.get(session) or []) != sources:
                    if sources:
                        inhibitors[session] = sources
                    else:
                        del inhibitors[session]

    fallback_classify: list[Classify] = []

    def classify_batch(events: list[dict[str, Any]]) -> list[Verdict]:
        """One classifier call per batch; if the model fails on a batch, the keyword rules answer it (flagged)."""
        try:
            return classify(events)
        except Exception:  # noqa: BLE001 - a model bug must not stop decisions; logged, and flagged in each record
            log.exception("classifier failed on a batch of %d events; the keyword rules decide it", len(events))
            if not fallback_classify:
                from classifier.keyword import KeywordClassifier

                rules = KeywordClassifier()
                fallback_classify.append(lambda evs: [
                    Verdict(category=p.category, severity=p.severity, confidence=float(p.category_p),
                            classifier=p.model_version, fallback=True, severity_confidence=float(p.severity_p))
                    for p in rules.predict_batch(evs)])
            return fallback_classify[0](events)

    @app.agent(ops.topic("events"), name="decide")
    async def decide_agent(stream: faust.StreamT) -> None:
        batcher = PartitionBatcher(app.producer._ensure_producer(), {  # noqa: SLF001 - the aiokafka producer faust runs
            outbox_topic: ops.specs["outbox"].partitions, decisions_topic: ops.specs["decisions"].partitions})
        async for batch in stream.take_events(settings.decide_batch_max, within=settings.decide_batch_within_s):
            good: list[tuple[faust.EventT, dict[str, Any]]] = []
            for ev in batch:
                try:
                    good.append((ev, codec.decode(ev.message.value, expect="opsloop.Event")))
                except CodecError as exc:
                    await dead_letter_event(ev.message, exc)
            if not good:
                continue
            to_classify = [event for _, event in good if event["kind"] != "timer"]
            verdicts = iter(classify_batch(to_classify) if to_classify else ())
            base = context_for_batch()
            states: dict[str, Any] = {}
            owner: dict[str, faust.EventT] = {}
            orgs: dict[str, str] = {}
            observed: list[tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]] = []
            for ev, event in good:
                verdict = TIMER_VERDICT if event["kind"] == "timer" else next(verdicts)
                session = event["session_key"]
                prior = states[session] if session in states else sessions.get(session)
                try:
                    result = decide(prior, event, replace(base, verdict=verdict))
                    # timers that came due before this event were folded first: their records go first
                    values = [codec.encode("opsloop.Effect", e) for e in result.all_effects]
                    records = [codec.encode("opsloop.Decision", r) for r in result.all_records]
                except Exception as exc:  # a bug or an event decide cannot fold: keep it, keep going
                    log.exception("decide failed for %s", event.get("event_id"))
                    await dead_letter_event(ev.message, exc)
                    continue
                states[session] = result.state
                owner[session] = ev
                orgs[session] = event.get("org", "default")
                key = ev.message.key or session.encode()
                for value in values:
                    batcher.add(outbox_topic, key, value)
                for record in records:
                    batcher.add(decisions_topic, key, record)
                clock.observe(ev.message.partition, event["occurred_at"])
                if event["type"] in SILENCE_TYPES and result.record["outcome"] != "duplicate":
                    keep_silence(event)
                for fired in result.fired:
                    observed.append((fired.event, fired.record, fired.effects))
                observed.append((event, result.record, result.effects))
            await batcher.flush()  # effects durable before the state that remembers them
            original = stream.current_event
            try:
                write_states(stream, states, owner, orgs)
            finally:
                set_current_event(stream, original)
            now_s = time.time()
            for event, record, effects in observed:
                metrics.observe_decision(event, record, effects, now_s)

    return decide_agent

