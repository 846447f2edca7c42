"""The sink agent: the faust shell that reads ``outbox`` in every worker.

Why an agent in the worker rather than a separate ``opsloop sink`` process: the
worker already owns the consumer group, the producer (flushed before every
offset commit, so receipts and dead letters are durable before the offsets that
caused them), start-up and shutdown; scaling sinks is scaling workers. A separate
app would buy isolation of the decide loop from HTTP work, but the sink work here
is I/O wait on the same event loop, not CPU.

The stream runs without faust's automatic acks: each record is handed to the
dispatcher (which never makes the reader wait for a delivery), and its event is
acked only when it has settled *and* every earlier record of its partition has
(:class:`~agents.sinks.dispatch.InOrderAcks`). Offsets therefore never pass an
effect still being delivered, while a hung destination holds back only its own
queue.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Mapping
from typing import Any, cast

import faust

from agents.runtime import Runtime
from agents.sinks import channels
from agents.sinks.base import Channel
from agents.sinks.delivery import Deliverer, RetryPolicy
from agents.sinks.dispatch import Dispatcher, InOrderAcks, OutboxRecord, _Entry
from agents.sinks.ledger import Ledger
from streams.db import make_engine, while_database_down
from streams.errors import InvalidInputError
from streams.kafka.compat import committed_offsets, group_generation, release_unacked
from streams.kafka.redrive import HEADER as REDRIVE_HEADER
from streams.settings import Settings

log = logging.getLogger(__name__)


class FaustEmitter:
    """Receipts to ``deliveries`` (keyed by effect id), dead letters to ``outbox.dlq``, a live
    remediation's outcome to ``events.webhook`` (keyed by its session; agents/sinks/outcomes.py)."""

    def __init__(self, rt: Runtime) -> None:
        self.codec = rt.codec
        self.deliveries = rt.topic("deliveries")
        self.dlq = rt.topic("outbox.dlq")
        self.webhooks = rt.topic("events.webhook")

    async def outcome(self, key: bytes, event: dict[str, Any]) -> None:
        await self.webhooks.send(key=key, value=self.codec.encode("opsloop.Event", event))

    async def receipt(self, key: bytes, record: dict[str, Any]) -> None:
        await self.deliveries.send(key=key, value=self.codec.encode("opsloop.Delivery", record))

    async def dead_letter(self, key: bytes | None, record: dict[str, Any]) -> None:
        await self.dlq.send(key=key, value=self.codec.encode("opsloop.DeadLetter", record))


class LedgerConfigError(InvalidInputError):
    """The delivery ledger's database cannot keep two workers (or a worker that lost its disk) from both sending."""


def check_ledger(settings: Settings) -> str | None:
    """Refuse a ledger that is not shared unless this worker is declared the only one; a warning to show, or None.

    The ledger is what stops a redelivered outbox record (its offset not yet committed,
    e.g. held back by a slow receiver) from being sent again. A SQLite ledger is a file
    on one host: a second worker on another host, or this worker after its data dir is
    lost, has an empty ledger and re-sends every uncommitted effect. So a SQLite ledger
    needs ``OPSLOOP_SINK_SINGLE_NODE=true`` (one worker, or several sharing the file on
    one host), and even then the start says what losing the file costs.
    """
    url = settings.ledger_url()
    if not url.startswith("sqlite"):
        return None
    if not settings.sinks.single_node:
        raise LedgerConfigError(
            f"the delivery ledger would be the SQLite file {_sqlite_path(url)}, local to this host: two workers, or this one "
            "after losing that file, would send the same effects again. Set DATABASE_URL (or "
            "OPSLOOP_SINK_DATABASE_URL) to the shared PostgreSQL database, or OPSLOOP_SINK_SINGLE_NODE=true if this "
            "is the only host running workers of this app"
        )
    return single_node_note(url)


def _sqlite_path(url: str) -> str:
    return url.split("///", 1)[-1] or url


def single_node_note(url: str) -> str:
    return (
        f"single node: the delivery ledger is the SQLite file {_sqlite_path(url)}; if it is lost, a restart re-sends every "
        "outbox effect whose offset was not committed yet. Never run a worker of this app on another host"
    )


def redrive_mark(headers: Any) -> str | None:
    """The ``opsloop-redrive`` header of a record `opsloop dlq redrive` re-produced (faust gives a list or a dict)."""
    items = headers.items() if isinstance(headers, Mapping) else (headers or ())
    for name, value in items:
        if name == REDRIVE_HEADER and value:
            return bytes(value).decode(errors="replace")
    return None


