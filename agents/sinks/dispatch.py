"""From outbox records to settled deliveries: per-destination queues, the ledger, receipts.

The reader hands every outbox record to :meth:`Dispatcher.submit` and goes on
reading: nothing here makes it wait for a delivery. Each receiver has its own
queues and workers, so a slow or parked destination holds back only its own: up to the
receiver's ``concurrency`` (default ``concurrency_per_destination``) *lanes* deliver to it
at once, and the effects of one
session always take the same lane, in order (a resolve never overtakes its trigger).
The ledger's claims and completions of all lanes and destinations go to the database
together (:mod:`agents.sinks.batching`: one transaction per batch, not per effect). A record
is *settled* when its receipt (and dead letter, if any) has been handed to the
producer; :class:`InOrderAcks` then releases offsets per partition strictly in
order, so the committed offset never passes an effect that is still pending.
(faust's own out-of-order acking is not used: its gap check lets a commit pass a
single unacked offset at the head of a partition.)

Remediate effects take the same path to their action's destination
(``remediate:<action>``) when this worker may call them; otherwise they settle at
once with a ``dry_run`` receipt (:mod:`agents.sinks.channels.remediate`).

Back-pressure: at most ``max_in_flight`` unsettled records in all. A destination whose
queue reaches ``backlog_per_destination`` *spills*: its further effects are written to the
ledger (:meth:`Ledger.spill_many <agents.sinks.ledger.Ledger.spill_many>`, batched) and their
records settle once that commits, so the reader goes on for the other destinations and
memory stays bounded. While a destination has anything spilled (by this worker or another),
all its new effects spill behind it, and its lanes take spilled effects back in outbox-offset order
whenever their queue is down to half the backlog (:meth:`Dispatcher._refill`): a session's
effects keep their order. It leaves the spill mode when the spill is empty. Every few seconds
(and at start) the dispatcher looks for destinations with spilled rows (a restart, a dead
worker's spill) and takes them up. A spill that cannot be written (database down) waits and
retries like every ledger call: its record stays unsettled, its offset uncommitted.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import zlib
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, TypeVar

from agents.sinks.base import Channel
from agents.sinks.batching import GroupCommit
from agents.sinks.delivery import Deliverer, Destination, Flight, Outcome
from agents.sinks.ledger import (
    Claim,
    ClaimRequest,
    ClaimState,
    Completion,
    Ledger,
    LedgerConflictError,
    Spill,
    SpilledRow,
)
from agents.sinks.redact import redact
from streams import metrics
from streams.kafka.codec import Codec, CodecError
from streams.kafka.deadletter import dead_letter
from streams.kafka.producer import now_ms
from streams.model.receivers import REMEDIATE_CHANNEL, MissingSecretError, Receiver, resolve_secrets
from streams.settings import SinkSettings

log = logging.getLogger(__name__)
notifications = logging.getLogger("opsloop.notifications")
T = TypeVar("T")
DEFERRED = "deferred"  # _deliver's answer when the completion runs on in a task of its own


@dataclass(frozen=True)
class OutboxRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    redrive: str | None = None  # set on a record `opsloop dlq redrive` re-produced (streams.kafka.redrive)

    def dumps(self) -> str:
        """The record as the spill stores it (JSON; key and value base64)."""
        b64 = base64.b64encode
        key = b64(self.key).decode() if self.key is not None else None
        return json.dumps(
            {
                "topic": self.topic,
                "partition": self.partition,
                "offset": self.offset,
                "key": key,
                "value": b64(self.value).decode(),
            }
        )

    @classmethod
    def loads(cls, text: str) -> OutboxRecord:
        d = json.loads(text)
        key = base64.b64decode(d["key"]) if d["key"] is not None else None
        return cls(d["topic"], d["partition"], d["offset"], key, base64.b64decode(d["value"]))


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
        self.abandoned = False

    def add(self, partition: Hashable, token: Any) -> _Entry:
        entry = _Entry(token)
        self._pending.setdefault(partition, deque()).append(entry)
        return entry

    def settle(self, partition: Hashable, entry: _Entry) -> None:
        entry.settled = True
        queue = self._pending.get(partition)  # none once abandoned: what settles late releases nothing
        while queue and queue[0].settled:
            self._release(queue.popleft().token)

    def reset(self) -> list[Any]:
        """Every token not released yet, settled or not, forgotten: the caller lets them go uncommitted.

        For a rebalance: what is not released is not committed, so it is read again by the
        partition's next owner (and the ledger sends each effect once). A token settled behind
        an unsettled one is among them: releasing it would let the commit pass the one before.
        Tokens added afterwards are tracked as usual; what settles of the old ones releases nothing.
        """
        tokens = [entry.token for queue in self._pending.values() for entry in queue]
        self._pending.clear()
        return tokens

    def abandon(self) -> list[Any]:
        """:meth:`reset` for a stop: from now on nothing is released (the records are the next owner's)."""
        self.abandoned = True
        return self.reset()

    def pending(self) -> int:
        return sum(len(q) for q in self._pending.values())


@dataclass
class _Job:
    record: OutboxRecord
    effect: dict[str, Any]
    done: asyncio.Future[str]
    spilled: bool = False  # taken back from the spill (its record settled when it was spilled)
    flight: Flight | None = None  # while its delivery runs (Deliverer.deliver): may a request have landed?


@dataclass
class _DestinationWorker:
    dest: Destination
    lanes: list[asyncio.Queue[_Job]] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    finishing: set[asyncio.Task[str]] = field(default_factory=set)  # sent, completing (see Dispatcher._after)
    busy: int = 0  # effects taken from the lanes and not settled yet
    # The spill (see the module docstring): while ``refill`` runs, new effects spill behind what is spilled.
    refill: asyncio.Task[None] | None = None
    spilling_now: int = 0  # spills not committed yet
    spills: int = 0  # spills started (refill leaves the spill mode only if none started during its scan)
    taken: set[str] = field(default_factory=set)  # spilled effects taken back into the lanes, not claimed yet
    current: dict[asyncio.Task[None], _Job] = field(default_factory=dict)  # a one-claim lane's job under way

    @property
    def spilling(self) -> bool:
        return self.refill is not None

    @property
    def backlog(self) -> int:
        return sum(q.qsize() for q in self.lanes) + self.busy

    def lane(self, session_key: str) -> asyncio.Queue[_Job]:
        """One session's lane: always the same, so its effects reach the destination in order."""
        return self.lanes[zlib.crc32(session_key.encode()) % len(self.lanes)]


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
        committed: Callable[[], Mapping[int, int]] = dict,
    ) -> None:
        self.receivers, self.registry = receivers, registry
        metrics.zero_spill_series(receivers)
        self.deliverer, self.ledger, self.emitter, self.codec = deliverer, ledger, emitter, codec
        self.settings, self.owner = settings, owner
        self.ledger_retry_s = ledger_retry_s
        # Where a settled live remediation's outcome event goes (events.webhook in the worker;
        # agents.sinks.outcomes); None announces nothing.
        self.announce = announce
        self.generation = generation  # the consumer group's current generation, stored with each claim
        # This worker's committed outbox offset per partition it owns (its spill takeover waits for the rest).
        self.committed = committed
        self._read: dict[int, int] = {}  # the highest outbox offset submitted, per partition
        self._unspilled: dict[int, dict[int, int]] = {}  # per partition: offsets whose spill is not committed yet
        self._heartbeat: asyncio.Task[None] | None = None
        self._workers: dict[str, _DestinationWorker] = {}
        self._capacity = asyncio.Semaphore(settings.max_in_flight)
        self._closed = False  # close() began: nothing new is queued, spilled or sent (see close)
        self._holding = False  # a rebalance (hand_back until resume): spilled effects stay in the spill
        self._recalled: dict[asyncio.Task[None], tuple[_DestinationWorker, _Job]] = {}  # lanes hand_back cancelled
        self._claims: GroupCommit[ClaimRequest, Claim] = GroupCommit(self._claim_batch)
        self._spills: GroupCommit[Spill, Claim | None] = GroupCommit(self._spill_batch)
        self._spilling: set[asyncio.Task[None]] = set()  # spills being written
        self._sweeper: asyncio.Task[None] | None = None
        self._completions: GroupCommit[Completion, bool] = GroupCommit(self._complete_batch, linger_s=0.01)
        self.busy_poll_s = 1.0
        self.refill_poll_s = 0.05
        self.claim_ahead = max(1, settings.claim_ahead)  # effects a lane of an idempotent sink claims in one go
        self.stats: dict[str, int] = {}

    async def start_heartbeat(self) -> None:
        """Beat this owner's row in the ledger now, then every ``owner_heartbeat_s`` (see agents.sinks.ledger)."""
        await self._ledger(self.ledger.beat, self.owner, now_ms())
        self._heartbeat = asyncio.create_task(self._beat_forever(), name="sink:ledger-heartbeat")
        await self.sweep()  # a spill left by a previous run: before the first record, so new effects queue behind
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="sink:spill-sweeper")

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
        if self._closed:  # left unsettled: the record stays uncommitted for the next owner
            return done
        self._read[record.partition] = max(record.offset, self._read.get(record.partition, -1))
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
        try:  # a destination that cannot take anything is refused here, not queued, held or spilled
            resolve_secrets(receiver, self.deliverer.environ)
        except MissingSecretError as exc:
            return await self._refuse(record, effect, target, done, str(exc), type(exc).__name__)
        if self._closed:  # closed while this record was being routed: left unsettled, as in submit
            return done
        worker = self._worker(receiver, sink)
        if record.redrive is None and (worker.spilling or worker.backlog >= self.settings.backlog_per_destination):
            self._spill(worker, record, effect, done)
            return done
        worker.lane(effect["session_key"]).put_nowait(_Job(record, effect, done))
        return done

    # -- the spill (see the module docstring) -------------------------------------

    def _spill(
        self, worker: _DestinationWorker, record: OutboxRecord, effect: dict[str, Any], done: asyncio.Future[str]
    ) -> None:
        """Write the effect to the ledger's spill in a task of its own; ``done`` settles when it is committed."""
        if not worker.spilling:
            self._start_refill(worker)
        worker.spilling_now += 1
        worker.spills += 1
        pending = self._unspilled.setdefault(record.partition, {})
        pending[record.offset] = pending.get(record.offset, 0) + 1
        receiver = worker.dest.receiver
        spill = Spill(
            effect["effect_id"],
            receiver.name,
            receiver.channel,
            record.partition,
            self.generation(),
            record.offset,
            record.dumps(),
        )
        task = asyncio.create_task(
            self._spill_one(worker, record, effect, spill, done), name=f"sink:{receiver.name}:spill"
        )
        self._spilling.add(task)
        task.add_done_callback(self._spilling.discard)

    async def _spill_one(
        self,
        worker: _DestinationWorker,
        record: OutboxRecord,
        effect: dict[str, Any],
        spill: Spill,
        done: asyncio.Future[str],
    ) -> None:
        dest = worker.dest
        try:
            done_before = await self._spills(spill)
        except asyncio.CancelledError:
            raise  # shutting down: the record stays unsettled (read again after the restart)
        except Exception as exc:  # a bug (a database outage waits in _ledger): keep the effect, with why
            log.exception("sink %s: spilling %s failed", dest.name, spill.effect_id)
            await self._dead_letter(
                record, redact(f"sink error: {exc}"), type(exc).__name__, f"sink:{dest.receiver.channel}"
            )
            self._settle(done, "dead")
            return
        finally:
            worker.spilling_now -= 1
            pending = self._unspilled[record.partition]
            pending[record.offset] -= 1
            if not pending[record.offset]:
                del pending[record.offset]
        if done_before is not None:  # a redelivered record whose effect was completed before
            self._settle(done, await self._skipped(effect, dest, done_before))
            return
        metrics.SPILLED.labels(receiver=dest.name).inc()
        self._settle(done, "spilled")

    def _start_refill(self, worker: _DestinationWorker) -> None:
        worker.refill = asyncio.create_task(self._refill(worker), name=f"sink:{worker.dest.name}:refill")

    async def _refill(self, worker: _DestinationWorker) -> None:
        """Take spilled effects back into the lanes as they drain, in offset order; end when the spill is empty."""
        dest, limit = worker.dest, max(1, self.settings.backlog_per_destination)
        try:
            while True:
                room = limit - worker.backlog
                if room < (limit + 1) // 2 or self._holding:
                    await asyncio.sleep(self.refill_poll_s)
                    continue
                started, quiet = worker.spills, worker.spilling_now == 0
                scan = await self._ledger(
                    self.ledger.spilled, dest.name, self.owner, now_ms(), room, frozenset(worker.taken), self._ready()
                )
                metrics.SPILL_WAITING.labels(receiver=dest.name).set(scan.waiting)
                for row in scan.rows:
                    self._take_back(worker, row)
                if scan.rows:
                    continue
                # Empty, and no spill of ours was being written meanwhile (one committed during the scan could be
                # missing from it): new effects go straight to the lanes again.
                if not scan.held and quiet and worker.spilling_now == 0 and worker.spills == started:
                    metrics.SPILL_WAITING.labels(receiver=dest.name).set(0)  # what the scan counted is in the lanes
                    return
                await asyncio.sleep(self.refill_poll_s if not scan.held else self.busy_poll_s)
        except Exception:  # a bug (a database outage waits in _ledger): the next sweep starts it again
            log.exception("sink %s: taking back spilled effects failed", dest.name)
        finally:
            worker.refill = None

    def _ready(self) -> dict[int, int]:
        """Per outbox partition, the offset below which every record was committed, or read here and its spill (if
        it spilled) committed too: a dead owner's spill below it is in its place (Ledger.spilled)."""
        ready = {p: offset + 1 for p, offset in self._read.items()}
        for p, offset in self.committed().items():
            ready[p] = max(ready.get(p, 0), offset)
        for p, pending in self._unspilled.items():
            if pending and p in ready:
                ready[p] = min(ready[p], min(pending))
        return ready

    def _take_back(self, worker: _DestinationWorker, row: SpilledRow) -> None:
        worker.taken.add(row.effect_id)  # also when unreadable below: scanned past from now on, not again and again
        try:
            record = OutboxRecord.loads(row.record)
            effect = self.codec.decode(record.value, expect="opsloop.Effect")
        except (ValueError, KeyError, CodecError) as exc:  # cannot happen for what _spill wrote; say so, skip it
            log.error("sink %s: spilled %s cannot be read back (%s)", worker.dest.name, row.effect_id, exc)
            return
        done: asyncio.Future[str] = asyncio.get_running_loop().create_future()  # its record settled when spilled
        worker.lane(effect["session_key"]).put_nowait(_Job(record, effect, done, spilled=True))

    async def sweep(self) -> None:
        """Take up the spill of every destination that has one and is not spilling here yet (a restart, a dead
        worker's spill, another worker's): its new effects queue behind it, its lanes take it back."""
        for name in await self._ledger(self.ledger.spill_receivers):
            receiver = self._receiver(name)
            sink = self.registry.get(receiver.channel) if receiver is not None else None
            if receiver is None or sink is None:
                continue  # not a receiver of this configuration: it stays until one that knows it runs
            worker = self._worker(receiver, sink)
            if not worker.spilling:
                log.info("sink %s: taking up spilled effects", name)
                self._start_refill(worker)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.owner_heartbeat_s)
            try:
                await self.sweep()
            except Exception:  # noqa: BLE001 - next time
                log.exception("sinks: looking for spilled effects failed")

    def _receiver(self, name: str) -> Receiver | None:
        """The receiver a destination name stands for (a remediation's ``remediate:<action>`` is derived)."""
        receiver = self.receivers.get(name)
        if receiver is None and name.startswith(f"{REMEDIATE_CHANNEL}:"):
            base = self.receivers.get(REMEDIATE_CHANNEL)
            if base is not None and base.channel == REMEDIATE_CHANNEL:
                return replace(base, name=name)
        return receiver

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
            lanes = receiver.concurrency or self.settings.concurrency_per_destination
            for i in range(max(1, lanes)):
                lane: asyncio.Queue[_Job] = asyncio.Queue()
                worker.lanes.append(lane)
                worker.tasks.append(asyncio.create_task(self._run(worker, lane), name=f"sink:{receiver.name}:{i}"))
            self._workers[receiver.name] = worker
        return worker

    def destination(self, name: str) -> Destination | None:
        worker = self._workers.get(name)
        return worker.dest if worker else None

    # -- one destination's worker -----------------------------------------------

    async def _run(self, worker: _DestinationWorker, lane: asyncio.Queue[_Job]) -> None:
        dest = worker.dest
        # An idempotent sink's lane claims what waits in it together (one ledger batch), then sends in order: if
        # the process dies first, a takeover of those claims re-sends with the same key, which the service
        # deduplicates. Other sinks claim one effect at a time: their takeover is the ambiguous path.
        ahead = self.claim_ahead if dest.sink.ledger and dest.sink.idempotent else 1
        me = asyncio.current_task()
        assert me is not None
        while True:
            jobs = [await lane.get()]
            while len(jobs) < ahead and not lane.empty():
                jobs.append(lane.get_nowait())
            worker.busy += len(jobs)
            claims: list[Claim | None] = [None] * len(jobs)
            started = 0
            try:
                if len(jobs) > 1:
                    claimed_at = asyncio.get_running_loop().time()
                    claims = list(await asyncio.gather(*(self._claims(self._claim_request(dest, j)) for j in jobs)))
                    claims = [replace(c, at=claimed_at) if c is not None else None for c in claims]
                for job, claim in zip(jobs, claims, strict=True):
                    started += 1
                    deferred: list[asyncio.Task[str]] | None = [] if ahead > 1 else None
                    if ahead == 1:
                        worker.current[me] = job  # a rebalance may recall it while nothing of it is sent
                    try:
                        status = await self._deliver_safely(dest, job, claim, deferred)
                    finally:  # also when a rebalance recalls it (hand_back)
                        worker.current.pop(me, None)
                        if job.spilled:
                            worker.taken.discard(job.effect["effect_id"])
                    if status == DEFERRED and deferred:
                        self._after(worker, job, deferred[0])
                        continue
                    worker.busy -= 1
                    self._settle(job.done, status)
            except asyncio.CancelledError:
                unsent = [
                    j for j, c in zip(jobs[started:], claims[started:], strict=True) if c and c.state is ClaimState.NEW
                ]
                for job in unsent:  # claimed ahead, never started: nothing can have landed
                    await asyncio.to_thread(self.ledger.release, job.effect["effect_id"], dest.name, self.owner)
                raise

    def _after(self, worker: _DestinationWorker, job: _Job, task: asyncio.Task[str]) -> None:
        """Settle ``job`` when its deferred completion is done (a failure there: dead-lettered, as in the lane)."""
        worker.finishing.add(task)

        def done(t: asyncio.Task[str]) -> None:
            worker.finishing.discard(t)
            if t.cancelled():
                return  # shutting down: the claim stays, the next owner takes it over
            worker.busy -= 1
            if t.exception() is None:
                self._settle(job.done, t.result())
                return
            log.error(
                "sink %s: completing %s failed", worker.dest.name, job.effect.get("effect_id"), exc_info=t.exception()
            )
            fallback = asyncio.ensure_future(
                self._dead_letter(
                    job.record,
                    redact(f"sink error: {t.exception()}"),
                    "SinkError",
                    f"sink:{worker.dest.receiver.channel}",
                )
            )
            fallback.add_done_callback(lambda _f: self._settle(job.done, "dead"))

        task.add_done_callback(done)

    def _claim_request(self, dest: Destination, job: _Job) -> ClaimRequest:
        receiver = dest.receiver
        return ClaimRequest(
            job.effect["effect_id"], receiver.name, receiver.channel, job.record.partition, self.generation()
        )

    async def _deliver_safely(
        self, dest: Destination, job: _Job, claim: Claim | None, defer: list[asyncio.Task[str]] | None = None
    ) -> str:
        try:
            return await self._deliver(dest, job, claim, defer)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug must not wedge the partition: keep the effect, with why
            log.exception("sink %s: delivering %s failed unexpectedly", dest.name, job.effect.get("effect_id"))
            try:
                await self._dead_letter(
                    job.record, redact(f"sink error: {exc}"), type(exc).__name__, f"sink:{dest.receiver.channel}"
                )
            except Exception:  # noqa: BLE001 - the worker must live on for the next effect
                log.exception("sink %s: could not dead-letter %s", dest.name, job.effect.get("effect_id"))
            return "dead"

    async def _deliver(
        self,
        dest: Destination,
        job: _Job,
        claimed: Claim | None = None,
        defer: list[asyncio.Task[str]] | None = None,
    ) -> str:
        """Claim (unless ``claimed`` ahead), send, complete, report; returns the settled status, or
        :data:`DEFERRED` with the completion's task appended to ``defer`` (when given)."""
        effect, receiver = job.effect, dest.receiver
        effect_id = effect["effect_id"]
        if not dest.sink.ledger:
            outcome = await self.deliverer.deliver(effect, dest)
            return await self._report(job, dest, outcome)

        async def claim_it() -> Claim:
            return await self._claims(self._claim_request(dest, job))

        claim = claimed if claimed is not None else await claim_it()
        if claimed is not None and claimed.state in (ClaimState.NEW, ClaimState.STALE):
            # Claimed ahead: if it waited long (a slow destination), make sure it is still ours before sending.
            if asyncio.get_running_loop().time() - claimed.at > self.settings.lease_ms / 2000:
                if not await self._ledger(self.ledger.renew, effect_id, receiver.name, self.owner, now_ms()):
                    log.warning("sink %s: claim of %s was taken over while it waited", dest.name, effect_id)
                    return "conflict"
        while claim.state is ClaimState.BUSY:  # another worker has it (a rebalance overlap, or a dead one): wait
            job.flight = Flight()  # nothing of ours claimed or sent: a rebalance may recall it while it sleeps
            try:
                await asyncio.sleep(self.busy_poll_s)
            finally:
                job.flight = None
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
            return await self._skipped(effect, dest, claim)
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

        flight = job.flight = Flight()
        try:
            outcome = await self.deliverer.deliver(
                effect, dest, stale=claim.state is ClaimState.STALE, on_ambiguous=on_ambiguous, flight=flight
            )
        except asyncio.CancelledError:
            if not flight.may_have_landed:  # stopping or recalled before anything went out: no ambiguity after
                await asyncio.to_thread(self.ledger.release, effect_id, receiver.name, self.owner)
            raise
        finally:
            job.flight = None
        if defer is not None:  # the lane sends its next effect while this one's completion goes to the ledger
            defer.append(asyncio.create_task(self._finish(dest, job, outcome), name=f"sink:{dest.name}:complete"))
            return DEFERRED
        return await self._finish(dest, job, outcome)

    async def _skipped(self, effect: dict[str, Any], dest: Destination, claim: Claim) -> str:
        """A redelivered effect the ledger has completed before: receipt ``skipped``, nothing sent."""
        receiver = dest.receiver
        await self._receipt(
            effect,
            receiver.channel,
            receiver.name,
            Outcome("skipped", claim.attempts, error=f"already {claim.status} (delivery ledger)"),
        )
        # Announced before, unless the process died in between: again, with the same event id.
        await self._announce(effect, Outcome(claim.status, claim.attempts, error=f"{claim.status} (delivery ledger)"))
        return "skipped"

    async def _finish(self, dest: Destination, job: _Job, outcome: Outcome) -> str:
        """Complete the ledger row, then the receipt (and dead letter, outcome event): in that order, so a
        receipt is never out before the ledger knows."""
        effect_id, receiver = job.effect["effect_id"], dest.receiver
        completed = await self._completions(
            Completion(effect_id, receiver.name, outcome.status, outcome.attempts, outcome.http_status, outcome.error)
        )
        if not completed:
            # The new owner reports it.
            log.warning(
                "sink %s: ledger row %s/%s is no longer claimed by %s", dest.name, effect_id, receiver.name, self.owner
            )
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

    async def _claim_batch(self, requests: list[ClaimRequest]) -> list[Claim]:
        return await self._ledger(self.ledger.claim_many, requests, self.owner, now_ms(), self.settings.lease_ms)

    async def _spill_batch(self, spills: list[Spill]) -> list[Claim | None]:
        return await self._ledger(self.ledger.spill_many, spills, self.owner, now_ms())

    async def _complete_batch(self, completions: list[Completion]) -> list[bool]:
        return await self._ledger(self.ledger.complete_many, completions, self.owner, now_ms())

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

    # -- a rebalance (agents.sink: the sinks' revoke hook) ------------------------

    def hand_back(self) -> int:
        """Take every effect still waiting in a lane out of it, and recall those whose delivery has sent
        nothing that may have landed; how many (from the spill not counted).

        None of them is claimed or sent, so a rebalance need not wait for them: their futures
        are cancelled (their records are the caller's to let go uncommitted: whoever owns the
        partition next reads them again), effects taken back from the spill stay in the spill,
        and until :meth:`resume` nothing more is taken back from it. A recalled delivery (one
        waiting between attempts, behind a parked breaker or a ``Retry-After``, or for a place at
        its host) gives its claim back, as at a stop; one waiting for another owner's claim has
        none to give. What may have landed goes on: :meth:`settle_taken` waits for it.
        """
        self._holding = True
        handed = 0
        for worker in self._workers.values():
            for lane in worker.lanes:
                while not lane.empty():
                    job = lane.get_nowait()
                    if job.spilled:
                        worker.taken.discard(job.effect["effect_id"])  # scanned again after the rebalance
                    else:
                        handed += 1
                    job.done.cancel()
            for task, job in list(worker.current.items()):
                if job.flight is not None and not job.flight.may_have_landed and task not in self._recalled:
                    task.cancel()  # it is waiting (this loop runs nothing else meanwhile): nothing goes out
                    self._recalled[task] = (worker, job)
                    handed += not job.spilled
        self._read.clear()  # read again from the committed offsets, by this worker or another
        return handed

    async def settle_taken(self, poll_s: float = 0.02) -> int:
        """Wait until every effect taken from a lane (sending, retrying, completing) and every spill being
        written has settled; how many there were. A rebalance waits for these: the partition's next owner
        would otherwise find them claimed by a live owner, or this one, reading the record again, claim its
        own claim a second time and send twice."""

        for task, (worker, job) in list(self._recalled.items()):  # their claims given back; their lanes anew
            await asyncio.gather(task, return_exceptions=True)
            del self._recalled[task]
            worker.busy -= 1
            job.done.cancel()
            if task in worker.tasks and not self._closed:
                i = worker.tasks.index(task)
                worker.tasks[i] = asyncio.create_task(
                    self._run(worker, worker.lanes[i]), name=f"sink:{worker.dest.name}:{i}"
                )

        def taken() -> int:
            return sum(w.busy for w in self._workers.values()) + len(self._spilling)

        count = taken()
        while taken() and not self._closed:  # a stop meanwhile: close() ends what is left
            await asyncio.sleep(poll_s)
        return count

    def resume(self) -> None:
        """The rebalance is through: spilled effects are taken back into the lanes again."""
        self._holding = False

    async def close(self) -> None:
        """Stop every lane, let what is completing finish (5 s at most), then forget this owner.

        Called by the sinks' stop hook before faust stops the app (a stop's ``finally`` runs too
        late: the loop closes first), and again from the agent's ``finally``; the second call
        finds nothing left. Once it has begun nothing new is queued, spilled or sent, so when
        ``forget`` runs this owner sends nothing more and its claims may be taken at once.
        """
        self._closed = True
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            await asyncio.gather(self._heartbeat, return_exceptions=True)
        # Spills not committed leave their records unsettled (read again after the restart); refills stop.
        background = [*self._spilling, *(w.refill for w in self._workers.values() if w.refill is not None)]
        if self._sweeper is not None:
            background.append(self._sweeper)
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        lanes = [task for w in self._workers.values() for task in w.tasks]
        for task in lanes:
            task.cancel()
        await asyncio.gather(*lanes, return_exceptions=True)
        # Sent and completing: let them reach the ledger and the producer (bounded: a database outage waits).
        finishing = [task for w in self._workers.values() for task in w.finishing]
        if finishing:
            _, late = await asyncio.wait(finishing, timeout=5.0)
            for pending in late:
                pending.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        await self._claims.close()
        await self._spills.close()
        await self._completions.close()
        self._workers.clear()
        if self._heartbeat is not None:  # stopped: what we leave claimed may be taken over at once
            try:
                await asyncio.to_thread(self.ledger.forget, self.owner)
            except Exception as exc:  # noqa: BLE001 - then the owner times out instead
                log.warning("delivery ledger: could not forget owner %s (%s)", self.owner, type(exc).__name__)


def _is_db_error(exc: BaseException) -> bool:
    from sqlalchemy.exc import DBAPIError, OperationalError

    return isinstance(exc, (OperationalError, DBAPIError))
