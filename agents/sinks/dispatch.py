"""From outbox records to settled deliveries: per-destination queues, the ledger, receipts.

The reader hands every outbox record to :meth:`Dispatcher.submit` and goes on
reading: nothing here makes it wait for a delivery. Each receiver has its own FIFO
queue and worker (order per destination is kept: a resolve never overtakes its
trigger), so a slow or parked destination holds back only its own queue. A record
is *settled* when its receipt (and dead letter, if any) has been handed to the
producer; :class:`InOrderAcks` then releases offsets per partition strictly in
order, so the committed offset never passes an effect that is still pending.
(faust's own out-of-order acking is not used: its gap check lets a commit pass a
single unacked offset at the head of a partition.)

Remediate effects take the same path to their action's destination
(``remediate:<action>``) when this worker may call them; otherwise they settle at
once with a ``dry_run`` receipt (:mod:`agents.sinks.channels.remediate`).

Back-pressure: at most ``max_in_flight`` unsettled records in all; a destination
whose queue reaches ``backlog_per_destination`` gets further effects dead-lettered
with that reason rather than stalling everyone.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, TypeVar

from agents.sinks.base import Channel
from agents.sinks.delivery import Deliverer, Destination, Flight, Outcome
from agents.sinks.ledger import Claim, ClaimState, Ledger, LedgerConflictError
from agents.sinks.redact import redact
from streams import metrics
from streams.kafka.codec import Codec, CodecError
from streams.kafka.deadletter import dead_letter
from streams.kafka.producer import now_ms
from streams.model.receivers import REMEDIATE_CHANNEL, Receiver
from streams.settings import SinkSettings

log = logging.getLogger(__name__)
notifications = logging.getLogger("opsloop.notifications")
T = TypeVar("T")


@dataclass(frozen=True)
class OutboxRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    redrive: str | None = None  # set on a record `opsloop dlq redrive` re-produced (streams.kafka.redrive)


class Emitter(Protocol):
    """Where receipts and dead letters go (faust topics in the worker, a list in unit tests)."""

    async def receipt(self, key: bytes, record: dict[str, Any]) -> None: ...

    async def dead_letter(self, key: bytes | None, record: dict[str, Any]) -> None: ...


@dataclass
class _Entry:
    token: Any
    settled: bool = False


class InOrderAcks:
    """Release tokens of each partition in offset order, whatever order they settle in."""

    def __init__(self, release: Callable[[Any], object]) -> None:
        self._release = release
        self._pending: dict[Hashable, deque[_Entry]] = {}

    def add(self, partition: Hashable, token: Any) -> _Entry:
        entry = _Entry(token)
        self._pending.setdefault(partition, deque()).append(entry)
        return entry

    def settle(self, partition: Hashable, entry: _Entry) -> None:
        entry.settled = True
        queue = self._pending.get(partition)
        while queue and queue[0].settled:
            self._release(queue.popleft().token)

    def pending(self) -> int:
        return sum(len(q) for q in self._pending.values())


@dataclass
class _Job:
    record: OutboxRecord
    effect: dict[str, Any]
    done: asyncio.Future[str]


@dataclass
class _DestinationWorker:
    dest: Destination
    queue: asyncio.Queue[_Job] = field(default_factory=asyncio.Queue)
    task: asyncio.Task[None] | None = None
    busy: bool = False

    @property
    def backlog(self) -> int:
        return self.queue.qsize() + (1 if self.busy else 0)


class Dispatcher:
    def __init__(
        self,
        *,
        receivers: Mapping[str, Receiver],
        registry: Mapping[str, Channel],
        deliverer: Deliverer,
        ledger: Ledger,
        emitter: Emitter,
        codec: Codec,
        settings: SinkSettings,
        owner: str,
        ledger_retry_s: float = 1.0,
        announce: Callable[[bytes, dict[str, Any]], Awaitable[None]] | None = None,
        generation: Callable[[], int | None] = lambda: None,
    ) -> None:
        self.receivers, self.registry = receivers, registry
        self.deliverer, self.ledger, self.emitter, self.codec = deliverer, ledger, emitter, codec
        self.settings, self.owner = settings, owner
        self.ledger_retry_s = ledger_retry_s
        # Where a settled live remediation's outcome event goes (events.webhook in the worker;
        # agents.sinks.outcomes); None announces nothing.
        self.announce = announce
        self.generation = generation  # the consumer group's current generation, stored with each claim
        self._heartbeat: asyncio.Task[None] | None = None
        self._workers: dict[str, _DestinationWorker] = {}
        self._capacity = asyncio.Semaphore(settings.max_in_flight)
        self.busy_poll_s = 1.0
        self.stats: dict[str, int] = {}

    async def start_heartbeat(self) -> None:
        """Beat this owner's row in the ledger now, then every ``owner_heartbeat_s`` (see agents.sinks.ledger)."""
        await self._ledger(self.ledger.beat, self.owner, now_ms())
        self._heartbeat = asyncio.create_task(self._beat_forever(), name="sink:ledger-heartbeat")

    async def _beat_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.owner_heartbeat_s)
            try:
                await asyncio.to_thread(self.ledger.beat, self.owner, now_ms())
            except Exception as exc:  # noqa: BLE001 - the claims wait on the database too; beat again next time
                log.warning("delivery ledger heartbeat failed (%s)", type(exc).__name__)

    # -- intake (never waits on a delivery) -------------------------------------

    async def submit(self, record: OutboxRecord) -> asyncio.Future[str]:
        """Route one outbox record; the future resolves with its final status once settled."""
        await self._capacity.acquire()
        done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        done.add_done_callback(lambda _f: self._capacity.release())
        try:
            effect = self.codec.decode(record.value, expect="opsloop.Effect")
        except CodecError as exc:
            await self._dead_letter(record, f"undecodable outbox record: {exc}", type(exc).__name__, "sink")
            return self._settle(done, "dead")
        if effect["type"] == "remediate" and effect.get("remediate"):
            return await self._submit_remediation(record, effect, done)
        if effect["type"] != "notify" or not effect.get("notify"):
            return self._settle(done, "ignored")  # schedule_timer / cancel_timers belong to the timer agent
        notify = effect["notify"]
        target = (notify["channel"], notify["receiver"])
        receiver = self.receivers.get(notify["receiver"])
        if receiver is None:
            return await self._refuse(
                record, effect, target, done, f"unknown receiver {notify['receiver']!r}", "UnknownReceiver"
            )
        if notify["channel"] != receiver.channel:
            return await self._refuse(
                record,
                effect,
                target,
                done,
                f"effect channel {notify['channel']!r} but receiver {receiver.name!r} is {receiver.channel!r}",
                "ChannelMismatch",
            )
        return await self._enqueue(record, effect, target, receiver, done)

    async def _submit_remediation(
        self, record: OutboxRecord, effect: dict[str, Any], done: asyncio.Future[str]
    ) -> asyncio.Future[str]:
        """A runbook action: called only when the step and this worker both allow it (see agents.sinks.channels.remediate)."""
        action = effect["remediate"]
        target = (REMEDIATE_CHANNEL, f"{REMEDIATE_CHANNEL}:{action['action']}")
        channel = self.registry[REMEDIATE_CHANNEL]
        why = channel.held(action, self.settings.remediation_enabled) if channel.held else None
        if why:
            notifications.info("%s: dry run (%s): %s", target[1], why, redact(channel.describe(effect)))
            await self._receipt(effect, *target, Outcome("dry_run", 0))
            return self._settle(done, "dry_run")
        base = self.receivers.get(REMEDIATE_CHANNEL)
        if base is None or base.channel != REMEDIATE_CHANNEL:
            return await self._refuse(
                record,
                effect,
                target,
                done,
                f"receiver {REMEDIATE_CHANNEL!r} must have channel {REMEDIATE_CHANNEL!r}",
                "ChannelMismatch",
            )
        return await self._enqueue(record, effect, target, replace(base, name=target[1]), done)

    async def _enqueue(
        self,
        record: OutboxRecord,
        effect: dict[str, Any],
        target: tuple[str, str],
        receiver: Receiver,
        done: asyncio.Future[str],
    ) -> asyncio.Future[str]:
        sink = self.registry.get(receiver.channel)
        if sink is None:
            return await self._refuse(
                record, effect, target, done, f"no sink registered for channel {receiver.channel!r}", "UnknownChannel"
            )
        worker = self._worker(receiver, sink)
        if worker.backlog >= self.settings.backlog_per_destination:
            return await self._refuse(
                record,
                effect,
                target,
                done,
                f"receiver {receiver.name!r} backlog full ({worker.backlog} pending: destination slow or parked)",
                "BacklogFull",
            )
        worker.queue.put_nowait(_Job(record, effect, done))
        return done

    def _settle(self, done: asyncio.Future[str], status: str) -> asyncio.Future[str]:
        self.stats[status] = self.stats.get(status, 0) + 1
        if not done.done():
            done.set_result(status)
        return done

    async def _refuse(
        self,
        record: OutboxRecord,
        effect: dict[str, Any],
        target: tuple[str, str],
        done: asyncio.Future[str],
        reason: str,
        error_type: str,
    ) -> asyncio.Future[str]:
        channel, receiver = target
        outcome = Outcome("dead", 0, error=reason, error_type=error_type)
        await self._receipt(effect, channel, receiver, outcome)
        await self._dead_letter(record, reason, error_type, f"sink:{channel}")
        await self._announce(effect, outcome)
        return self._settle(done, "dead")

    def _worker(self, receiver: Receiver, sink: Channel) -> _DestinationWorker:
        worker = self._workers.get(receiver.name)
        if worker is None:
            worker = _DestinationWorker(self.deliverer.destination(receiver, sink))
            worker.task = asyncio.create_task(self._run(worker), name=f"sink:{receiver.name}")
            self._workers[receiver.name] = worker
        return worker

    def destination(self, name: str) -> Destination | None:
        worker = self._workers.get(name)
        return worker.dest if worker else None

    # -- one destination's worker -----------------------------------------------

    async def _run(self, worker: _DestinationWorker) -> None:
        while True:
            job: _Job = await worker.queue.get()
            worker.busy = True
            status = "dead"
            try:
                status = await self._deliver(worker.dest, job)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug must not wedge the partition: keep the effect, with why
                log.exception(
                    "sink %s: delivering %s failed unexpectedly", worker.dest.name, job.effect.get("effect_id")
                )
                try:
                    await self._dead_letter(
                        job.record,
                        redact(f"sink error: {exc}"),
                        type(exc).__name__,
                        f"sink:{worker.dest.receiver.channel}",
                    )
                except Exception:  # noqa: BLE001 - the worker must live on for the next effect
                    log.exception("sink %s: could not dead-letter %s", worker.dest.name, job.effect.get("effect_id"))
            finally:
                worker.busy = False
            self._settle(job.done, status)

    async def _deliver(self, dest: Destination, job: _Job) -> str:
        effect, receiver = job.effect, dest.receiver
        effect_id = effect["effect_id"]
        if not dest.sink.ledger:
            outcome = await self.deliverer.deliver(effect, dest)
            return await self._report(job, dest, outcome)
        lease = self.settings.lease_ms

        async def claim_it() -> Claim:
            return await self._ledger(
                self.ledger.claim,
                effect_id,
                receiver.name,
                receiver.channel,
                self.owner,
                now_ms(),
                lease,
                partition=job.record.partition,
                generation=self.generation(),
            )

        claim = await claim_it()
        while claim.state is ClaimState.BUSY:  # another worker has it (a rebalance overlap, or a dead one): wait
            await asyncio.sleep(self.busy_poll_s)
            claim = await claim_it()
        if claim.state is ClaimState.DONE and claim.status == "dead" and job.record.redrive:
            reopened = await self._ledger(
                self.ledger.reopen,
                effect_id,
                receiver.name,
                self.owner,
                now_ms(),
                job.record.redrive,
                partition=job.record.partition,
                generation=self.generation(),
            )
            if reopened:  # a dead letter redriven after a fix: deliver it (once per redrive)
                log.info("sink %s: %s redriven (%s): delivering again", dest.name, effect_id, job.record.redrive)
                claim = Claim(ClaimState.NEW, "claimed", claim.attempts, claim.ambiguous, claim.claims + 1)
        if claim.state is ClaimState.DONE:
            await self._receipt(
                effect,
                receiver.channel,
                receiver.name,
                Outcome("skipped", claim.attempts, error=f"already {claim.status} (delivery ledger)"),
            )
            # Announced before, unless the process died in between: again, with the same event id.
            await self._announce(
                effect, Outcome(claim.status, claim.attempts, error=f"{claim.status} (delivery ledger)")
            )
            return "skipped"
        if claim.state is ClaimState.STALE:
            log.warning(
                "sink %s: %s was claimed by a process that did not finish (claim %d, taken over: %s)",
                dest.name,
                effect_id,
                claim.claims,
                "its owner is gone and the partition has a newer owner" if claim.why == "generation" else "lease ended",
            )

        async def on_ambiguous() -> None:
            await self._ledger(self.ledger.record_ambiguous, effect_id, receiver.name, self.owner)

        flight = Flight()
        try:
            outcome = await self.deliverer.deliver(
                effect, dest, stale=claim.state is ClaimState.STALE, on_ambiguous=on_ambiguous, flight=flight
            )
        except asyncio.CancelledError:
            if not flight.may_have_landed:  # shutting down before anything went out: no ambiguity for the next owner
                await asyncio.to_thread(self.ledger.release, effect_id, receiver.name, self.owner)
            raise
        try:
            await self._ledger(
                self.ledger.complete,
                effect_id,
                receiver.name,
                self.owner,
                status=outcome.status,
                attempts=outcome.attempts,
                http_status=outcome.http_status,
                error=outcome.error,
                now_ms=now_ms(),
            )
        except LedgerConflictError as exc:
            log.warning("sink %s: %s", dest.name, exc)  # the new owner reports it
            return "conflict"
        return await self._report(job, dest, outcome)

    async def _report(self, job: _Job, dest: Destination, outcome: Outcome) -> str:
        receiver = dest.receiver
        await self._receipt(job.effect, receiver.channel, receiver.name, outcome)
        if outcome.status != "delivered":
            await self._dead_letter(
                job.record,
                outcome.error or outcome.status,
                outcome.error_type or outcome.status,
                f"sink:{receiver.channel}",
            )
        await self._announce(job.effect, outcome)
        log.log(
            logging.DEBUG if outcome.status == "delivered" else logging.INFO,
            "sink %s: %s %s after %d attempt(s) in %.0f ms",
            dest.name,
            job.effect["effect_id"],
            outcome.status,
            outcome.attempts,
            outcome.latency_ms,
        )
        return outcome.status

    async def _ledger(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Ledger calls off the event loop; a database outage waits (and says so) rather than double-sending."""
        delay = self.ledger_retry_s
        while True:
            try:
                return await asyncio.to_thread(fn, *args, **kwargs)
            except LedgerConflictError:
                raise
            except Exception as exc:  # sqlalchemy.exc.OperationalError and friends
                if not _is_db_error(exc):
                    raise
                log.warning("delivery ledger unavailable (%s); retrying in %.0fs", type(exc).__name__, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    # -- records out ------------------------------------------------------------

    async def _receipt(self, effect: dict[str, Any], channel: str, receiver: str, outcome: Outcome) -> None:
        record = {
            "effect_id": effect["effect_id"],
            "session_key": effect["session_key"],
            "channel": channel,
            "receiver": receiver,
            "status": outcome.status,
            "attempts": outcome.attempts,
            "http_status": outcome.http_status,
            "latency_ms": float(outcome.latency_ms),
            "error": redact(outcome.error) if outcome.error else None,
            "completed_at": now_ms(),
        }
        await self.emitter.receipt(effect["effect_id"].encode(), record)
        metrics.DELIVERIES.labels(channel=channel, status=outcome.status).inc()
        if outcome.status != "skipped" and outcome.attempts:
            metrics.DELIVERY_LATENCY.labels(channel=channel).observe(outcome.latency_ms / 1000)

    async def _announce(self, effect: dict[str, Any], outcome: Outcome) -> None:
        """A live remediation settled: its outcome event goes back to the session (see agents.sinks.outcomes)."""
        if self.announce is None or effect.get("type") != "remediate" or not effect.get("remediate"):
            return
        from agents.sinks.outcomes import outcome_event, outcome_type

        etype = outcome_type(outcome.status, http_status=outcome.http_status, error_type=outcome.error_type)
        if etype is None:
            return
        event = outcome_event(effect, etype, outcome, now_ms=now_ms())
        await self.announce(event["session_key"].encode(), event)

    async def _dead_letter(self, record: OutboxRecord, reason: str, error_type: str, stage: str) -> None:
        letter = dead_letter(
            reason=redact(reason),
            error=error_type,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            value=record.value,
            failed_at=now_ms(),
            stage=stage,
        )
        await self.emitter.dead_letter(record.key, letter)
        metrics.DEAD_LETTERS.labels(topic="outbox.dlq", stage=stage).inc()
        log.warning(
            "dead-lettered %s[%d]@%d (%s): %s", record.topic, record.partition, record.offset, stage, letter["reason"]
        )

    async def close(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            await asyncio.gather(self._heartbeat, return_exceptions=True)
        tasks = [w.task for w in self._workers.values() if w.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._workers.clear()
        if self._heartbeat is not None:  # stopped: what we leave claimed may be taken over at once
            try:
                await asyncio.to_thread(self.ledger.forget, self.owner)
            except Exception as exc:  # noqa: BLE001 - then the owner times out instead
                log.warning("delivery ledger: could not forget owner %s (%s)", self.owner, type(exc).__name__)


def _is_db_error(exc: BaseException) -> bool:
    from sqlalchemy.exc import DBAPIError, OperationalError

    return isinstance(exc, (OperationalError, DBAPIError))