def owner_id() -> str:
    """Who holds a ledger claim: unique per process start, readable in the table."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def register(
    rt: Runtime,
    *,
    registry: Mapping[str, Channel] | None = None,
    environ: Mapping[str, str] | None = None,
) -> faust.types.AgentT[Any]:
    sink_settings = rt.settings.sinks
    receivers = rt.receivers
    registry = dict(registry or channels.registry())
    missing = sorted({r.channel for r in receivers.values()} - set(registry))
    if missing:
        raise LookupError(f"no sink registered for channel(s) {', '.join(missing)}")
    emitter = FaustEmitter(rt)
    outbox = rt.topic("outbox")

    def committed() -> dict[int, int]:
        """The committed outbox offsets of the partitions this worker owns (the spill's takeover waits for the rest)."""
        name = outbox.get_topic_name()
        return {
            tp.partition: offset
            for tp, offset in committed_offsets(rt.app.consumer).items()
            if tp.topic == name and offset is not None
        }

    @rt.app.agent(outbox, name="sinks")
    async def sinks_agent(stream: faust.StreamT[Any]) -> None:
        deliverer = await Deliverer(RetryPolicy.from_settings(sink_settings), environ=environ).start()
        engine = make_engine(rt.settings.ledger_url())
        # a database still starting (or down) is waited for, not a crash and a traceback every few seconds;
        # the outbox's offsets stay uncommitted meanwhile, so nothing is lost
        ledger = await while_database_down(
            Ledger(engine, owner_timeout_ms=int(sink_settings.owner_timeout_s * 1000)).create,
            what="the delivery ledger's database",
        )
        assert ledger is not None  # no stop event: it returns only with the ledger
        owner = owner_id()
        dispatcher = Dispatcher(
            receivers=receivers,
            registry=registry,
            deliverer=deliverer,
            ledger=ledger,
            emitter=emitter,
            codec=rt.codec,
            settings=sink_settings,
            owner=owner,
            announce=emitter.outcome,
            generation=lambda: group_generation(rt.app),
            committed=committed,
        )
        await dispatcher.start_heartbeat()
        manual = cast("faust.Stream[Any]", stream).noack()  # faust hands agents a Stream; StreamT lacks noack
        loop = asyncio.get_running_loop()
        acks = InOrderAcks(lambda event: loop.create_task(manual.ack(event)))

        def let_go(events: list[Any]) -> int:
            """Release ``events`` unacknowledged: uncommitted, they are read again by the partition's next owner."""
            for event in events:
                release_unacked(rt.app.consumer, event.message)
            return len(events)

        async def let_the_stop_go() -> None:
            """Stop holding records for deliveries still under way: a stop must not wait out a retry schedule.

            faust's stop waits for every record taken and not acknowledged, and a delivery to a
            receiver that is down holds its record for the whole retry schedule. Released here,
            such records stay uncommitted: the next owner reads them again and the ledger
            delivers each effect once. Records that arrive after this are released unread.
            """
            abandoned = let_go(acks.abandon())
            log.info("sinks: stopping; %d outbox records left uncommitted for the next owner", abandoned)
            await dispatcher.close()  # here, not only in the finally: faust closes the loop before that ends

        # held from taking a record to its submit's return, so the revoke hook sees no record half-way
        intake = asyncio.Lock()

        async def let_the_rebalance_go() -> None:
            """Hand back the effects still waiting in the lanes instead of delivering them first.

            faust's revoke waits for every record taken and not acknowledged, and the whole
            group waits with it: behind a slow receiver that was its whole backlog (up to
            ``OPSLOOP_SINK_BACKLOG_PER_DESTINATION`` effects). Nothing waiting in a lane is
            claimed or sent, so those go back uncommitted, read again by whoever owns the
            partition next; what is being delivered is waited for, as before.
            """
            handed = dispatcher.hand_back()  # frees the places a submit waiting for max_in_flight needs
            async with intake:
                handed += dispatcher.hand_back()  # and what that submit queued
                held = let_go(acks.reset())
                finished = await dispatcher.settle_taken()
                dispatcher.resume()
            log.info(
                "sinks: rebalance; %d waiting effects handed back, %d being delivered finished first, "
                "%d outbox records left uncommitted",
                handed,
                finished,
                held,
            )

        rt.before_stop.append(let_the_stop_go)
        rt.before_revoke.append(let_the_rebalance_go)
        log.info("sinks: %d receivers (%s), ledger owner %s", len(receivers), ", ".join(sorted(receivers)), owner)
        if rt.settings.ledger_url().startswith("sqlite"):  # run_worker refused it unless single node
            log.warning("sinks: %s", single_node_note(rt.settings.ledger_url()))
        try:
            async for event in manual.events():
                message = event.message
                if acks.abandoned:  # stopping (let_the_stop_go): read again by the next owner
                    release_unacked(rt.app.consumer, message)
                    continue
                async with intake:
                    entry = acks.add(message.tp, event)
                    done = await dispatcher.submit(
                        OutboxRecord(
                            message.topic,
                            message.partition,
                            message.offset,
                            message.key,
                            message.value,
                            redrive=redrive_mark(message.headers),
                        )
                    )

                def settle(f: asyncio.Future[str], tp: Any = message.tp, entry: _Entry = entry) -> None:
                    if not f.cancelled():  # cancelled: handed back on a rebalance, its record let go uncommitted
                        acks.settle(tp, entry)

                done.add_done_callback(settle)
        finally:
            rt.before_revoke.remove(let_the_rebalance_go)
            rt.before_stop.remove(let_the_stop_go)
            try:
                await dispatcher.close()
            finally:  # even when the stop cancels the close: the HTTP session and the pool are let go
                await deliverer.close()
                engine.dispose()

    return sinks_agent
