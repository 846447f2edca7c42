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
from streams.db import make_engine

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

    @rt.app.agent(rt.topic("outbox"), name="sinks")
    async def sinks_agent(stream: faust.StreamT[Any]) -> None:
        deliverer = await Deliverer(RetryPolicy.from_settings(sink_settings), environ=environ).start()
        engine = make_engine(rt.settings.ledger_url())
        ledger = await asyncio.to_thread(Ledger(engine).create)
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
        )
        manual = cast("faust.Stream[Any]", stream).noack()  # faust hands agents a Stream; StreamT lacks noack
        loop = asyncio.get_running_loop()
        acks = InOrderAcks(lambda event: loop.create_task(manual.ack(event)))
        log.info("sinks: %d receivers (%s), ledger owner %s", len(receivers), ", ".join(sorted(receivers)), owner)
        try:
            async for event in manual.events():
                message = event.message
                entry = acks.add(message.tp, event)
                done = await dispatcher.submit(
                    OutboxRecord(message.topic, message.partition, message.offset, message.key, message.value)
                )

                def settle(_f: asyncio.Future[str], tp: Any = message.tp, entry: _Entry = entry) -> None:
                    acks.settle(tp, entry)

                done.add_done_callback(settle)
        finally:
            await dispatcher.close()
            await deliverer.close()
            engine.dispose()

    return sinks_agent
