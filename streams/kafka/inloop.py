"""faust's aiokafka consumer run on the worker's own event loop instead of in a thread of its own.

Why: faust-streaming runs its aiokafka consumer (the fetch, the group coordinator and its
heartbeats, commits) in a ``ConsumerThread`` with an event loop of its own, and every call
to it crosses threads: a fetch is queued to that loop with ``call_soon_threadsafe``, run
there, and its result set back on the main loop the same way. With the main thread busy
deciding a batch, the consumer thread waits for the GIL (``sys.getswitchinterval()``, 5 ms)
at each crossing. Measured at 50 % of the drain rate (deploy/bench/BENCHMARKS.md, "The
round's end on main"): the newest event of a batch was already 27 ms old at the median when
decide started on it, where a plain aiokafka consumer fed the same way saw its events
7.8 ms after they were produced.

The thread is there so that heartbeats go on while a stream blocks the loop. The worker's
loop does not block for long: decide folds a batch in slices of ``DECIDE_SLICE`` events with
a turn of the loop between them (each step under ~30 ms at 50 % load) and awaits its
produce, so heartbeats (every ``broker_heartbeat_interval``) go out well within the session
timeout.

:class:`InLoopConsumerThread` is faust's own ``AIOKafkaConsumerThread`` (same consumer,
rebalance listener, commit and fetch code) with the thread taken out: it starts and stops
as an ordinary mode service on the loop it is given, and ``call_thread`` awaits the call in
place. Rebalance callbacks still go through the consumer's method queue, on the same loop.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

from faust.transport.drivers import aiokafka as aiokafka_driver
from mode import Service


class InLoopConsumerThread(aiokafka_driver.AIOKafkaConsumerThread):
    """faust's aiokafka consumer "thread", run as a plain service on the app's loop."""

    wait_for_shutdown = False  # no thread to signal that it has shut down

    def __init__(self, consumer: Any, *, loop: asyncio.AbstractEventLoop, **kwargs: Any) -> None:
        super().__init__(consumer, loop=loop, thread_loop=loop, **kwargs)

    async def start(self) -> None:
        self._thread_started.set()  # what ServiceThread.maybe_start checks
        await self._default_start()

    async def stop(self) -> None:
        await Service.stop(self)  # not ServiceThread.stop: there is no WorkerThread to stop

    # ServiceThread leaves these to the thread's own shutdown; here they are an ordinary service's.
    def _stopped_set(self) -> None:
        self._stopped.set()

    async def _stop_children(self) -> None:
        await self._default_stop_children()

    async def _stop_futures(self) -> None:
        await self._default_stop_futures()

    async def _stop_exit_stacks(self) -> None:
        await self._default_stop_exit_stacks()

    async def on_stop(self) -> None:
        await self.on_thread_stop()  # closes the aiokafka consumer (what the thread's shutdown did)

    async def call_thread(self, fun: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        result = fun(*args, **kwargs)  # faust passes coroutine functions and plain ones (as mode's queue allows)
        return await result if inspect.isawaitable(result) else result


class InLoopConsumer(aiokafka_driver.Consumer):
    """faust's aiokafka consumer whose "thread" runs on the app's loop."""

    def _new_consumer_thread(self) -> InLoopConsumerThread:
        return InLoopConsumerThread(self, loop=self.loop, beacon=self.beacon)


def consume_in_loop(app: Any) -> None:
    """Make ``app``'s consumer an :class:`InLoopConsumer` (before anything has created the consumer)."""
    if app._consumer is not None:
        if isinstance(app._consumer, InLoopConsumer):
            return
        raise RuntimeError("consume_in_loop: the app's consumer already exists")
    app.transport.Consumer = InLoopConsumer
