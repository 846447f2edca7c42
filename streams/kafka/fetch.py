"""Handing fetched records to faust's conductor without four asyncio tasks per record.

faust's fetch loop (faust-streaming 0.15, ``Consumer._drain_messages``) hands every
record to the conductor as ``await self.wait_first(callback(message),
self.suspend_flow.wait())``, so that a record whose delivery blocks (a full channel
queue, the producer buffer over its limit, flow control suspended) can be abandoned when
a rebalance suspends the flow. mode's ``wait_first`` makes a task of each of the two
coroutines and of the service's stopped and crashed events, waits for the first, and
cancels the rest: ~20-35 µs per record on this machine, for a delivery that almost
always completes without waiting at all. The worker reads ~3 records per event (the
event, the outbox record the sinks read, the decision the digest reads), so that was
the largest single item of faust's per-record path.

:func:`deliver_without_tasks` wraps the consumer's ``wait_first`` for that call only:
the delivery coroutine is stepped once in place; if it completes (the common case)
nothing else is created; if it has to wait, the rest of it runs exactly as before, as a
task raced by ``wait_first`` against the suspended flow. Every other ``wait_first`` call
goes through unchanged.
"""

from __future__ import annotations

import asyncio
import inspect
import weakref
from collections.abc import Coroutine
from typing import Any

from mode.services import WaitResults

_WRAPPED: weakref.WeakSet[Any] = weakref.WeakSet()


def deliver_without_tasks(app: Any) -> None:
    """Install the wrapper on ``app``'s consumer (once; before the worker starts)."""
    consumer = app.consumer
    if consumer in _WRAPPED:
        return
    _WRAPPED.add(consumer)
    original = consumer.wait_first

    async def wait_first(*coros: Any, timeout: Any = None) -> Any:
        if len(coros) != 2 or timeout is not None or not inspect.iscoroutine(coros[0]):
            return await original(*coros, timeout=timeout)
        delivery, other = coros
        try:
            step = delivery.send(None)
        except StopIteration as done:  # delivered without waiting
            _close(other)
            return WaitResults([delivery], [done.value], False)
        except BaseException:
            _close(other)
            raise
        return await original(_resume(delivery, step), other)

    consumer.wait_first = wait_first


def _close(awaitable: Any) -> None:
    if inspect.iscoroutine(awaitable):
        awaitable.close()  # never started: closing it spares the "never awaited" warning


async def _resume(coro: Coroutine[Any, Any, Any], step: Any) -> Any:
    """Run the rest of ``coro``, which has taken its first step and is waiting on ``step``, as a task would."""
    while True:
        try:
            if step is None:  # a bare yield (asyncio.sleep(0))
                await asyncio.sleep(0)
            else:
                await asyncio.wait((step,))
        except asyncio.CancelledError as exc:
            if step is not None:
                step.cancel()  # as a cancelled task cancels the future it waits on
            try:
                step = coro.throw(exc)
            except StopIteration as done:
                return done.value
            continue
        try:
            step = coro.send(None)  # as a task resumes it: the awaited future gives its result or raises inside
        except StopIteration as done:
            return done.value
